// An upstream IdP nobody here wrote: panva's oidc-provider on loopback, port chosen by the
// system. It signs the user's access token B as an RFC 9068 JWT for one API (resource
// indicators), after a real authorization-code login and consent on its dev interaction pages.
// Usage: node idp.mjs <api> <client_id> <client_secret> <redirect_uri>
// Prints {"issuer": ...} on stdout once it listens; stops on SIGTERM.
import http from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const [api, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: 'idp-es256', alg: 'ES256', use: 'sig' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://localhost:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    scopes: ['openid', 'payments:read'],
    pkce: { required: () => true },
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    features: {
      devInteractions: { enabled: true },
      // RFC 9449: a token request with a DPoP proof gets an access token bound to its key.
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => api,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resource) {
          if (resource !== api) throw new errors.InvalidTarget();
          return {
            scope: 'payments:read',
            audience: api,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
