// An OAuth 2.0 authorization server for the tests: oidc-provider 9 on
// 127.0.0.1, in memory, with a protected API and test controls on the same
// origin. tests/support/oidc.rs starts it; see its module doc for the
// routes. Run from the directory holding node_modules/oidc-provider
// (`./dev setup` installs it into .switchyard/oidc):
//
//   PORT=0 OIDC_CLIENT_SECRET=… [OIDC_ACCESS_TTL=30] node tests/oidc/server.mjs
//
// Prints `listening on http://127.0.0.1:<port>` on stdout once it serves.
// OIDC_DEBUG=1 keeps oidc-provider's development notices and warnings.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const secret = process.env.OIDC_CLIENT_SECRET;
if (!secret) {
  console.error('OIDC_CLIENT_SECRET must be set');
  process.exit(2);
}
const accessTtl = Number(process.env.OIDC_ACCESS_TTL ?? 30);
if (!Number.isInteger(accessTtl) || accessTtl < 1) {
  console.error('OIDC_ACCESS_TTL must be a whole number of seconds');
  process.exit(2);
}

// oidc-provider's development notices go to stdout, where only the one
// `listening on` line belongs, and its warnings would fill test output.
if (!process.env.OIDC_DEBUG) {
  for (const level of ['info', 'warn']) {
    const original = console[level];
    console[level] = (first, ...rest) => {
      if (typeof first === 'string' && first.startsWith('oidc-provider ')) return;
      original.call(console, first, ...rest);
    };
  }
}

// Resolved from the working directory: the script lives in tests/oidc,
// its node_modules elsewhere.
const lib = (file) => pathToFileURL(join(process.cwd(), 'node_modules', 'oidc-provider', 'lib', file)).href;
const { default: Provider, errors } = await import(lib('index.js'));
const { default: MemoryAdapter } = await import(lib('adapters/memory_adapter.js'));
const { default: LRU } = await import(lib('helpers/lru.js'));

// oidc-provider's in-memory adapter, but its store keeps a million entries
// rather than a thousand: a busy test must not see grants and refresh
// tokens evicted.
const store = new LRU({ maxSize: 1_000_000 });
class Adapter extends MemoryAdapter {
  constructor(model) {
    super(model, store);
  }
}

const TOKEN_PATH = '/token';
const API_SCOPES = 'api:read api:write';

// Test counters and controls.
const zero = () => ({
  token_requests: 0,
  by_grant: { client_credentials: 0, refresh_token: 0, authorization_code: 0 },
  invalid_grant: 0,
});
let stats = zero();
let slowMs = 0;
// Every token issued so far, by kind: /__expire and /__revoke destroy them.
// Every token value ever issued (opaque tokens are their jti), for tests
// that look for them where they must not be.
const everIssued = [];
const issued = {
  AccessToken: new Set(),
  ClientCredentials: new Set(),
  RefreshToken: new Set(),
  Grant: new Set(),
};

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const API = `${issuer}/api`;

// The clients register no `scope`: oidc-provider checks that one against
// `scopes` (OpenID Connect scopes only); api:read and api:write are the
// API's resource scopes, from getResourceServerInfo below.
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'cc-client',
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'ac-client',
      client_secret: secret,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Any http://127.0.0.1:<port>/<path> is allowed: see below.
      redirect_uris: ['http://127.0.0.1/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  scopes: ['openid', 'offline_access'],
  adapter: Adapter,
  routes: { token: TOKEN_PATH },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // Confidential clients too: oidc-provider only requires PKCE of public
  // ones (and FAPI profiles) by default.
  pkce: { required: () => true },
  rotateRefreshToken: true,
  // A refresh token for every code grant, whether or not offline_access
  // survived (oidc-provider drops it unless prompt=consent), and never
  // tied to the browser session.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    RefreshToken: 24 * 60 * 60,
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => API,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== API) throw new errors.InvalidTarget();
        return {
          scope: API_SCOPES,
          audience: API,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'opaque',
        };
      },
    },
  },
});

// Any loopback http redirect URI, whatever its port and path: the host's
// callback port is only known when it runs.
const redirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function allowLoopback(value) {
  try {
    const url = new URL(value);
    if (url.protocol === 'http:' && url.hostname === '127.0.0.1' && !url.hash) return true;
  } catch {
    // Not a URL: the original check refuses it.
  }
  return redirectUriAllowed.call(this, value);
};

for (const kind of Object.keys(issued)) {
  const event = kind.replace(/[A-Z]/g, (c, i) => (i ? '_' : '') + c.toLowerCase());
  provider.on(`${event}.saved`, (model) => {
    issued[kind].add(model.jti);
    if (kind !== 'Grant') everIssued.push(model.jti);
  });
}

async function destroyAll(kinds) {
  for (const kind of kinds) {
    for (const id of issued[kind]) {
      const model = await provider[kind].find(id, { ignoreExpiration: true });
      await model?.destroy();
    }
    issued[kind].clear();
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

// The access token of an /api request, or undefined when it has none or
// it is not (or no longer) valid.
async function bearer(ctx) {
  const match = /^Bearer ([^ ]+)$/i.exec(ctx.get('authorization'));
  if (!match) return undefined;
  const token = (await provider.AccessToken.find(match[1]))
    ?? (await provider.ClientCredentials.find(match[1]));
  if (!token || token.isExpired) return undefined;
  return token;
}

async function api(ctx) {
  const token = await bearer(ctx);
  if (!token) {
    ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
    json(ctx, 401, { error: 'invalid_token' });
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/api/whoami') {
    json(ctx, 200, { client: token.clientId, sub: token.accountId ?? null, scope: token.scope || null });
  } else if (['GET', 'POST'].includes(ctx.method) && ctx.path === '/api/echo') {
    const body = (await readBody(ctx.req)).toString('utf8');
    json(ctx, 200, {
      method: ctx.method, path: ctx.path, query: ctx.querystring, headers: ctx.headers, body,
    });
  } else {
    json(ctx, 404, { error: 'not_found' });
  }
}

async function control(ctx) {
  if (ctx.method === 'GET' && ctx.path === '/__stats') {
    json(ctx, 200, stats);
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/__issued') {
    json(ctx, 200, { tokens: everIssued });
    return;
  }
  if (ctx.method !== 'POST') {
    json(ctx, 404, { error: 'not_found' });
    return;
  }
  switch (ctx.path) {
    case '/__reset':
      stats = zero();
      break;
    case '/__expire':
      await destroyAll(['AccessToken', 'ClientCredentials']);
      break;
    case '/__revoke':
      await destroyAll(['AccessToken', 'ClientCredentials', 'RefreshToken', 'Grant']);
      break;
    case '/__slow': {
      const ms = Number(ctx.query.ms ?? 0);
      if (!Number.isInteger(ms) || ms < 0) {
        json(ctx, 400, { error: 'ms must be a whole number' });
        return;
      }
      slowMs = ms;
      break;
    }
    default:
      json(ctx, 404, { error: 'not_found' });
      return;
  }
  json(ctx, 200, { ok: true });
}

async function token(ctx, next) {
  // Read here to count by grant type on arrival; oidc-provider then takes
  // the parsed body from req.body.
  const raw = await readBody(ctx.req);
  ctx.req.body = raw;
  const grant = new URLSearchParams(raw.toString('utf8')).get('grant_type') ?? '';
  stats.token_requests += 1;
  stats.by_grant[grant] = (stats.by_grant[grant] ?? 0) + 1;
  if (slowMs) await sleep(slowMs);
  await next();
  if (ctx.body?.error === 'invalid_grant') stats.invalid_grant += 1;
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/api' || ctx.path.startsWith('/api/')) return api(ctx);
  if (ctx.path.startsWith('/__')) return control(ctx);
  if (ctx.method === 'POST' && ctx.path === TOKEN_PATH) return token(ctx, next);
  return next();
});

// Static clients are validated on first use: fail now rather than then.
for (const id of ['cc-client', 'ac-client']) {
  if (!(await provider.Client.find(id))) throw new Error(`client ${id} missing`);
}

handler = provider.callback();
process.stdout.write(`listening on ${issuer}\n`);

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => process.exit(0));
}
