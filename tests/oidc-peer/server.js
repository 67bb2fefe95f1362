// A third-party OpenID Connect provider for authvault's Google sign-in tests: the npm package
// oauth2-mock-server (pinned in package.json), started on 127.0.0.1 and made stricter where the
// package is lenient. scripts/test starts it as `node tests/oidc-peer/server.js 0` and reads the
// line `READY http://127.0.0.1:PORT` it prints once listening.
//
// What the package does by itself (dist/oauth2-server-*.mjs of 8.2.3):
// - serves GET /authorize, POST /token, GET /jwks, GET /userinfo (and discovery, revoke,
//   end-session, introspect);
// - /authorize answers 302 to redirect_uri with a random code and the state, storing the nonce
//   and (when given) code_challenge/code_challenge_method per code; it checks neither client_id
//   nor redirect_uri;
// - /token checks PKCE only when the request carries code_verifier (and then refuses a code
//   without a stored challenge, or a verifier that does not match); without code_verifier it
//   checks nothing. It accepts any code (even one it never issued, any number of times), never
//   checks the client secret or redirect_uri, and sets the ID token's `aud` to the client id it
//   is given (HTTP basic user name, not form-urldecoded, or the client_id form field);
// - the ID token (RS256, `kid` of the generated key) carries iss, iat, exp, nbf, sub "johndoe",
//   aud, and the nonce stored for that code when there is one;
// - /userinfo answers {"sub": "johndoe"} to anyone.
//
// This script adds, through the package's events: one registered client, authenticated with
// client_secret_basic only (RFC 6749 2.3.1 form-urlencoding); codes that are issued by /authorize,
// live 60 s and are spent on first use; PKCE S256 required at /authorize and its code_verifier
// required at /token; redirect_uri at /token equal to the one at /authorize; Google-like identity
// claims in every token it signs; and a /userinfo that wants an access token it issued.

import { OAuth2Server } from 'oauth2-mock-server';

/** The one client this provider knows; tests/api/oidc_peer.rs uses the same values. */
const CLIENT_ID = 'authvault-peer-client.apps.example';
const CLIENT_SECRET = 'authvault-peer-secret';

/** The account that signs in, with Google's claim names. */
const ACCOUNT = {
  sub: '104217799340111111111',
  email: 'peer.user@gmail.com',
  email_verified: true,
  name: 'Peer User',
};

const CODE_TTL_MS = 60_000;

function refuse(message) {
  process.stderr.write(`oidc-peer: refused: ${message}\n`);
}

/** RFC 6749 2.3.1: client id and secret are form-urlencoded before basic authentication. */
function basicCredentials(req) {
  const match = /^Basic +([A-Za-z0-9+/=._~-]+)$/i.exec(req.headers.authorization ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  const formDecode = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
  try {
    return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    return undefined;
  }
}

async function main() {
  const port = Number.parseInt(process.argv[2] ?? '', 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write('usage: node server.js PORT   (0 = any free port)\n');
    process.exit(2);
  }

  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  const service = server.service;

  /** code -> what /authorize was asked, until the code is spent or expires. */
  const codes = new Map();
  /** Access tokens issued, for /userinfo. */
  const accessTokens = new Set();

  service.on('beforeAuthorizeRedirect', (redirect, req) => {
    const url = redirect.url;
    const code = url.searchParams.get('code');
    if (code === null) return; // the package already answers with an error
    const q = req.query;
    let problem;
    if (q.client_id !== CLIENT_ID) problem = ['unauthorized_client', 'unknown client_id'];
    else if (typeof q.scope !== 'string' || !q.scope.split(' ').includes('openid'))
      problem = ['invalid_scope', 'scope must include openid'];
    else if (q.code_challenge_method !== 'S256' || typeof q.code_challenge !== 'string')
      problem = ['invalid_request', 'PKCE with code_challenge_method=S256 is required'];
    else if (typeof q.nonce !== 'string' || q.nonce === '')
      problem = ['invalid_request', 'nonce is required'];
    if (problem) {
      refuse(`/authorize: ${problem[1]}`);
      url.searchParams.delete('code');
      url.searchParams.set('error', problem[0]);
      url.searchParams.set('error_description', problem[1]);
      return;
    }
    codes.set(code, {
      clientId: q.client_id,
      redirectUri: q.redirect_uri,
      expires: Date.now() + CODE_TTL_MS,
    });
  });

  // Runs after the package's own checks (including PKCE, when code_verifier is sent).
  service.on('beforeResponse', (response, req) => {
    const body = req.body ?? {};
    const fail = (status, error, description) => {
      refuse(`/token: ${description}`);
      response.statusCode = status;
      response.body = { error, error_description: description };
    };
    const client = basicCredentials(req);
    if (!client) return fail(401, 'invalid_client', 'client_secret_basic authentication required');
    if (client.id !== CLIENT_ID || client.secret !== CLIENT_SECRET)
      return fail(401, 'invalid_client', 'unknown client or wrong secret');
    if (body.grant_type !== 'authorization_code')
      return fail(400, 'unsupported_grant_type', 'only authorization_code is supported');
    const issued = codes.get(body.code);
    codes.delete(body.code);
    if (!issued || issued.expires < Date.now())
      return fail(400, 'invalid_grant', 'unknown, expired or already used code');
    if (issued.clientId !== client.id)
      return fail(400, 'invalid_grant', 'code issued to another client');
    if (body.redirect_uri !== issued.redirectUri)
      return fail(400, 'invalid_grant', 'redirect_uri differs from the authorization request');
    if (typeof body.code_verifier !== 'string')
      return fail(400, 'invalid_grant', 'code_verifier required');
    accessTokens.add(response.body.access_token);
  });

  // Every token the token endpoint signs (the access token and the ID token) names the account.
  // The ID token keeps the `nonce` the package copied from the authorization request, and its
  // `aud` is the client id.
  service.on('beforeTokenSigning', (token, req) => {
    Object.assign(token.payload, ACCOUNT);
    const client = basicCredentials(req);
    if (client && 'aud' in token.payload) token.payload.aud = client.id;
  });

  service.on('beforeUserinfo', (response, req) => {
    const match = /^Bearer +(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!match || !accessTokens.has(match[1])) {
      refuse('/userinfo: no valid access token');
      response.statusCode = 401;
      response.body = { error: 'invalid_token' };
      return;
    }
    response.body = { ...ACCOUNT };
  });

  await server.start(port, '127.0.0.1');
  const url = `http://127.0.0.1:${server.address().port}`;
  server.issuer.url = url;

  const stop = () => {
    server.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  process.stdout.write(`READY ${url}\n`);
}

main().catch((e) => {
  process.stderr.write(`oidc-peer: ${e?.stack ?? e}\n`);
  process.exit(1);
});
