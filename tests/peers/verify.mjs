// A verifier nobody here wrote: panva's jose checks an access token against a remote JWKS,
// as an RFC 9068 resource server would. Usage: node verify.mjs <jwks_uri> <issuer> <audience>
// with the token on stdin; prints {"ok": true, "payload", "header"} or {"ok": false, "code"}.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUri, issuer, audience] = process.argv.slice(2);
let token = '';
for await (const chunk of process.stdin) token += chunk;
try {
  const { payload, protectedHeader } = await jwtVerify(
    token.trim(),
    createRemoteJWKSet(new URL(jwksUri)),
    { issuer, audience, typ: 'at+jwt', algorithms: ['ES256'] },
  );
  process.stdout.write(JSON.stringify({ ok: true, payload, header: protectedHeader }));
} catch (error) {
  process.stdout.write(JSON.stringify({ ok: false, code: error.code ?? String(error) }));
}
