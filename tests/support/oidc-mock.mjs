// A real OIDC provider for the incoming-auth tests: oauth2-mock-server (9.3.0) behind a thin
// wrapper that adds control endpoints.
//
//   node tests/support/oidc-mock.mjs [PORT]      (PORT 0 or absent: any free port)
//
// Prints `oidc-mock listening on http://127.0.0.1:PORT` once ready; exits when stdin closes.
// The package is loaded from $VMCP_TOOLS (default: <repo>/.tools, see
// scripts/install-test-tools.sh).
//
// Served by oauth2-mock-server: /.well-known/openid-configuration, /token, ... (issuer
// http://127.0.0.1:PORT, RS256 keys from its JWKStore, tokens from OAuth2Issuer.buildToken).
// Wrapped here:
//   GET  /jwks            the store's public keys minus dropped ones; counted; optional delay
//   POST /introspect      RFC 7662 (the package's own handler answers {active:true} to anything
//                         and never reads the body): Basic client auth checked, tokens
//                         registered with /test/opaque, anything else {active:false}; counted
//   POST /test/token      {claims, expiresIn, kid, alg: "HS256"|"none", forge} -> {access_token}
//                         claims are merged over {sub: "alice", aud: "vmcp-test"}; a null value
//                         removes a claim. forge: signed by a fresh key under the current kid.
//                         alg HS256: HMAC with the current public key (PEM) as the secret.
//   POST /test/rotate     {dropOld} -> {kid}: a new signing key; old keys stay in the JWKS
//                         unless dropOld
//   POST /test/opaque     {active, claims} -> {token}: registers an opaque token
//   POST /test/config     {jwksDelayMs}
//   GET  /test/stats      {jwks, discovery, introspect}

import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tools = process.env.VMCP_TOOLS || path.resolve(here, '../../.tools');
const lib = path.join(tools, 'node_modules/oauth2-mock-server/dist/index.mjs');
const { OAuth2Issuer, OAuth2Service } = await import(pathToFileURL(lib).href);

const CLIENT_ID = process.env.OIDC_MOCK_CLIENT_ID || 'vmcp-gateway';
const CLIENT_SECRET = process.env.OIDC_MOCK_CLIENT_SECRET || 'introspection-secret';
const DEFAULT_AUD = 'vmcp-test';

const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer);
const stats = { jwks: 0, discovery: 0, introspect: 0 };
const dropped = new Set();
const opaque = new Map();
let keySeq = 0;
let currentKid;
let jwksDelayMs = 0;

async function newKey() {
  const kid = `key-${++keySeq}`;
  await issuer.keys.generate('RS256', { kid });
  currentKid = kid;
  return kid;
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function applyClaims(payload, claims) {
  Object.assign(payload, { sub: 'alice', aud: DEFAULT_AUD }, claims);
  for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];
}

function currentPublicJwk() {
  return issuer.keys.toJSON().find((k) => k.kid === currentKid);
}

async function mint(body) {
  const claims = body.claims ?? {};
  const expiresIn = body.expiresIn ?? 3600;
  if (!body.forge && !body.alg) {
    return issuer.buildToken({
      kid: body.kid ?? currentKid,
      expiresIn,
      scopesOrTransform: (_header, payload) => applyClaims(payload, claims),
    });
  }
  // Hand-made tokens for the attack cases.
  const now = Math.floor(Date.now() / 1000);
  const payload = { iss: issuer.url, iat: now, exp: now + expiresIn, nbf: now - 10 };
  applyClaims(payload, claims);
  const kid = body.kid ?? currentKid;
  const alg = body.alg ?? 'RS256';
  const input = `${b64url({ alg, kid, typ: 'JWT' })}.${b64url(payload)}`;
  let sig;
  if (alg === 'none') {
    sig = '';
  } else if (alg === 'HS256') {
    const pem = crypto.createPublicKey({ key: currentPublicJwk(), format: 'jwk' })
      .export({ type: 'spki', format: 'pem' });
    sig = crypto.createHmac('sha256', pem).update(input).digest('base64url');
  } else {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    sig = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  }
  return `${input}.${sig}`;
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

function basicOk(header) {
  if (!header?.startsWith('Basic ')) return false;
  const [id, secret] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':');
  return decodeURIComponent(id ?? '') === CLIENT_ID && decodeURIComponent(secret ?? '') === CLIENT_SECRET;
}

const routes = {
  'GET /jwks': async (_req, res) => {
    stats.jwks++;
    if (jwksDelayMs > 0) await new Promise((r) => setTimeout(r, jwksDelayMs));
    send(res, 200, { keys: issuer.keys.toJSON().filter((k) => !dropped.has(k.kid)) });
  },
  'POST /introspect': async (req, res) => {
    stats.introspect++;
    const form = new URLSearchParams(await readBody(req));
    if (!basicOk(req.headers.authorization)) return send(res, 401, { error: 'invalid_client' });
    send(res, 200, opaque.get(form.get('token')) ?? { active: false });
  },
  'POST /test/token': async (req, res) => {
    send(res, 200, { access_token: await mint(JSON.parse((await readBody(req)) || '{}')) });
  },
  'POST /test/rotate': async (req, res) => {
    const body = JSON.parse((await readBody(req)) || '{}');
    const old = issuer.keys.toJSON().map((k) => k.kid);
    const kid = await newKey();
    if (body.dropOld) old.forEach((k) => dropped.add(k));
    send(res, 200, { kid });
  },
  'POST /test/opaque': async (req, res) => {
    const body = JSON.parse((await readBody(req)) || '{}');
    const token = crypto.randomBytes(24).toString('hex');
    opaque.set(token, { active: body.active ?? true, ...(body.claims ?? {}) });
    send(res, 200, { token });
  },
  'POST /test/config': async (req, res) => {
    const body = JSON.parse((await readBody(req)) || '{}');
    if (typeof body.jwksDelayMs === 'number') jwksDelayMs = body.jwksDelayMs;
    send(res, 200, {});
  },
  'GET /test/stats': async (_req, res) => send(res, 200, stats),
};

const server = http.createServer((req, res) => {
  const pathname = new URL(req.url ?? '/', 'http://x').pathname;
  const route = routes[`${req.method} ${pathname}`];
  if (route) {
    route(req, res).catch((err) => send(res, 500, { error: String(err) }));
    return;
  }
  if (pathname === '/.well-known/openid-configuration') stats.discovery++;
  service.requestHandler(req, res);
});

await newKey();
const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  const url = `http://127.0.0.1:${server.address().port}`;
  issuer.url = url;
  console.log(`oidc-mock listening on ${url}`);
});
// Tests hold stdin open and close it to stop the mock; scripts that run it in the background
// with no stdin set OIDC_MOCK_KEEP_RUNNING=1 and stop it by signal.
if (process.env.OIDC_MOCK_KEEP_RUNNING !== '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
