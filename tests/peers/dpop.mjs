// A DPoP proof builder nobody here wrote: panva's jose signs an RFC 9449 proof with a fresh
// ES256 key. Usage: node dpop.mjs <htm> <htu> <iat>; prints {"proof", "jkt"}.
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { randomUUID } from 'node:crypto';

const [htm, htu, iat] = process.argv.slice(2);
const { publicKey, privateKey } = await generateKeyPair('ES256');
const jwk = await exportJWK(publicKey);
const proof = await new SignJWT({ htm, htu, jti: randomUUID() })
  .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
  .setIssuedAt(Number(iat))
  .sign(privateKey);
process.stdout.write(JSON.stringify({ proof, jkt: await calculateJwkThumbprint(jwk) }));
