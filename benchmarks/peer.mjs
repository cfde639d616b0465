// The peer: oidc-provider (tests/peers/node_modules) storing its tokens in a private Redis
// through the adapter below, with PEER_WORKERS processes (node:cluster) on PEER_PORT.
// Measured on client-credentials issuance (an ES256 JWT access token for JWT_API, and an
// opaque one for OPAQUE_API) and on introspection of the opaque token.
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.PEER_MODULES;
const port = Number(process.env.PEER_PORT);
const workers = Number(process.env.PEER_WORKERS || '1');
const socket = process.env.PEER_REDIS_SOCKET;

export const CLIENT = { id: 'bench-client', secret: 'bench-client-secret-0123456789abcdef' };
export const RESOURCE_SERVER = { id: 'bench-rs', secret: 'bench-rs-secret-0123456789abcdefgh' };
export const JWT_API = 'https://api.bench.example';
export const OPAQUE_API = 'https://opaque.bench.example';

// Models that oidc-provider consumes (marks used) are kept as hashes so `consume` is one HSET;
// everything else is a JSON string under a TTL.
const CONSUMABLE = new Set(['AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
// Models whose records belong to a grant, so revoking the grant can find them.
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function makeAdapter(redis) {
  return class RedisAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `oidc:${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const tx = redis.multi();
      if (CONSUMABLE.has(this.model)) {
        tx.hset(key, 'payload', JSON.stringify(payload));
      } else {
        tx.set(key, JSON.stringify(payload));
      }
      if (expiresIn) tx.expire(key, expiresIn);
      if (GRANTABLE.has(this.model) && payload.grantId) {
        const grantKey = `oidc:grant:${payload.grantId}`;
        tx.rpush(grantKey, key);
        if (expiresIn) tx.expire(grantKey, expiresIn);
      }
      if (payload.userCode) {
        tx.set(`oidc:userCode:${payload.userCode}`, id, ...(expiresIn ? ['EX', expiresIn] : []));
      }
      if (payload.uid) {
        tx.set(`oidc:uid:${payload.uid}`, id, ...(expiresIn ? ['EX', expiresIn] : []));
      }
      await tx.exec();
    }

    async find(id) {
      const key = this.key(id);
      if (CONSUMABLE.has(this.model)) {
        const { payload, consumed } = await redis.hgetall(key);
        if (!payload) return undefined;
        const parsed = JSON.parse(payload);
        return consumed ? { ...parsed, consumed: Number(consumed) } : parsed;
      }
      const data = await redis.get(key);
      return data ? JSON.parse(data) : undefined;
    }

    async findByUid(uid) {
      const id = await redis.get(`oidc:uid:${uid}`);
      return id ? this.find(id) : undefined;
    }

    async findByUserCode(userCode) {
      const id = await redis.get(`oidc:userCode:${userCode}`);
      return id ? this.find(id) : undefined;
    }

    async consume(id) {
      await redis.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000));
    }

    async destroy(id) {
      await redis.del(this.key(id));
    }

    async revokeByGrantId(grantId) {
      const grantKey = `oidc:grant:${grantId}`;
      const members = await redis.lrange(grantKey, 0, -1);
      await redis.del(...members, grantKey);
    }
  };
}

async function serve(jwk) {
  const require = createRequire(join(modules, 'noop.js'));
  const Redis = require('ioredis');
  const entry = join(modules, 'oidc-provider', 'lib', 'index.js');
  const { default: Provider, errors } = await import(pathToFileURL(entry).href);

  const redis = new Redis({ path: socket });
  const resources = {
    [JWT_API]: { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } },
    [OPAQUE_API]: { accessTokenFormat: 'opaque' },
  };
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    adapter: makeAdapter(redis),
    jwks: { keys: [jwk] },
    clients: [
      {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'payments:write',
      },
      {
        client_id: RESOURCE_SERVER.id,
        client_secret: RESOURCE_SERVER.secret,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    cookies: { keys: ['bench-peer-cookie-key-0123456789abcdef'] },
    scopes: ['payments:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resource) => {
          const info = resources[resource];
          if (!info) throw new errors.InvalidTarget();
          return { scope: 'payments:write', audience: resource, accessTokenTTL: 900, ...info };
        },
      },
    },
  });
  provider.listen(port, '127.0.0.1');
}

if (cluster.isPrimary) {
  // One signing key for every worker, made once by the primary.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-peer', use: 'sig', alg: 'ES256' };
  if (workers > 1) {
    for (let i = 0; i < workers; i += 1) cluster.fork({ PEER_JWK: JSON.stringify(jwk) });
    const stop = () => {
      for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
      process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  } else {
    await serve(jwk);
  }
} else {
  await serve(JSON.parse(process.env.PEER_JWK));
}
