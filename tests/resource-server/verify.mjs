// A resource server's check of an authvault access token, written as an integrator would:
// only the JWKS URL, the issuer and the audience are known; jose fetches and caches the keys.
//
//   node verify.mjs <jwks-url> <issuer> <audience> <token>
//
// Prints the verified header and payload as one JSON line and exits 0, or prints the reason
// and exits 1.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
if (!token) {
  console.error("usage: node verify.mjs <jwks-url> <issuer> <audience> <token>");
  process.exit(2);
}
const keys = createRemoteJWKSet(new URL(jwksUrl));
try {
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    issuer,
    audience,
    algorithms: ["EdDSA", "ES256"],
  });
  console.log(JSON.stringify({ header: protectedHeader, payload }));
} catch (e) {
  console.log(`refused: ${e.code ?? e.name}: ${e.message}`);
  process.exit(1);
}
