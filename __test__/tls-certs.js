'use strict';
// A throwaway certificate authority made with openssl for the tests that put TLS in
// front of something (Redis, nginx): a CA, a server certificate for `names` (DNS names
// and IP addresses), and a client certificate, all PEM files in a temporary folder.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
}

/**
 * Makes the certificates; returns their paths and PEM texts ({ dir, ca, caKey, cert, key,
 * clientCert, clientKey, paths: {...} }). The folder is removed after test `t`.
 */
function makeCertificates(t, names = ['localhost', '127.0.0.1']) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-tls-'));
  t?.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=wa-gw test CA'], dir);
  fs.writeFileSync(path.join(dir, 'server.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', ...key, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${names[0]}`], dir);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext'], dir);
  fs.writeFileSync(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  openssl(['req', ...key, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=wa-gw test client'], dir);
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', 'client.ext'], dir);
  const paths = {};
  const pem = {};
  for (const [name, file] of Object.entries({ ca: 'ca.crt', caKey: 'ca.key', cert: 'server.crt', key: 'server.key', clientCert: 'client.crt', clientKey: 'client.key' })) {
    paths[name] = path.join(dir, file);
    pem[name] = fs.readFileSync(paths[name], 'utf8');
  }
  return { dir, paths, ...pem };
}

module.exports = { makeCertificates };
