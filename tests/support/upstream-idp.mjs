// A real upstream IdP for the upstream-vault tests: oauth2-mock-server (9.3.0) behind a thin
// wrapper that keeps track of refresh tokens the way a strict IdP does, and injects faults.
//
//   node tests/support/upstream-idp.mjs
//
// Prints `upstream-idp listening on http://127.0.0.1:PORT control http://127.0.0.1:CPORT` once
// ready; exits when stdin closes. The package is loaded from $VMCP_TOOLS (default:
// <repo>/.tools, see scripts/install-test-tools.sh).
//
// The IdP (PORT; issuer http://127.0.0.1:PORT) is oauth2-mock-server itself (discovery,
// /authorize auto-approving with PKCE and nonce, /token, /jwks, /userinfo), hooked:
//   - /authorize: `login_hint` names the user (default "johndoe"); ID and access tokens and
//     /userinfo carry it as `sub`.
//   - /token: access tokens live `accessTtl` seconds (`expires_in` and `exp`). Refresh tokens
//     are tracked: an unknown or revoked one gets 400 invalid_grant; with `rotate`, each one
//     is single-use and a reuse counts as a replay (and revokes that user's tokens, as IdPs
//     with reuse detection do); without, the response carries no new refresh token.
//   - faults, consumed one per refresh_token request in order: "503" (not processed),
//     "invalid_grant", "drop" (processed, rotated, then the connection is destroyed without an
//     answer), "hang" (processed, rotated, answer held back `hangMs`).
// Control (CPORT):
//   POST /ctl/config  {accessTtl, rotate, authMethods, hangMs}  (authMethods: the discovery
//                     document's token_endpoint_auth_methods_supported; null: the mock's)
//   POST /ctl/fault   {kind, count}
//   POST /ctl/down    close the IdP's listener and connections (connection refused)
//   POST /ctl/up      listen again on the same port
//   POST /ctl/revoke  {user}: revoke that user's refresh tokens
//   POST /ctl/check   {token} -> {active, sub}: would a resource server accept this access
//                     token now (issued here and not expired, to the millisecond)
//   POST /ctl/latest  {user} -> {token, active}: the access token last issued to that user
//                     (null if none) and whether it is still accepted
//   GET  /ctl/stats   {grants: {authorization_code, refresh_token}, replays, rejected,
//                     clientAuth: last token request's "basic" | "post" | "none"}

import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tools = process.env.VMCP_TOOLS || path.resolve(here, '../../.tools');
const lib = path.join(tools, 'node_modules/oauth2-mock-server/dist/index.mjs');
const { OAuth2Issuer, OAuth2Service } = await import(pathToFileURL(lib).href);

const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer);
await issuer.keys.generate('RS256');

const config = { accessTtl: 3600, rotate: true, authMethods: null, hangMs: 5000 };
const faults = [];
const stats = { grants: { authorization_code: 0, refresh_token: 0 }, replays: 0, rejected: 0, clientAuth: null };
const codeUsers = new Map(); // authorization code -> user
const refreshTokens = new Map(); // refresh token -> {user, state: live | used | revoked}
const accessTokens = new Map(); // access token -> {user, exp (ms)}

const userOf = (req) => {
  const body = req.body ?? {};
  if (body.grant_type === 'authorization_code') return codeUsers.get(body.code);
  if (body.grant_type === 'refresh_token') return refreshTokens.get(body.refresh_token)?.user;
  return undefined;
};

service.on('beforeAuthorizeRedirect', (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  if (code) codeUsers.set(code, req.query.login_hint ?? 'johndoe');
});

service.on('beforeTokenSigning', (token, req) => {
  const user = userOf(req);
  if (user) token.payload.sub = user;
  token.payload.exp = token.payload.iat + config.accessTtl;
});

service.on('beforeUserinfo', (response, req) => {
  const auth = req.headers.authorization ?? '';
  const found = accessTokens.get(auth.replace(/^Bearer /, ''));
  if (!found) {
    response.statusCode = 401;
    response.body = { error: 'invalid_token' };
  } else {
    response.body = { sub: found.user, name: `User ${found.user}`, email: `${found.user}@example.com` };
  }
});

service.on('beforeWellKnownOpenIdConfiguration', (response) => {
  if (config.authMethods) response.body.token_endpoint_auth_methods_supported = config.authMethods;
});

function reject(response, why) {
  response.statusCode = 400;
  response.body = { error: 'invalid_grant', error_description: why };
}

service.on('beforeResponse', (response, req) => {
  const body = req.body ?? {};
  const grant = body.grant_type;
  stats.grants[grant] = (stats.grants[grant] ?? 0) + 1;
  stats.clientAuth = req.headers.authorization?.startsWith('Basic ')
    ? 'basic'
    : body.client_secret !== undefined ? 'post' : 'none';
  const user = userOf(req);
  if (grant === 'refresh_token') {
    const fault = faults.shift();
    const entry = refreshTokens.get(body.refresh_token);
    if (fault === '503') {
      response.statusCode = 503;
      response.body = { error: 'temporarily_unavailable' };
      return;
    }
    if (fault === 'invalid_grant') {
      if (entry) entry.state = 'revoked';
      return reject(response, 'told to');
    }
    if (!entry || entry.state === 'revoked') {
      stats.rejected++;
      return reject(response, 'unknown or revoked refresh token');
    }
    if (entry.state === 'used') {
      stats.replays++;
      for (const e of refreshTokens.values()) if (e.user === entry.user) e.state = 'revoked';
      return reject(response, 'refresh token reused');
    }
    if (config.rotate) {
      entry.state = 'used';
      refreshTokens.set(response.body.refresh_token, { user, state: 'live' });
    } else {
      delete response.body.refresh_token;
    }
    const res = req.vmcpRes;
    if (fault === 'drop') {
      res.end = () => req.socket.destroy();
    } else if (fault === 'hang') {
      const end = res.end.bind(res);
      res.end = (...args) => setTimeout(() => end(...args), config.hangMs);
    }
  } else if (grant === 'authorization_code' && response.body.refresh_token) {
    refreshTokens.set(response.body.refresh_token, { user, state: 'live' });
  }
  if (response.body.access_token) {
    response.body.expires_in = config.accessTtl;
    accessTokens.set(response.body.access_token, { user, exp: Date.now() + config.accessTtl * 1000 });
  }
});

// --- the IdP's listener, which can go down and come back on the same port ---

let server;
let port = 0;
const sockets = new Set();

function listen() {
  return new Promise((resolve, reject) => {
    server = http.createServer((req, res) => {
      req.vmcpRes = res;
      service.requestHandler(req, res);
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      port = server.address().port;
      resolve();
    });
  });
}

function down() {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

// --- control ---

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

const routes = {
  'POST /ctl/config': async (body) => {
    for (const k of ['accessTtl', 'rotate', 'authMethods', 'hangMs']) if (k in body) config[k] = body[k];
    return config;
  },
  'POST /ctl/fault': async (body) => {
    for (let i = 0; i < (body.count ?? 1); i++) faults.push(body.kind);
    return { pending: faults.length };
  },
  'POST /ctl/down': async () => {
    await down();
    return {};
  },
  'POST /ctl/up': async () => {
    await listen();
    return { port };
  },
  'POST /ctl/revoke': async (body) => {
    let n = 0;
    for (const e of refreshTokens.values()) {
      if (e.user === body.user && e.state === 'live') {
        e.state = 'revoked';
        n++;
      }
    }
    return { revoked: n };
  },
  'POST /ctl/check': async (body) => {
    const t = accessTokens.get(body.token);
    return { active: !!t && t.exp > Date.now(), sub: t?.user ?? null };
  },
  'POST /ctl/latest': async (body) => {
    let latest = null;
    for (const [token, t] of accessTokens) if (t.user === body.user) latest = { token, exp: t.exp };
    return { token: latest?.token ?? null, active: !!latest && latest.exp > Date.now() };
  },
  'GET /ctl/stats': async () => stats,
};

const control = http.createServer((req, res) => {
  const route = routes[`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname}`];
  if (!route) return send(res, 404, { error: 'no such control route' });
  readJson(req)
    .then((body) => route(body))
    .then((out) => send(res, 200, out))
    .catch((err) => send(res, 500, { error: String(err) }));
});

await listen();
issuer.url = `http://127.0.0.1:${port}`;
control.listen(0, '127.0.0.1', () => {
  console.log(`upstream-idp listening on ${issuer.url} control http://127.0.0.1:${control.address().port}`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
