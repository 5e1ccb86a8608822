'use strict';
// Behind nginx as the README shows it (README "Deploying": the nginx block, taken from
// the README itself): Debian's nginx terminates TLS (a CA made by openssl here) in front
// of examples/express-app.js run with TRUST_PROXY=1. Extensions connect over wss:// and
// REST calls come over https://; the gateway sees each client's own address, and
// maxPendingAuthPerIp counts clients, not nginx.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const WebSocket = require('ws');
const { waitFor } = require('./helpers');
const { freePort } = require('./free-port');
const { makeCertificates } = require('./tls-certs');
const { toolSkip, which } = require('./tools');
const { sleep } = require('./redis');

const root = path.resolve(__dirname, '..');
const KEY = 'nginx-key-0123456789';
const skip = toolSkip('nginx', 'apt-get install nginx');

/** The README's nginx block, pointed at this test's certificates and ports. */
function nginxConfig(dir, certs, port, appPort) {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const block = /```nginx\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'the README has an nginx block');
  const site = block[1]
    .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
    .replace('/etc/ssl/gateway/fullchain.pem', certs.paths.cert)
    .replace('/etc/ssl/gateway/privkey.pem', certs.paths.key)
    .replace('http://127.0.0.1:3000', `http://127.0.0.1:${appPort}`);
  assert.notEqual(site, block[1]);
  const temp = (name) => `${name}_temp_path ${path.join(dir, name)};`;
  return [
    // As root, workers would switch to an unprivileged user that cannot read the temp folder.
    process.getuid?.() === 0 ? 'user root;' : '',
    'worker_processes 1;',
    'daemon off;',
    `pid ${path.join(dir, 'nginx.pid')};`,
    'error_log stderr warn;',
    'events { worker_connections 512; }',
    'http {',
    '  access_log off;',
    `  ${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}`,
    site,
    '}',
    '',
  ].join('\n');
}

/** An HTTPS request through nginx, trusting the test's CA. */
function call(port, ca, method, route, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      { host: '127.0.0.1', port, method, path: route, ca, agent: false, headers: { 'x-api-key': KEY, 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, text }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A WebSocket through nginx from a given loopback source address; resolves on open or refusal. */
function connect(url, ca, localAddress) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { ca, localAddress });
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (_req, res) => {
      resolve({ ws: null, status: res.statusCode });
      ws.terminate();
    });
    ws.once('error', () => resolve({ ws: null, status: 0 }));
  });
}

test('nginx terminates TLS in front of the Express example: wss:// and https:// work, the client address is the client\'s, caps count per client', { timeout: 60_000, skip }, async (t) => {
  const certs = makeCertificates(t, ['localhost', '127.0.0.1']);
  const open = [];
  t.after(() => open.forEach((ws) => ws.terminate()));

  const app = spawn(process.execPath, [path.join(root, 'examples', 'express-app.js')], {
    env: { ...process.env, PORT: '0', TRUST_PROXY: '1', API_KEYS: KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let appOut = '';
  app.stdout.on('data', (d) => (appOut += d));
  app.stderr.on('data', (d) => (appOut += d));
  const appExited = new Promise((resolve) => app.once('exit', resolve));
  t.after(() => {
    app.kill('SIGKILL');
    return appExited;
  });
  const appPort = Number((await waitFor(() => /Listening on http:\/\/localhost:(\d+)/.exec(appOut), 10_000, 'the app to listen'))[1]);

  const port = await freePort();
  fs.writeFileSync(path.join(certs.dir, 'nginx.conf'), nginxConfig(certs.dir, certs, port, appPort));
  const nginx = spawn(which('nginx'), ['-p', certs.dir, '-c', path.join(certs.dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let nginxOut = '';
  nginx.stdout.on('data', (d) => (nginxOut += d));
  nginx.stderr.on('data', (d) => (nginxOut += d));
  const nginxExited = new Promise((resolve) => nginx.once('exit', resolve));
  // SIGTERM: the master stops its worker too (killed alone, the worker would keep
  // running, and holding the pipes this test reads).
  t.after(async () => {
    nginx.kill('SIGTERM');
    const timer = setTimeout(() => nginx.kill('SIGKILL'), 5000);
    await nginxExited;
    clearTimeout(timer);
    nginx.stdout.destroy();
    nginx.stderr.destroy();
  });
  const until = Date.now() + 10_000;
  for (;;) {
    const health = await call(port, certs.ca, 'GET', '/healthz').catch(() => null);
    if (health?.status === 200) break;
    if (Date.now() > until) throw new Error(`nginx did not serve /healthz: ${nginxOut}`);
    await sleep(100);
  }
  assert.equal((await call(port, certs.ca, 'GET', '/readyz')).status, 200);

  // An extension from 127.0.0.2 over wss://, a send over https://.
  const url = `wss://127.0.0.1:${port}/wa-ext-ws`;
  const { ws } = await connect(url, certs.ca, '127.0.0.2');
  assert.ok(ws, 'the extension connected through nginx');
  open.push(ws);
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString());
    if (frame.type === 'auth-success') ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
    if (frame.type === 'send-message') ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: 'through-nginx' }));
  });
  ws.send(JSON.stringify({ type: 'auth', apiKey: KEY, data: { extensionVersion: '1.0.0', browser: 'Chrome' } }));
  const session = await (async () => {
    const end = Date.now() + 10_000;
    for (;;) {
      const sessions = JSON.parse((await call(port, certs.ca, 'GET', '/api/sessions')).text);
      if (sessions[0]?.deviceActive) return sessions[0];
      if (Date.now() > end) throw new Error(`no active session: ${JSON.stringify(sessions)}`);
      await sleep(50);
    }
  })();
  assert.equal(session.ip, '127.0.0.2', 'the client address, not nginx\'s');
  const sent = await call(port, certs.ca, 'POST', '/api/send-message', { phoneNumber: '+15550001111', message: 'through nginx' });
  assert.equal(sent.status, 200, sent.text);
  assert.equal(JSON.parse(sent.text).messageId, 'through-nginx');

  // maxPendingAuthPerIp (64 by default) counts 127.0.0.3, not nginx: its 65th
  // unauthenticated connection is refused, another client's is not.
  const pending = await Promise.all(Array.from({ length: 64 }, () => connect(url, certs.ca, '127.0.0.3')));
  for (const p of pending) if (p.ws) open.push(p.ws);
  assert.deepEqual([...new Set(pending.map((p) => p.status))], [101]);
  const over = await connect(url, certs.ca, '127.0.0.3');
  assert.equal(over.status, 503, 'the 65th pending connection of one client is refused');
  const other = await connect(url, certs.ca, '127.0.0.4');
  assert.equal(other.status, 101, 'another client still connects');
  open.push(other.ws);
});
