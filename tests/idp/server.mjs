// Test identity provider for qlam-auth: a real OAuth 2.0 / OpenID Connect server
// (oidc-provider, OpenID-certified) on https://127.0.0.1:PORT, for tests only.
//
//   node server.mjs --state-dir DIR [--port 0]
//
// Writes into DIR: ca.pem/ca.key and server.pem/server.key (made once with openssl),
// server.log (all of this process's output), server.pid (at start), and ready.json
// {"issuer","port","ca","pid"} once it listens. State (grants, tokens) lives in memory and
// signing keys are new at each start. See README.md for clients, users, knobs and the
// /_test/ control API.

import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { ensureCerts } from './lib/certs.mjs';
import { MapAdapter, grantIdsForAccount } from './lib/store.mjs';

// ---------------------------------------------------------------------------------------------
// Command line, logging
// ---------------------------------------------------------------------------------------------

const { values: argv } = parseArgs({
  options: {
    'state-dir': { type: 'string' },
    port: { type: 'string', default: '0' },
  },
});
if (!argv['state-dir']) {
  process.stderr.write('usage: node server.mjs --state-dir DIR [--port 0]\n');
  process.exit(2);
}
const STATE_DIR = path.resolve(argv['state-dir']);
fs.mkdirSync(STATE_DIR, { recursive: true });

// All output goes to DIR/server.log, never to an inherited pipe: oidc-provider prints notices
// to stdout, and a pipe nobody reads would eventually block or kill the server (EPIPE).
const logFd = fs.openSync(path.join(STATE_DIR, 'server.log'), 'a');
const toLog = (chunk, encoding, cb) => {
  fs.writeSync(logFd, typeof chunk === 'string' ? chunk : Buffer.from(chunk));
  if (typeof encoding === 'function') encoding();
  else if (typeof cb === 'function') cb();
  return true;
};
process.stdout.write = toLog;
process.stderr.write = toLog;
const log = (...args) => console.log(new Date().toISOString(), ...args);
process.on('uncaughtException', (err) => {
  log('uncaught exception:', err?.stack || err);
  process.exit(1);
});
process.on('unhandledRejection', (err) => {
  log('unhandled rejection:', err?.stack || err);
});

fs.writeFileSync(path.join(STATE_DIR, 'server.pid'), `${process.pid}\n`);

// Imported only now, so that its import-time notices (e.g. "Unsupported runtime" on Node 20,
// where it works) land in server.log too.
const { default: Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------------------------------------
// Knobs (environment, seconds)
// ---------------------------------------------------------------------------------------------

function envInt(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    log(`invalid ${name}=${raw}: must be a positive integer`);
    process.exit(2);
  }
  return n;
}

const ACCESS_TTL = envInt('IDP_ACCESS_TTL', 3600);
const REFRESH_TTL = envInt('IDP_REFRESH_TTL', 14 * 24 * 3600);
const CC_TTL = envInt('IDP_CC_TTL', 3600);
const DEVICE_TTL = envInt('IDP_DEVICE_TTL', 600);
const DEVICE_INTERVAL = envInt('IDP_DEVICE_INTERVAL', 1);
// A poll that arrives this many milliseconds early is still accepted (timer jitter).
const SLOW_DOWN_SLACK_MS = Number(process.env.IDP_SLOW_DOWN_SLACK_MS ?? 100);
// "jwt" (RFC 9068, default) or "opaque" (introspectable, revocable) access tokens for the API.
const AT_FORMAT = process.env.IDP_ACCESS_TOKEN_FORMAT || 'jwt';
// IDP_ID_TOKEN=no: token answers carry no id_token (an IdP used as plain OAuth, e.g. with opaque
// access tokens): clients must learn who logged in from userinfo.
const ID_TOKEN = (process.env.IDP_ID_TOKEN || 'yes') !== 'no';
if (!['jwt', 'opaque'].includes(AT_FORMAT)) {
  log(`invalid IDP_ACCESS_TOKEN_FORMAT=${AT_FORMAT}: jwt or opaque`);
  process.exit(2);
}

// Token exchange (RFC 8693) for the user's client: IDP_TOKEN_EXCHANGE=off leaves the grant out
// (an IdP without it: `unsupported_grant_type`, and it is not in grant_types_supported).
const TOKEN_EXCHANGE = (process.env.IDP_TOKEN_EXCHANGE || 'on') !== 'off';
// Longest lifetime of an exchanged token (seconds); a shorter `requested_lifetime` is honoured.
const EXCHANGE_TTL = envInt('IDP_EXCHANGE_TTL', 3600);

// The API (resource server) that access tokens are for, and the default resource.
const API = 'https://slurm.example/api';
// A second resource server, reachable only through token exchange (a job's storage token).
const STORAGE = 'https://storage.example/data';
// The audiences an exchanged token may have, and the scopes each allows (IdP-side policy).
const EXCHANGE_AUDIENCES = {
  [API]: ['openid', 'email', 'profile'],
  [STORAGE]: ['storage.read', 'storage.write'],
};
// Scopes an API access token may carry, as Auth0 puts them in `scope`. `organization:<x>`
// scopes (QLAM Core adds organization:<tenant>) are accepted dynamically, see apiScopes().
const API_BASE_SCOPES = ['openid', 'email', 'profile', 'offline_access'];

// Users: IDP_USERS="alice:alice-pw,bob:bob-pw"; default alice, bob, carol, dave / <name>-pw.
const USERS = new Map(
  (process.env.IDP_USERS || 'alice:alice-pw,bob:bob-pw,carol:carol-pw,dave:dave-pw')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((pair) => {
      const i = pair.indexOf(':');
      return i < 0 ? [pair, `${pair}-pw`] : [pair.slice(0, i), pair.slice(i + 1)];
    }),
);

// ---------------------------------------------------------------------------------------------
// Keys and TLS
// ---------------------------------------------------------------------------------------------

const tls = ensureCerts(STATE_DIR);

// Signing keys, new at each start: RS256 for ID tokens, ES256 for JWT access tokens.
function signingKey(type, options, alg) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = crypto.randomBytes(8).toString('hex');
  return { jwk: { ...jwk, kid, alg, use: 'sig' }, publicKey, kid };
}
const rsaKey = signingKey('rsa', { modulusLength: 2048 }, 'RS256');
const ecKey = signingKey('ec', { namedCurve: 'P-256' }, 'ES256');

// Client keys of `qlam-m2m-jwt` (private_key_jwt, RFC 7523), new at each start like the signing
// keys: the private halves go to DIR/m2m-jwt-es256.pem and DIR/m2m-jwt-rs256.pem (0600) for the
// tests; the client is registered with the public halves, kid = RFC 7638 thumbprint.
function clientKey(type, options, alg, file) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, options);
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  fs.writeFileSync(path.join(STATE_DIR, file), pem, { mode: 0o600 });
  const jwk = publicKey.export({ format: 'jwk' });
  const required = type === 'ec'
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  const kid = crypto.createHash('sha256').update(JSON.stringify(required)).digest('base64url');
  return { ...jwk, kid, alg, use: 'sig' };
}
const m2mJwtKeys = [
  clientKey('ec', { namedCurve: 'P-256' }, 'ES256', 'm2m-jwt-es256.pem'),
  clientKey('rsa', { modulusLength: 2048 }, 'RS256', 'm2m-jwt-rs256.pem'),
];

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

function accountClaims(sub) {
  return {
    sub,
    email: `${sub}@example.org`,
    email_verified: true,
    name: sub.charAt(0).toUpperCase() + sub.slice(1),
    preferred_username: sub,
  };
}

async function findAccount(_ctx, sub) {
  if (!USERS.has(sub)) return undefined;
  return { accountId: sub, claims: async () => accountClaims(sub) };
}

// ---------------------------------------------------------------------------------------------
// Pages (device flow pages are oidc-provider hooks; login is served by the interaction routes)
// ---------------------------------------------------------------------------------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>
`;

async function userCodeInputSource(ctx, form, _out, err) {
  let msg = '';
  const known = {
    NotFoundError: 'The code you entered is unknown.',
    ExpiredError: 'The code you entered has expired.',
    // also after a login that was started for this code and not finished
    AlreadyUsedError: 'The code you entered was already used.',
    NoCodeError: 'No code was entered.',
  };
  if (err && known[err.name]) {
    msg = `<p id="error" class="error">${known[err.name]}</p>`;
  } else if (err && err.name === 'AbortedError') {
    msg = '<p id="device-aborted" class="error">The sign-in request was aborted.</p>';
  } else if (err) {
    msg = `<p id="error" class="error">There was an error processing your request: ${esc(err.name || err.message)}</p>`;
  }
  ctx.body = page('Device sign-in', `${msg}
<p>Enter the code displayed on your device.</p>
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
  ctx.body = page('Confirm device', `<p>Client <strong>${esc(client.clientId)}</strong> asks for access.
The code on your device should be <code id="user-code">${esc(userCode)}</code>.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
}

async function successSource(ctx) {
  ctx.body = page('Sign-in success', '<p id="device-success">Your device is signed in. You can close this page.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<p id="error" class="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
}

// ---------------------------------------------------------------------------------------------
// Resource server
// ---------------------------------------------------------------------------------------------

// Scopes the API accepts in this request: the base ones plus every `organization:*` scope
// that the request (or the artefact being exchanged) carries, so any tenant works.
function apiScopes(ctx) {
  const seen = new Set(API_BASE_SCOPES);
  const sources = [
    ctx?.oidc?.params?.scope,
    ctx?.oidc?.entities?.RefreshToken?.scope,
    ctx?.oidc?.entities?.DeviceCode?.scope,
    ctx?.oidc?.entities?.AuthorizationCode?.scope,
  ];
  for (const s of sources) {
    if (typeof s !== 'string') continue;
    for (const scope of s.split(' ')) {
      if (scope.startsWith('organization:')) seen.add(scope);
    }
  }
  return [...seen].join(' ');
}

async function getResourceServerInfo(ctx, resourceIndicator) {
  if (resourceIndicator !== API) throw new errors.InvalidTarget();
  return {
    scope: apiScopes(ctx),
    audience: API,
    accessTokenFormat: AT_FORMAT,
    ...(AT_FORMAT === 'jwt' ? { jwt: { sign: { alg: 'ES256' } } } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------------------------

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const CLI_REDIRECTS = [
  'http://127.0.0.1/callback', // any port: loopback redirect of a native client, RFC 8252
  'http://[::1]/callback',
  'http://localhost/callback',
  'http://localhost/auth/callback', // QLAM Core's own redirect (http://localhost:18080/auth/callback)
];

const configuration = {
  adapter: MapAdapter,
  clients: [
    {
      client_id: 'qlam-cli',
      application_type: 'native', // loopback redirect URIs match on any port only for native clients
      token_endpoint_auth_method: 'none',
      grant_types: [
        'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', 'authorization_code',
        ...(TOKEN_EXCHANGE ? [TOKEN_EXCHANGE_GRANT] : []),
      ],
      response_types: ['code'],
      redirect_uris: CLI_REDIRECTS,
    },
    {
      client_id: 'qlam-m2m',
      client_secret: 'm2m-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'qlam-m2m-post',
      client_secret: 'm2m-post-secret',
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // private_key_jwt (RFC 7523): keys in DIR/m2m-jwt-es256.pem and DIR/m2m-jwt-rs256.pem.
      client_id: 'qlam-m2m-jwt',
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: m2mJwtKeys },
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // A resource server's credentials: may introspect (and revoke) any token.
      client_id: 'qlam-introspect',
      client_secret: 'introspect-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  responseTypes: ['code'],
  conformIdTokenClaims: false, // put email/name into the ID token too, as Auth0 does
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  jwks: { keys: [rsaKey.jwk, ecKey.jwk] },
  findAccount,
  features: {
    devInteractions: { enabled: false },
    deviceFlow: {
      enabled: true,
      userCodeInputSource,
      userCodeConfirmSource,
      successSource,
    },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Requests without resource/audience get the API: device-flow and client-credentials
      // tokens are then JWTs for https://slurm.example/api, like Auth0 with a default audience.
      defaultResource: async (_ctx, _client, oneOf) => (Array.isArray(oneOf) ? oneOf[0] : oneOf) || API,
      // Token requests with `openid` keep the granted resource instead of minting a
      // userinfo-only opaque token.
      useGrantedResource: async () => true,
      getResourceServerInfo,
    },
  },
  // Every refresh returns a new refresh token; replaying a used one is `invalid_grant` and
  // revokes the whole grant (reuse detection), so the newest refresh token dies too.
  rotateRefreshToken: true,
  // A refresh token for every client allowed the refresh grant (not only with offline_access).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Refresh tokens do not die with the browser session of the approval.
  expiresWithSession: async () => false,
  pkce: { required: () => true }, // authorization code needs PKCE (S256 is the only method)
  renderError,
  ttl: {
    AccessToken: () => ACCESS_TTL,
    AuthorizationCode: 60,
    ClientCredentials: () => CC_TTL,
    DeviceCode: () => DEVICE_TTL,
    Grant: 365 * 24 * 3600,
    IdToken: () => ACCESS_TTL,
    Interaction: 3600,
    RefreshToken: () => REFRESH_TTL,
    Session: 14 * 24 * 3600,
  },
};

// ---------------------------------------------------------------------------------------------
// Test instrumentation state (counters, faults, device polling)
// ---------------------------------------------------------------------------------------------

function freshStats() {
  return {
    since: new Date().toISOString(),
    token_requests: {}, // grant type (short name) -> POSTs to the token endpoint
    token_requests_total: 0,
    successes: {}, // grant type -> 200 answers
    errors: {}, // OAuth error code -> count (token endpoint)
    errors_by_grant: {}, // grant type -> { error code -> count }
    faults_injected: {}, // fault mode -> count
    device_authorizations: 0, // POSTs to the device authorization endpoint
    device_authorization_errors: {},
    introspections: 0,
    revocations: 0,
    userinfo: 0,
    discovery: 0,
  };
}
let stats = freshStats();
const bump = (obj, key) => { obj[key] = (obj[key] || 0) + 1; };

// Pending fault: { mode, remaining, retry_after, status, endpoint }.
let fault = null;

// POST /_test/exchange {"enabled": false} makes the token endpoint answer token-exchange
// requests exactly as an IdP without the grant does (400 unsupported_grant_type), without a
// restart; {"enabled": true} restores it. IDP_TOKEN_EXCHANGE=off leaves the grant out entirely.
let exchangeEnabled = true;

// device_code -> { interval (s), last (ms epoch of the last poll), done, expires }.
const devicePolls = new Map();

function shortGrant(gt) {
  if (!gt) return 'none';
  if (gt === 'urn:ietf:params:oauth:grant-type:device_code') return 'device_code';
  return gt.replace(/^urn:ietf:params:oauth:grant-type:/, '');
}

// ---------------------------------------------------------------------------------------------
// Small HTTP helpers for the middlewares
// ---------------------------------------------------------------------------------------------

async function readRaw(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Reads a urlencoded body for our own routes.
async function readForm(ctx) {
  return new URLSearchParams(await readRaw(ctx.req));
}

async function readJson(ctx) {
  const raw = await readRaw(ctx.req);
  if (!raw.trim()) return {};
  return JSON.parse(raw);
}

// For a provider route: read the urlencoded body, let `edit` change it, and hand the result
// to oidc-provider as an already-parsed body (it then uses req.body instead of the stream).
async function preparseForm(ctx, edit) {
  if (ctx.method !== 'POST' || !ctx.is('application/x-www-form-urlencoded')) return null;
  const form = new URLSearchParams(await readRaw(ctx.req));
  if (edit) edit(form);
  ctx.req.body = form.toString();
  return form;
}

// Auth0 speaks `audience=`, oidc-provider RFC 8707 `resource=`: map one to the other.
function audienceToResource(params) {
  if (params.has('audience')) {
    if (!params.has('resource')) params.set('resource', params.get('audience'));
    params.delete('audience');
  }
}

const isLoopback = (ip) => ip === '127.0.0.1' || ip === '::1' || ip === '::ffff:127.0.0.1';

// ---------------------------------------------------------------------------------------------
// Middlewares in front of oidc-provider
// ---------------------------------------------------------------------------------------------

// TEST INSTRUMENTATION, loopback test server only: GET /_test/stats, POST /_test/reset,
// POST /_test/fault, POST /_test/revoke. No production IdP has these.
function testControlApi(provider) {
  return async (ctx, next) => {
    if (!ctx.path.startsWith('/_test/')) return next();
    if (!isLoopback(ctx.ip)) {
      ctx.status = 403;
      return undefined;
    }
    ctx.set('cache-control', 'no-store');
    const route = `${ctx.method} ${ctx.path}`;
    try {
      switch (route) {
        case 'GET /_test/stats':
          ctx.body = { ...stats, pending_fault: fault };
          return undefined;
        case 'POST /_test/reset':
          // Zeroes all counters and drops a pending fault.
          stats = freshStats();
          fault = null;
          ctx.body = { ok: true };
          return undefined;
        case 'POST /_test/fault': {
          const body = await readJson(ctx);
          const modes = ['html', 'status500', 'hang', 'garbage', 'status429'];
          const endpoints = Object.keys(FAULT_PATHS);
          if (!modes.includes(body.mode)) throw new Error(`mode must be one of ${modes.join(', ')}`);
          const endpoint = body.endpoint ?? 'token';
          if (!endpoints.includes(endpoint)) throw new Error(`endpoint must be one of ${endpoints.join(', ')}`);
          const count = body.count ?? 1;
          if (!Number.isInteger(count) || count < 0) throw new Error('count must be an integer >= 0');
          fault = count === 0 ? null : {
            mode: body.mode,
            remaining: count,
            retry_after: body.retry_after ?? 1,
            status: body.status,
            endpoint,
          };
          log('test: fault set', JSON.stringify(fault));
          ctx.body = { ok: true, pending_fault: fault };
          return undefined;
        }
        case 'POST /_test/exchange': {
          const body = await readJson(ctx);
          if (typeof body.enabled !== 'boolean') throw new Error('enabled (boolean) required');
          exchangeEnabled = body.enabled;
          log(`test: token exchange ${exchangeEnabled ? 'enabled' : 'disabled'}`);
          ctx.body = { ok: true, enabled: exchangeEnabled };
          return undefined;
        }
        case 'POST /_test/revoke': {
          const body = await readJson(ctx);
          if (typeof body.sub !== 'string' || !body.sub) throw new Error('sub (string) required');
          const ids = grantIdsForAccount(body.sub);
          // Revoke everything issued under each grant, then the grant itself: refresh tokens
          // of that user become invalid_grant. JWT access tokens stay valid until exp.
          for (const id of ids) {
            await provider.RefreshToken.revokeByGrantId(id);
            await provider.Grant.adapter.destroy(id);
          }
          log(`test: revoked ${ids.length} grant(s) of ${body.sub}`);
          ctx.body = { ok: true, sub: body.sub, revoked_grants: ids.length };
          return undefined;
        }
        default:
          ctx.status = 404;
          ctx.body = { error: 'not_found', routes: ['GET /_test/stats', 'POST /_test/reset', 'POST /_test/fault', 'POST /_test/revoke', 'POST /_test/exchange', 'GET /_test/resource'] };
          return undefined;
      }
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: 'bad_request', error_description: err.message };
      return undefined;
    }
  };
}

// Endpoints a fault can be aimed at (default: token).
const FAULT_PATHS = {
  token: (ctx) => ctx.method === 'POST' && ctx.path === '/token',
  device_authorization: (ctx) => ctx.method === 'POST' && ctx.path === '/device/auth',
  revocation: (ctx) => ctx.method === 'POST' && ctx.path === '/token/revocation',
  introspection: (ctx) => ctx.method === 'POST' && ctx.path === '/token/introspection',
  userinfo: (ctx) => ctx.path === '/me',
  discovery: (ctx) => ctx.path === '/.well-known/openid-configuration',
  jwks: (ctx) => ctx.path === '/jwks',
};

// FAULT INJECTION on the real server: answers the next N requests of an endpoint with a
// failure a healthy server can't be made to show (HTML error page, 500, 429 with Retry-After,
// unparseable JSON, or no answer at all). The request never reaches oidc-provider, so nothing
// is consumed or rotated. Returns true when it answered.
async function injectFault(ctx) {
  if (!fault || !FAULT_PATHS[fault.endpoint](ctx)) return false;
  const f = fault;
  const { mode } = f;
  f.remaining -= 1;
  if (f.remaining <= 0) fault = null;
  bump(stats.faults_injected, mode);
  ctx.set('cache-control', 'no-store');
  switch (mode) {
    case 'html':
      ctx.status = f.status ?? 502;
      ctx.type = 'html';
      ctx.body = '<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>injected fault</p></body></html>';
      break;
    case 'status500':
      ctx.status = 500;
      ctx.body = { error: 'server_error', error_description: 'injected fault' };
      break;
    case 'status429':
      ctx.status = 429;
      ctx.set('retry-after', String(f.retry_after));
      ctx.body = { error: 'too_many_requests', error_description: 'injected fault' };
      break;
    case 'garbage':
      ctx.status = 200;
      ctx.type = 'application/json';
      ctx.body = '{"access_token": "eyJhbGciOi", "token_ty'; // truncated JSON
      break;
    case 'hang':
    default: {
      // Accept and never answer: the socket stays open until the client goes away
      // (or 10 minutes pass, then it is closed without a response).
      ctx.respond = false;
      const { socket } = ctx.req;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 600_000);
        socket.once('close', () => { clearTimeout(timer); resolve(); });
      });
      socket.destroy();
      break;
    }
  }
  return true;
}

// Token, device authorization and other OAuth endpoints: count, inject faults, map audience,
// add `interval` to device authorization answers, and answer `slow_down` (RFC 8628 3.5) when
// one device code is polled faster than its interval (each slow_down adds 5 s to it).
function oauthFront() {
  return async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/token') {
      const form = await preparseForm(ctx, audienceToResource);
      const grant = shortGrant(form?.get('grant_type'));
      stats.token_requests_total += 1;
      bump(stats.token_requests, grant);
      if (await injectFault(ctx)) return;
      if (grant === 'token-exchange' && (!TOKEN_EXCHANGE || !exchangeEnabled)) {
        ctx.status = 400;
        ctx.set('cache-control', 'no-store');
        ctx.body = { error: 'unsupported_grant_type', error_description: 'unsupported grant_type requested' };
        bump(stats.errors, 'unsupported_grant_type');
        bump(stats.errors_by_grant[grant] ||= {}, 'unsupported_grant_type');
        return;
      }

      // slow_down for device-code polls that come too fast.
      const deviceCode = grant === 'device_code' ? form?.get('device_code') : undefined;
      const poll = deviceCode ? devicePolls.get(deviceCode) : undefined;
      if (poll && !poll.done) {
        const now = Date.now();
        const early = poll.last && now - poll.last < poll.interval * 1000 - SLOW_DOWN_SLACK_MS;
        poll.last = now;
        if (early) {
          poll.interval += 5;
          ctx.status = 400;
          ctx.set('cache-control', 'no-store');
          ctx.body = {
            error: 'slow_down',
            error_description: `polling too fast; the interval for this code is now ${poll.interval} s`,
          };
          bump(stats.errors, 'slow_down');
          bump(stats.errors_by_grant[grant] ||= {}, 'slow_down');
          return;
        }
      }

      await next();

      if (ctx.status === 200 && !ID_TOKEN && ctx.body && typeof ctx.body === 'object') {
        delete ctx.body.id_token;
      }
      if (ctx.status === 200) {
        bump(stats.successes, grant);
      } else {
        const error = (ctx.body && typeof ctx.body === 'object' && ctx.body.error) || `http_${ctx.status}`;
        bump(stats.errors, error);
        bump(stats.errors_by_grant[grant] ||= {}, error);
      }
      // A device code stops being rate-limited once it reached a final answer: a second
      // redemption must reach oidc-provider (which then revokes the grant).
      if (poll && (ctx.status === 200 || !['authorization_pending', 'slow_down'].includes(ctx.body?.error))) {
        poll.done = true;
      }
      return;
    }

    if (ctx.method === 'POST' && ctx.path === '/device/auth') {
      await preparseForm(ctx, audienceToResource);
      stats.device_authorizations += 1;
      if (await injectFault(ctx)) return;
      await next();
      if (ctx.status === 200 && ctx.body?.device_code) {
        // oidc-provider leaves `interval` out (clients then assume 5 s): state ours.
        ctx.body.interval = DEVICE_INTERVAL;
        const now = Date.now();
        for (const [code, p] of devicePolls) if (p.expires < now) devicePolls.delete(code);
        devicePolls.set(ctx.body.device_code, {
          interval: DEVICE_INTERVAL, last: 0, done: false, expires: now + (DEVICE_TTL + 60) * 1000,
        });
      } else {
        bump(stats.device_authorization_errors, ctx.body?.error || `http_${ctx.status}`);
      }
      return;
    }

    // The authorization endpoint takes `audience` too (query or form). oidc-provider also
    // drops `offline_access` there unless prompt=consent (OIDC Core 11); Auth0 keeps it, so
    // ask for consent (granted automatically) when offline_access comes without a prompt.
    if (ctx.path === '/auth' && (ctx.method === 'GET' || ctx.method === 'POST')) {
      const auth = (params) => {
        audienceToResource(params);
        if (!params.has('prompt') && (params.get('scope') || '').split(' ').includes('offline_access')) {
          params.set('prompt', 'consent');
        }
      };
      if (ctx.method === 'GET') {
        const q = new URLSearchParams(ctx.querystring);
        auth(q);
        ctx.querystring = q.toString();
      } else {
        await preparseForm(ctx, auth);
      }
    }

    if (ctx.method === 'POST' && ctx.path === '/token/introspection') stats.introspections += 1;
    if (ctx.method === 'POST' && ctx.path === '/token/revocation') stats.revocations += 1;
    if (ctx.path === '/me') stats.userinfo += 1;
    if (ctx.path === '/.well-known/openid-configuration') stats.discovery += 1;
    if (await injectFault(ctx)) return;
    await next();
  };
}

// Userinfo for JWT access tokens of the API. oidc-provider only answers userinfo for its own
// opaque tokens without audience; Auth0 also answers for API tokens that carry `openid`.
// Verifies the ES256 signature, issuer, audience and expiry, then returns the user's claims
// (email with scope email, name with scope profile).
// Verifies one of our ES256 JWT access tokens for the API: signature, issuer, audience, expiry.
// Returns its claims, or a string saying why not.
function verifyApiJwt(token, issuer) {
  const m = /^([\w-]+)\.([\w-]+)\.([\w-]+)$/.exec(token || '');
  if (!m) return 'malformed token';
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(m[1], 'base64url'));
    claims = JSON.parse(Buffer.from(m[2], 'base64url'));
  } catch {
    return 'malformed token';
  }
  if (header.alg !== 'ES256' || header.kid !== ecKey.kid) return 'unknown signing key';
  const ok = crypto.verify(
    'sha256',
    Buffer.from(`${m[1]}.${m[2]}`),
    { key: ecKey.publicKey, dsaEncoding: 'ieee-p1363' },
    Buffer.from(m[3], 'base64url'),
  );
  if (!ok) return 'bad signature';
  const aud = [].concat(claims.aud);
  if (claims.iss !== issuer || !aud.includes(API)) return 'wrong issuer or audience';
  if (typeof claims.exp !== 'number' || claims.exp <= Math.floor(Date.now() / 1000)) return 'token expired';
  return claims;
}

// Userinfo for JWT access tokens of the API. oidc-provider only answers userinfo for its own
// opaque tokens without audience; Auth0 also answers for API tokens that carry `openid`.
// Verifies the ES256 signature, issuer, audience and expiry, then returns the user's claims
// (email with scope email, name with scope profile).
// An opaque API token that carries `openid` is answered too (IDP_ACCESS_TOKEN_FORMAT=opaque).
function userinfoForApiJwt(issuer, provider) {
  const answer = (ctx, sub, scopes) => {
    const all = accountClaims(sub);
    ctx.set('cache-control', 'no-store');
    ctx.body = {
      sub: all.sub,
      ...(scopes.has('email') ? { email: all.email, email_verified: all.email_verified } : {}),
      ...(scopes.has('profile') ? { name: all.name, preferred_username: all.preferred_username } : {}),
    };
  };
  return async (ctx, next) => {
    if (ctx.path !== '/me' || !['GET', 'POST'].includes(ctx.method)) return next();
    const m = /^Bearer\s+([\w-]+\.[\w-]+\.[\w-]+)$/i.exec(ctx.get('authorization'));
    if (!m) {
      // An opaque API token (IDP_ACCESS_TOKEN_FORMAT=opaque) that carries `openid`: answered as
      // Auth0 does; oidc-provider itself answers only for tokens without a resource.
      const opaque = /^Bearer\s+([\w-]+)$/i.exec(ctx.get('authorization'));
      const at = opaque && AT_FORMAT === 'opaque' ? await provider.AccessToken.find(opaque[1]) : undefined;
      const scopes = new Set(String(at?.scope || '').split(' '));
      if (!at || at.isExpired || !scopes.has('openid') || !USERS.has(at.accountId)) return next();
      answer(ctx, at.accountId, scopes);
      return undefined;
    }
    const fail = (desc) => {
      ctx.status = 401;
      ctx.set('www-authenticate', `Bearer error="invalid_token", error_description="${desc}"`);
      ctx.body = { error: 'invalid_token', error_description: desc };
    };
    const claims = verifyApiJwt(m[1], issuer);
    if (typeof claims === 'string') return fail(claims);
    const scopes = new Set(String(claims.scope || '').split(' '));
    if (!scopes.has('openid') || !USERS.has(claims.sub)) return fail('token not valid for userinfo');
    answer(ctx, claims.sub, scopes);
    return undefined;
  };
}

// The user behind an access token presented as a subject token or to a resource: one of our
// JWTs for the API, or an opaque access token this server issued (exchanged ones included).
// Returns { sub, scope, aud: [..], exchanged } or a string saying why not.
async function accessTokenInfo(provider, token, issuer) {
  if (typeof token !== 'string' || !token) return 'no token';
  if (token.includes('.')) {
    const claims = verifyApiJwt(token, issuer);
    if (typeof claims === 'string') return claims;
    return { sub: claims.sub, scope: String(claims.scope || ''), aud: [].concat(claims.aud), exchanged: false };
  }
  const at = await provider.AccessToken.find(token);
  if (!at?.isValid) return 'unknown, expired or revoked token';
  return {
    sub: at.accountId,
    scope: at.scope || '',
    aud: [].concat(at.aud || []),
    exchanged: at.gty === 'token_exchange',
  };
}

// RFC 8693 token exchange for the user's client: trades the user's access token (the subject)
// for an opaque access token (revocable, introspectable) for one allowed audience, with scopes
// that audience allows, living at most EXCHANGE_TTL and at most `requested_lifetime` seconds
// (a qlam-auth extension parameter; RFC 8693 has none). Not bound to the user's grant, so
// revoking it leaves the user's login alone.
function tokenExchangeHandler(issuer) {
  return async (ctx) => {
    const { params, client, provider } = ctx.oidc;
    const fail = (error, description) => {
      ctx.status = 400;
      ctx.set('cache-control', 'no-store');
      ctx.body = { error, error_description: description };
    };
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      return fail('invalid_request', `subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      return fail('invalid_request', `requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    if (params.actor_token) return fail('invalid_request', 'actor tokens are not supported');
    const subject = await accessTokenInfo(provider, params.subject_token, issuer);
    if (typeof subject === 'string') return fail('invalid_grant', `subject_token: ${subject}`);
    if (subject.exchanged) return fail('invalid_grant', 'an exchanged token cannot be exchanged again');
    const audience = params.resource || params.audience || API;
    const allowed = EXCHANGE_AUDIENCES[audience];
    if (Array.isArray(audience) || !allowed) return fail('invalid_target', 'audience not allowed for token exchange');
    const requested = params.scope ? params.scope.split(' ').filter(Boolean) : allowed;
    const refused = requested.filter((s) => !allowed.includes(s));
    if (refused.length) return fail('invalid_scope', `scope not allowed for this audience: ${refused.join(' ')}`);
    let ttl = EXCHANGE_TTL;
    if (params.requested_lifetime !== undefined) {
      const want = Number(params.requested_lifetime);
      if (!Number.isInteger(want) || want <= 0) return fail('invalid_request', 'requested_lifetime must be a positive integer');
      ttl = Math.min(ttl, want);
    }
    const token = new provider.AccessToken({
      accountId: subject.sub,
      client,
      scope: requested.join(' '),
      aud: audience,
      gty: 'token_exchange',
      expiresIn: ttl,
    });
    const value = await token.save();
    log(`token exchange: sub=${subject.sub} client=${client.clientId} aud=${audience} scope="${token.scope}" ttl=${ttl}`);
    ctx.set('cache-control', 'no-store');
    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      scope: token.scope,
    };
    return undefined;
  };
}

// TEST RESOURCE SERVER, loopback test server only: GET /_test/resource?audience=A with
// `Authorization: Bearer T` answers 200 {sub, scope} when T is valid and for audience A, 401
// otherwise: what an API that checks the audience of the tokens it is given does.
function testResource(provider, issuer) {
  return async (ctx, next) => {
    if (ctx.path !== '/_test/resource' || ctx.method !== 'GET') return next();
    ctx.set('cache-control', 'no-store');
    const audience = ctx.query.audience || API;
    const m = /^Bearer\s+(\S+)$/i.exec(ctx.get('authorization'));
    const info = m ? await accessTokenInfo(provider, m[1], issuer) : 'no bearer token';
    if (typeof info === 'string' || !info.aud.includes(audience)) {
      ctx.status = 401;
      ctx.body = { error: 'invalid_token', error_description: typeof info === 'string' ? info : 'token not for this audience' };
      return undefined;
    }
    ctx.body = { sub: info.sub, scope: info.scope, aud: info.aud };
    return undefined;
  };
}

// Interaction pages: a login form that checks the password, and automatic consent.
// GET  /interaction/:uid        login prompt -> form; consent prompt -> grant all, redirect
// POST /interaction/:uid/login  username, password, uid, xsrf
// POST /interaction/:uid/abort  uid, xsrf -> access_denied to the client
function interactions(provider) {
  const xsrfTokens = new Map(); // interaction uid -> xsrf token (forgotten after an hour)

  const loginForm = (uid, xsrf, error) => page('Sign in', `${error ? `<p id="login-error" class="error">${esc(error)}</p>\n` : ''}<form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<input type="hidden" name="uid" value="${esc(uid)}"/>
<input type="hidden" name="xsrf" value="${esc(xsrf)}"/>
<label>Username <input type="text" name="username" required autofocus/></label>
<label>Password <input type="password" name="password" required/></label>
<button type="submit">Sign in</button>
</form>
<form id="abort-form" method="post" action="/interaction/${esc(uid)}/abort">
<input type="hidden" name="uid" value="${esc(uid)}"/>
<input type="hidden" name="xsrf" value="${esc(xsrf)}"/>
<button type="submit">Cancel</button>
</form>`);

  const xsrfFor = (uid) => {
    let entry = xsrfTokens.get(uid);
    if (!entry) {
      entry = { token: crypto.randomBytes(16).toString('base64url'), at: Date.now() };
      xsrfTokens.set(uid, entry);
      for (const [k, v] of xsrfTokens) if (Date.now() - v.at > 3600_000) xsrfTokens.delete(k);
    }
    return entry.token;
  };

  async function finish(ctx, result) {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
  }

  async function autoConsent(ctx, details) {
    const { prompt: { details: missing }, params, session, grantId } = details;
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const id = await grant.save();
    await finish(ctx, { consent: { grantId: id } });
  }

  return async (ctx, next) => {
    const m = /^\/interaction\/([\w-]+)(\/login|\/abort)?$/.exec(ctx.path);
    if (!m) return next();
    const [, uid, action] = m;
    ctx.set('cache-control', 'no-store');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== uid) throw new errors.InvalidRequest('interaction mismatch');

      if (ctx.method === 'GET' && !action) {
        if (details.prompt.name === 'login') {
          ctx.type = 'html';
          ctx.body = loginForm(uid, xsrfFor(uid));
          return undefined;
        }
        if (details.prompt.name === 'consent') {
          await autoConsent(ctx, details);
          return undefined;
        }
        throw new errors.InvalidRequest(`unsupported prompt ${details.prompt.name}`);
      }

      if (ctx.method === 'POST' && action) {
        const form = await readForm(ctx);
        if (form.get('uid') !== uid || !xsrfTokens.has(uid) || form.get('xsrf') !== xsrfTokens.get(uid).token) {
          ctx.status = 403;
          ctx.type = 'html';
          ctx.body = page('Error', '<p id="error" class="error">invalid_request: xsrf check failed</p>');
          return undefined;
        }
        if (action === '/abort') {
          xsrfTokens.delete(uid);
          await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
          return undefined;
        }
        if (details.prompt.name !== 'login') throw new errors.InvalidRequest('no login expected');
        const username = form.get('username') || '';
        const password = form.get('password') || '';
        if (!USERS.has(username) || USERS.get(username) !== password) {
          log(`login failed for "${username}"`);
          ctx.status = 200;
          ctx.type = 'html';
          ctx.body = loginForm(uid, xsrfFor(uid), 'Invalid username or password.');
          return undefined;
        }
        xsrfTokens.delete(uid);
        log(`login ok for ${username}`);
        await finish(ctx, { login: { accountId: username } });
        return undefined;
      }
      ctx.status = 405;
      return undefined;
    } catch (err) {
      ctx.status = err.statusCode || err.status || 400;
      ctx.type = 'html';
      ctx.body = page('Error', `<p id="error" class="error">${esc(err.error || err.name)}: ${esc(err.error_description || err.message)}</p>`);
      return undefined;
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

const server = https.createServer({
  key: fs.readFileSync(tls.key),
  cert: fs.readFileSync(tls.cert),
});

server.listen(Number(argv.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration);

  provider.on('server_error', (_ctx, err) => log('server_error:', err?.stack || err));
  provider.on('grant.error', (_ctx, err) => {
    if (!['authorization_pending', 'slow_down'].includes(err?.error)) log('grant.error:', err?.error, '-', err?.error_detail || err?.error_description);
  });
  provider.on('grant.revoked', (_ctx, grantId) => log('grant.revoked', grantId));

  if (TOKEN_EXCHANGE) {
    provider.registerGrantType(TOKEN_EXCHANGE_GRANT, tokenExchangeHandler(issuer), [
      'subject_token', 'subject_token_type', 'requested_token_type', 'resource', 'audience',
      'scope', 'requested_lifetime', 'actor_token', 'actor_token_type',
    ]);
  }

  // Order matters: each use() goes in front of oidc-provider's own routes.
  provider.use(testResource(provider, issuer));
  provider.use(testControlApi(provider));
  provider.use(oauthFront());
  provider.use(userinfoForApiJwt(issuer, provider));
  provider.use(interactions(provider));

  server.on('request', provider.callback());

  const ready = { issuer, port, ca: tls.ca, pid: process.pid };
  const tmp = path.join(STATE_DIR, `ready.json.${process.pid}.tmp`);
  fs.writeFileSync(tmp, `${JSON.stringify(ready)}\n`);
  fs.renameSync(tmp, path.join(STATE_DIR, 'ready.json'));
  log(`listening: ${issuer} (pid ${process.pid}, access token format ${AT_FORMAT}, token exchange ${TOKEN_EXCHANGE ? 'on' : 'off'})`);
});

server.on('error', (err) => {
  log('server error:', err?.stack || err);
  process.exit(1);
});

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
