// An OpenID Connect provider on loopback for the single sign-on tests: npm oidc-provider with
// one static client, the options in the JSON argument:
//
//   node oidc.mjs '{"port": 0, "client_id": "...", "client_secret": "...",
//                   "redirect_uris": ["..."], "accounts": {"alice": {"email": "..."}}}'
//
// Optional: "token_endpoint_auth_method" (default client_secret_basic),
// "post_logout_redirect_uris". The issuer is `http://127.0.0.1:PORT`, no trailing slash; port 0
// picks a free one. Prints `READY http://127.0.0.1:PORT` once it listens.
//
// Sign-in is oidc-provider's development login (any password); consent is skipped: every
// sign-in is granted `openid email profile`. An account's claims all go into the ID token
// (`email` and `email_verified` with the `email` scope, every other claim with `profile`); a
// login not in `accounts` signs in with `sub` alone.
//
// `POST /__control` (JSON) changes the provider for a test:
// - `{"tamper": true}`: the next token response's ID token gets one signature character
//   changed; `{"tamper": "payload"}` changes its payload (by `claims`, else adds
//   `"tampered": true`) and keeps the old signature.
// - `{"claims": {...}}`: the next ID token's claims are overridden (`null` removes one) and it
//   is signed again with the provider's own key: valid signature, wrong content.
// - `{"other_key": true}`: the next ID token (with `claims` if given) is signed with a fresh
//   key that is in no JWKS, under the same `kid` unless `"kid"` names another.
// - `{"alg": "none"}`: the next ID token is unsigned; `{"alg": "HS256"}`: signed with the
//   client secret (both with `claims` if given).
// - `{"omit_id_token": true}`: the next token response has no ID token.
// - `{"rotate": true}`: a new signing key replaces the old one; the JWKS serves only the new
//   one and tokens are signed with it. Answers `{"kid": NEW}`.
// - `{"accounts": {login: claims|null}}`: adds, replaces (or with null removes) accounts.
// Forges apply to the next token response only; a new one replaces one not yet used. Every
// answer is `{"kid": CURRENT, "pending": FORGE|null}`.
//
// `POST /__verify {"jwt": "..."}` checks a token as a relying party would (signature against
// the JWKS served now, `iss`, `aud` = the client, `exp`) and answers `{"ok": true, "header",
// "payload"}` or `{"ok": false, "error"}`.

import http from 'node:http';
import crypto from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const options = JSON.parse(process.argv[2] ?? '{}');
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
let accounts = { ...(options.accounts ?? {}) };
let signingKey = await newKey();
let forge = null;
let provider;
let handle;

const PROFILE = [
  'name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
  'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
  'groups', 'roles', 'role',
];
const EMAIL = ['email', 'email_verified'];

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}

function profileClaims() {
  const names = new Set(PROFILE);
  for (const claims of Object.values(accounts)) {
    for (const name of Object.keys(claims ?? {})) {
      if (!EMAIL.includes(name) && name !== 'sub') names.add(name);
    }
  }
  return [...names];
}

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const jsonb64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function withClaims(payload, claims) {
  const out = { ...payload };
  for (const [name, value] of Object.entries(claims ?? {})) {
    if (value === null) delete out[name];
    else out[name] = value;
  }
  return out;
}

async function sign(header, payload, jwk) {
  const key = await jose.importJWK(jwk, header.alg);
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(key);
}

// The ID token as `f` says: see the list at the top.
async function forged(idToken, f) {
  const [h, p, s] = idToken.split('.');
  const header = b64json(h);
  const payload = withClaims(b64json(p), f.claims);
  if (f.tamper === true || f.tamper === 'signature') {
    const i = Math.floor(s.length / 2);
    return `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
  }
  if (f.tamper === 'payload') {
    const changed = f.claims ? payload : { ...payload, tampered: true };
    return `${h}.${jsonb64(changed)}.${s}`;
  }
  if (f.alg === 'none') {
    return `${jsonb64({ alg: 'none' })}.${jsonb64(payload)}.`;
  }
  if (f.alg === 'HS256') {
    const secret = new TextEncoder().encode(options.client_secret);
    return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'HS256' })
      .sign(secret);
  }
  if (f.other_key) {
    return sign({ ...header, kid: f.kid ?? header.kid }, payload, await newKey());
  }
  return sign({ ...header, ...(f.kid ? { kid: f.kid } : {}) }, payload, signingKey);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function verify(req, res) {
  try {
    const { jwt } = await readJson(req);
    const jwks = jose.createRemoteJWKSet(new URL(`${issuer}/jwks`));
    const { protectedHeader, payload } = await jose.jwtVerify(jwt, jwks, {
      issuer,
      audience: options.client_id,
    });
    answer(res, 200, { ok: true, header: protectedHeader, payload });
  } catch (err) {
    answer(res, 200, { ok: false, error: `${err?.code ?? 'ERROR'}: ${err?.message ?? err}` });
  }
}

async function control(req, res) {
  try {
    const body = req.method === 'POST' ? await readJson(req) : {};
    const { rotate, accounts: changed, ...rest } = body;
    if (rotate) {
      signingKey = await newKey();
    }
    if (changed) {
      for (const [login, claims] of Object.entries(changed)) {
        if (claims === null) delete accounts[login];
        else accounts[login] = claims;
      }
    }
    if (rotate || changed) {
      makeProvider();
    }
    if (Object.keys(rest).length) {
      forge = rest;
    }
    answer(res, 200, { kid: signingKey.kid, pending: forge });
  } catch (err) {
    answer(res, 400, { error: String(err?.stack ?? err) });
  }
}

// A provider with the current key and accounts. Codes, grants and sessions live in
// oidc-provider's in-memory adapter, shared by every instance, so a sign-in survives the swap.
function makeProvider() {
  const redirectUris = options.redirect_uris ?? [options.redirect_uri];
  provider = new Provider(issuer, {
    clients: [{
      client_id: options.client_id,
      client_secret: options.client_secret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: options.post_logout_redirect_uris ?? [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: options.token_endpoint_auth_method ?? 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: cookieKeys },
    pkce: { required: () => true },
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: EMAIL,
      profile: profileClaims(),
    },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { ...(accounts[sub] ?? {}), sub };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const grant = await ctx.oidc.provider.Grant.find(grantId);
        if (grant) return grant;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
  });
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method !== 'POST' || ctx.path !== '/token' || ctx.status !== 200) return;
    if (!forge || typeof ctx.body?.id_token !== 'string') return;
    const f = forge;
    forge = null;
    const body = { ...ctx.body };
    if (f.omit_id_token) delete body.id_token;
    else body.id_token = await forged(body.id_token, f);
    ctx.body = body;
  });
  handle = provider.callback();
}

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, 'http://x');
  if (pathname === '/__control') {
    control(req, res);
  } else if (pathname === '/__verify') {
    verify(req, res);
  } else {
    handle(req, res);
  }
});
server.once('error', (err) => {
  console.error(`oidc.mjs: cannot listen: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
makeProvider();
console.log(`READY ${issuer}`);
