// The benchmark's peer: node-oidc-provider (npm "oidc-provider") with its device flow enabled,
// serving one public client "bench" on 127.0.0.1:$PORT. scripts/bench.sh installs the package
// into a temporary folder and runs this file there.
//
// Storage is a plain in-memory Map. The package's own development adapter is an LRU capped at
// 1,000 entries, which would evict most of a 100,000-code set and turn polls into invalid_grant;
// AuthGate holds every pending code in memory too, so this is the like-for-like setup.
import Provider from 'oidc-provider';

const stores = new Map();
const store = (name) => {
  if (!stores.has(name)) stores.set(name, new Map());
  return stores.get(name);
};
const grantIndex = new Map();

class MemoryAdapter {
  constructor(name) {
    this.name = name;
    this.items = store(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    this.items.set(id, { payload, expiresAt });
    if (payload.userCode) store(`${this.name}:userCode`).set(payload.userCode, id);
    if (payload.uid) store(`${this.name}:uid`).set(payload.uid, id);
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, []);
      grantIndex.get(payload.grantId).push([this.name, id]);
    }
  }

  async find(id) {
    const item = this.items.get(id);
    if (!item) return undefined;
    if (item.expiresAt && item.expiresAt < Date.now()) {
      this.items.delete(id);
      return undefined;
    }
    return item.payload;
  }

  async findByUserCode(userCode) {
    const id = store(`${this.name}:userCode`).get(userCode);
    return id ? this.find(id) : undefined;
  }

  async findByUid(uid) {
    const id = store(`${this.name}:uid`).get(uid);
    return id ? this.find(id) : undefined;
  }

  async consume(id) {
    const item = this.items.get(id);
    if (item) item.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.items.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [name, id] of grantIndex.get(grantId) || []) store(name).delete(id);
    grantIndex.delete(grantId);
  }
}

const port = Number(process.env.PORT || 9300);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  adapter: MemoryAdapter,
  clients: [{
    client_id: 'bench',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
  }],
  features: {
    deviceFlow: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: { DeviceCode: 30 * 60 },
});
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${port}`);
});
