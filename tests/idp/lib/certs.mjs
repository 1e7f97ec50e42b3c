// Test PKI made with the openssl CLI: a CA (ca.pem, ca.key) and a server certificate for
// 127.0.0.1 and localhost signed by it (server.pem, server.key). Existing files are reused,
// so clients that trusted DIR/ca.pem keep trusting a restarted server.
//
// Both certificates carry the extensions strict verifiers want (rustls/webpki, Python's
// VERIFY_X509_STRICT): basicConstraints, keyUsage, SKI/AKI, and for the leaf a SAN and
// extendedKeyUsage serverAuth.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function ensureCerts(dir) {
  const ca = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca.key');
  const cert = path.join(dir, 'server.pem');
  const key = path.join(dir, 'server.key');

  if (!fs.existsSync(ca) || !fs.existsSync(caKey)) {
    openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'ca.key.tmp', '-out', 'ca.pem.tmp', '-days', '3650', '-sha256',
      '-subj', '/CN=qlam-auth test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', 'subjectKeyIdentifier=hash',
    ], dir);
    fs.chmodSync(path.join(dir, 'ca.key.tmp'), 0o600);
    fs.renameSync(path.join(dir, 'ca.key.tmp'), caKey);
    fs.renameSync(path.join(dir, 'ca.pem.tmp'), ca);
    // A new CA invalidates any older leaf.
    fs.rmSync(cert, { force: true });
  }

  if (!fs.existsSync(cert) || !fs.existsSync(key)) {
    fs.writeFileSync(path.join(dir, 'server.ext'), [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid,issuer',
      '',
    ].join('\n'));
    openssl([
      'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'server.key.tmp', '-out', 'server.csr', '-subj', '/CN=127.0.0.1',
    ], dir);
    openssl([
      'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial',
      `0x${Date.now().toString(16)}`, '-days', '825', '-sha256', '-extfile', 'server.ext',
      '-out', 'server.pem.tmp',
    ], dir);
    fs.chmodSync(path.join(dir, 'server.key.tmp'), 0o600);
    fs.renameSync(path.join(dir, 'server.key.tmp'), key);
    fs.renameSync(path.join(dir, 'server.pem.tmp'), cert);
    fs.rmSync(path.join(dir, 'server.csr'), { force: true });
    fs.rmSync(path.join(dir, 'server.ext'), { force: true });
  }

  return { ca, cert, key };
}
