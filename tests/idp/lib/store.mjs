// In-memory storage adapter for oidc-provider.
//
// oidc-provider ships a memory adapter, but it sits on an LRU of 1000 entries: a long test
// (many refreshes, many client-credentials tokens) would silently evict grants and turn valid
// refresh tokens into `invalid_grant`. This one is a plain Map whose entries leave only when
// they expire (swept once a minute) or are destroyed. It also lets the test control API find
// every grant of a user.

const store = new Map(); // "Model:id" -> { payload, expiresAt (ms epoch or Infinity) }
const grantMembers = new Map(); // grantId -> Set of "Model:id" keys issued under that grant
const userCodes = new Map(); // userCode -> DeviceCode id
const sessionUids = new Map(); // Session uid -> Session id

// Models whose entries carry a grantId and die with their grant.
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    removeKey(key);
    return undefined;
  }
  return entry;
}

function removeKey(key) {
  const entry = store.get(key);
  store.delete(key);
  if (!entry) return;
  const { payload } = entry;
  if (payload.grantId) grantMembers.get(payload.grantId)?.delete(key);
  if (payload.userCode && userCodes.get(payload.userCode) === key.slice(key.indexOf(':') + 1)) {
    userCodes.delete(payload.userCode);
  }
  if (payload.uid && key.startsWith('Session:') && sessionUids.get(payload.uid) === key.slice(8)) {
    sessionUids.delete(payload.uid);
  }
}

// Drop expired entries once a minute (the timer does not keep the process alive).
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) removeKey(key);
  }
}, 60_000).unref();

export class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    // Keep entries a little past their expiry: the provider itself decides whether an
    // expired artefact is "expired" (with its clock tolerance) or "not found".
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + (expiresIn + 60) * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
  }

  async find(id) {
    return live(this.key(id))?.payload;
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    removeKey(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const members = grantMembers.get(grantId);
    if (!members) return;
    for (const key of [...members]) removeKey(key);
    grantMembers.delete(grantId);
  }
}

// Test instrumentation: ids of all live grants of one account.
export function grantIdsForAccount(accountId) {
  const ids = [];
  for (const [key, entry] of store) {
    if (key.startsWith('Grant:') && entry.payload.accountId === accountId && entry.expiresAt > Date.now()) {
      ids.push(key.slice('Grant:'.length));
    }
  }
  return ids;
}
