#!/usr/bin/env python3
"""A test SSH signing service: API key -> JWT -> certificate signed by the real `ssh-keygen -s`.

    python3 tests/sshsign/server.py --state-dir DIR [--principal NAME]

Serves https on 127.0.0.1 (a free port) with a test CA made by openssl at start, and writes
DIR/ready.json ({"port", "pid", "ca_pem", "ssh_ca_pub", "api_key_file"}) once it listens.
The API key is random, in DIR/api_key (0600).

  POST /token        header X-API-Key -> {"access_token": JWT (HS256, exp = now + jwt_ttl)}
  POST /sign         Authorization: Bearer JWT, {"public_key": "ssh-ed25519 AAAA..."}
                     -> {"sshKey": {"publicKey": "ssh-ed25519-cert-v01@openssh.com AAAA..."}}
                     signed with `ssh-keygen -s CA -I ID -n PRINCIPAL -V -5m:+VALIDITYs -z N`
  GET  /stats        {"token": N, "sign": N}: requests received (faulty answers included)
  POST /admin        {"mode": M, "validity": S, "jwt_ttl": S, "delay": S, "reset": true}

Fault modes (M), each for the endpoint it names:
  ok, token_401, token_403, token_500, token_html, token_garbage, token_slow,
  sign_401, sign_500, sign_html, sign_garbage, sign_slow,
  sign_other_key, sign_expired, sign_wrong_principal
(`*_slow` waits `delay` seconds, default 30, before answering.)
This is a test fixture: the /admin endpoint is unauthenticated and it listens on loopback only.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"mode": "ok", "validity": 60, "jwt_ttl": 60, "delay": 30.0, "token": 0, "sign": 0,
         "serial": 0}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(secret, sub, ttl):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    payload = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + ttl,
                                 "jti": secrets.token_hex(8)}).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def check_jwt(secret, token):
    try:
        header, payload, sig = token.split(".")
        want = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(b64url(want), sig):
            return False
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims["exp"] > time.time()
    except Exception:  # noqa: BLE001 - any malformed token is simply invalid
        return False


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def make_tls(d):
    ca_key, ca_pem = os.path.join(d, "tls-ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = (os.path.join(d, n) for n in ("tls.key", "tls.csr", "tls.crt"))
    ext = os.path.join(d, "tls.ext")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", ca_key, "-out", ca_pem, "-days", "2", "-subj", "/CN=qlam sshsign test CA"])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext])
    return ca_pem, crt, key


class Handler(BaseHTTPRequestHandler):
    server_version = "qlam-sshsign-test/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # no tokens in the log: only method, path, status
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def fault(self, mode):
        """Answers a fault for `mode` if it is one; returns True if it did."""
        kind = mode.split("_", 1)[1] if "_" in mode else mode
        if kind == "401":
            self.send(401, {"error": "unauthorized", "detail": "echo of what was sent"})
        elif kind == "403":
            self.send(403, {"error": "forbidden"})
        elif kind == "500":
            self.send(500, {"error": "internal"})
        elif kind == "html":
            self.send(200, b"<html><body>Please log in</body></html>", "text/html")
        elif kind == "garbage":
            self.send(200, b"\x00\xffnot json{{", "application/json")
        elif kind == "slow":
            time.sleep(STATE["delay"])
            self.send(503, {"error": "slow"})
        else:
            return False
        return True

    def do_GET(self):
        if self.path == "/stats":
            with LOCK:
                self.send(200, {"token": STATE["token"], "sign": STATE["sign"], "mode": STATE["mode"]})
        else:
            self.send(404, {"error": "not found"})

    def do_POST(self):
        body = self.body()
        if self.path == "/admin":
            req = json.loads(body or b"{}")
            with LOCK:
                if req.get("reset"):
                    STATE["token"] = STATE["sign"] = 0
                for k in ("mode", "validity", "jwt_ttl", "delay"):
                    if k in req:
                        STATE[k] = req[k]
            self.send(200, {"ok": True})
        elif self.path == "/token":
            with LOCK:
                STATE["token"] += 1
                mode, ttl = STATE["mode"], STATE["jwt_ttl"]
            if mode.startswith("token_") and self.fault(mode):
                return
            if not hmac.compare_digest(self.headers.get("X-API-Key", ""), self.server.api_key):
                self.send(401, {"error": "invalid api key"})
                return
            self.send(200, {"access_token": make_jwt(self.server.jwt_secret, "svc", ttl),
                            "token_type": "Bearer", "expires_in": ttl})
        elif self.path == "/sign":
            with LOCK:
                STATE["sign"] += 1
                STATE["serial"] += 1
                mode, validity, serial = STATE["mode"], STATE["validity"], STATE["serial"]
            if mode.startswith("sign_") and self.fault(mode):
                return
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not check_jwt(self.server.jwt_secret, auth[7:]):
                self.send(401, {"error": "invalid token"})
                return
            try:
                public_key = json.loads(body)["public_key"]
                assert isinstance(public_key, str) and "\n" not in public_key
            except Exception:  # noqa: BLE001
                self.send(400, {"error": "public_key missing"})
                return
            self.send(200, {"sshKey": {"publicKey": self.sign(public_key, mode, validity, serial)}})
        else:
            self.send(404, {"error": "not found"})

    def sign(self, public_key, mode, validity, serial):
        with tempfile.TemporaryDirectory(dir=self.server.state_dir) as d:
            pub = os.path.join(d, "key.pub")
            if mode == "sign_other_key":
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "key")])
            else:
                with open(pub, "w") as f:
                    f.write(public_key + "\n")
            principal = "someone-else" if mode == "sign_wrong_principal" else self.server.principal
            window = "-10m:-5m" if mode == "sign_expired" else f"-5m:+{int(validity)}s"
            run(["ssh-keygen", "-q", "-s", self.server.ca_key, "-I", f"qlam-test-{serial}",
                 "-n", principal, "-V", window, "-z", str(serial), pub])
            with open(os.path.join(d, "key-cert.pub")) as f:
                return f.read().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--principal", default="qassh")
    args = ap.parse_args()
    d = os.path.abspath(args.state_dir)
    os.makedirs(d, exist_ok=True)
    ca_pem, crt, key = make_tls(d)
    ca_key = os.path.join(d, "ssh_ca")
    if not os.path.exists(ca_key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qlam test user CA", "-f", ca_key])
    api_key_file = os.path.join(d, "api_key")
    api_key = "qsa_" + secrets.token_urlsafe(24)
    fd = os.open(api_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (api_key + "\n").encode())
    os.close(fd)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.api_key, srv.jwt_secret = api_key, secrets.token_bytes(32)
    srv.ca_key, srv.principal, srv.state_dir = ca_key, args.principal, d
    ready = {"port": srv.server_address[1], "pid": os.getpid(), "ca_pem": ca_pem,
             "ssh_ca_pub": ca_key + ".pub", "api_key_file": api_key_file}
    tmp = os.path.join(d, "ready.json.tmp")
    with open(tmp, "w") as f:
        json.dump(ready, f)
    os.rename(tmp, os.path.join(d, "ready.json"))
    srv.serve_forever()


if __name__ == "__main__":
    main()
