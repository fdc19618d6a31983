// SPDX-License-Identifier: Apache-2.0
// A real OAuth 2.0 authorization server for stowbridge's credential
// tests: oidc-provider with the client_credentials grant and two clients
// that authenticate with private_key_jwt (RFC 7523), one restricted to
// PS256 and one to RS256, both holding the public key of the test
// certificate given as argv[2]. Listens on 127.0.0.1 and a free port,
// prints "PORT <n>" on stdout once it does, logs to stderr only.
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const certFile = process.argv[2];
if (!certFile) {
  console.error('usage: server.mjs CERT.pem');
  process.exit(2);
}
const jwk = createPublicKey(readFileSync(certFile)).export({ format: 'jwk' });

function client(id, alg) {
  return {
    client_id: id,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: alg,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    jwks: { keys: [jwk] },
  };
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [client('bridge-ps256', 'PS256'), client('bridge-rs256', 'RS256')],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
    },
  });
  // Why a client was refused, for the test log (the answer only says
  // "invalid_client").
  provider.on('grant.error', (ctx, err) => {
    console.error(`oidc peer: refused: ${err.message}: ${err.error_detail || ''} ${err.cause ? err.cause.message : ''}`);
  });
  server.on('request', provider.callback());
  process.stdout.write(`PORT ${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
