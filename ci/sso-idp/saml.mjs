// A SAML 2.0 identity provider on loopback for the single sign-on tests: npm saml-idp (its
// express app, its forms, its samlp signing) started with the options in the JSON argument:
//
//   node saml.mjs '{"port": 0, "cert": "idp.crt", "key": "idp.key", "acs_url": "...",
//                   "audience": "...", "issuer": "..."}'
//
// `port` 0 picks a free one; `issuer` defaults to `http://127.0.0.1:PORT/metadata`. Prints
// `READY http://127.0.0.1:PORT` once it listens. Two changes to saml-idp, both for tests:
// - The user starts with only `email` (single-valued) and `groups` (multi-valued) as attributes;
//   more are added as the page's "Add attribute" button does (`POST /metadata`).
// - An attribute posted empty is left out of the assertion (saml-idp would send one empty
//   value), so a sign-in without `groups` sends no `groups` attribute. saml-idp keeps one global
//   user, so post every attribute each time.

import http from 'node:http';
import net from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const options = JSON.parse(process.argv[2] ?? '{}');

// saml-idp reads HOST and PORT from the environment before its options.
delete process.env.HOST;
delete process.env.PORT;

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const port = options.port || (await freePort());
const base = `http://127.0.0.1:${port}`;

const SimpleProfileMapper = require('saml-idp/lib/simpleProfileMapper.js');
SimpleProfileMapper.prototype.getClaims = function getClaims() {
  const claims = {};
  for (const entry of this.metadata) {
    const value = this._pu[entry.id];
    if (value === undefined || value === null || value === '') continue;
    claims[entry.id] = entry.multiValue
      ? String(value).split(',').map((v) => v.trim()).filter((v) => v !== '')
      : value;
  }
  return Object.keys(claims).length ? claims : undefined;
};

// saml-idp makes its server inside runServer; keep it to learn when it listens.
let server;
const createServer = http.createServer;
http.createServer = (...args) => {
  server = createServer(...args);
  return server;
};

const { runServer } = require('saml-idp');
runServer({
  host: '127.0.0.1',
  port,
  cert: options.cert,
  key: options.key,
  issuer: options.issuer || `${base}/metadata`,
  acsUrl: options.acs_url,
  audience: options.audience,
  ...(options.sp_entity_id ? { serviceProviderId: options.sp_entity_id } : {}),
  config: {
    user: {
      userName: 'nobody@example.com',
      nameIdFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
      email: 'nobody@example.com',
      groups: '',
    },
    metadata: [
      {
        id: 'email',
        optional: false,
        displayName: 'E-Mail Address',
        description: 'The e-mail address of the user',
        multiValue: false,
      },
      {
        id: 'groups',
        optional: true,
        displayName: 'Groups',
        description: 'Group memberships of the user',
        multiValue: true,
      },
    ],
  },
});
http.createServer = createServer;

server.once('error', (err) => {
  console.error(`saml.mjs: cannot listen on ${base}: ${err.message}`);
  process.exit(1);
});
server.once('listening', () => {
  console.log(`READY ${base}`);
});
