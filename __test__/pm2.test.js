'use strict';
// A rolling restart as users run it (README "Deploying"): examples/pm2-app.js with
// examples/ecosystem.config.js under PM2 in cluster mode (two workers, the gateway
// attached, `cluster: { redis }`, waitForDevice 10 s, stop() on SIGINT), and `pm2 reload`
// while sends keep coming: every send succeeds, and the extension gets each exactly once.
// PM2 runs with its own PM2_HOME in a temporary folder; its daemon is killed at the end.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { startRedis, redisSkipReason, sleep } = require('./redis');
const { freePort } = require('./free-port');

const root = path.resolve(__dirname, '..');
const PM2 = path.join(root, 'node_modules', 'pm2', 'bin', 'pm2');
const KEY = 'pm2-key-0123456789';
const skip = redisSkipReason() ?? false;

/** Runs the pm2 command with the test's own PM2_HOME; bounded. */
function pm2(home, args, cwd) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PM2, ...args], { cwd, env: { ...process.env, PM2_HOME: home }, timeout: 90_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`pm2 ${args.join(' ')} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** One request on a fresh connection (each may land on either worker). */
function request(port, method, route, body) {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: route, agent: false, timeout: 30_000, headers: { 'x-api-key': KEY, 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode, text }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', (error) => resolve({ status: 0, text: error.message }));
    req.end(payload);
  });
}

/**
 * An extension that stays connected as the README's client does: it reconnects when
 * its session ends, answers every command, and counts what it was asked to send.
 */
function reconnectingExtension(url) {
  const received = new Map();
  let ws = null;
  let stopped = false;
  let connects = 0;
  const connect = () => {
    if (stopped) return;
    ws = new WebSocket(url);
    ws.on('open', () => {
      connects += 1;
      ws.send(JSON.stringify({ type: 'auth', apiKey: KEY, data: { extensionVersion: '1.0.0', browser: 'Chrome' } }));
    });
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString());
      if (frame.type === 'auth-success') ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
      if (frame.type === 'ping') ws.send(JSON.stringify({ type: 'heartbeat', timestamp: Date.now() }));
      if (frame.type === 'send-message') {
        const text = frame.data?.message;
        received.set(text, (received.get(text) ?? 0) + 1);
        ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: `m-${frame.requestId.slice(0, 8)}` }));
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => setTimeout(connect, 100));
  };
  connect();
  return {
    received,
    connects: () => connects,
    stop() {
      stopped = true;
      ws?.terminate();
    },
  };
}

test('the README\'s PM2 recipe is examples/pm2-app.js as run here', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### PM2'), readme.indexOf('### Behind nginx'));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'the PM2 section has a js block');
  const app = fs.readFileSync(path.join(root, 'examples', 'pm2-app.js'), 'utf8');
  assert.ok(app.includes(block[1]), 'the README block is the shutdown of examples/pm2-app.js, verbatim');
  assert.match(section, /pm2 start examples\/ecosystem\.config\.js/);
});

test('pm2 reload of the README recipe under traffic: no send lost, none sent twice', { timeout: 150_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-pm2-'));
  const home = path.join(dir, 'pm2-home');
  t.after(async () => {
    await pm2(home, ['kill'], dir).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // The example as a user has it: the package and Express in node_modules.
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
  fs.symlinkSync(path.join(root, 'node_modules', 'express'), path.join(dir, 'node_modules', 'express'), 'dir');
  fs.copyFileSync(path.join(root, 'examples', 'pm2-app.js'), path.join(dir, 'pm2-app.js'));
  const ecosystem = fs
    .readFileSync(path.join(root, 'examples', 'ecosystem.config.js'), 'utf8')
    .replace('PORT: 3000', `PORT: ${port}, API_KEYS: '${KEY}'`)
    .replace("'redis://127.0.0.1:6379'", `'${redis.url}'`);
  assert.notEqual(ecosystem, fs.readFileSync(path.join(root, 'examples', 'ecosystem.config.js'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), ecosystem);

  await pm2(home, ['start', 'ecosystem.config.js'], dir);
  const until = Date.now() + 30_000;
  while ((await request(port, 'GET', '/readyz')).status !== 200) {
    if (Date.now() > until) throw new Error(`the workers did not become ready:\n${await pm2(home, ['logs', '--nostream', '--lines', '40'], dir).catch((e) => e.message)}`);
    await sleep(200);
  }
  assert.equal((await request(port, 'GET', '/healthz')).status, 200);
  const extension = reconnectingExtension(`ws://127.0.0.1:${port}/wa-ext-ws`);
  t.after(() => extension.stop());
  // Ready once a send goes through.
  const firstUntil = Date.now() + 20_000;
  while ((await request(port, 'POST', '/send', { phoneNumber: '+15550001111', message: 'warm-up' })).status !== 200) {
    if (Date.now() > firstUntil) throw new Error('no send went through before the reload');
    await sleep(200);
  }

  // Sends keep coming, a few at a time, during the whole reload.
  const results = [];
  let sending = true;
  let n = 0;
  const traffic = (async () => {
    const inFlight = new Set();
    while (sending) {
      const message = `reload-${++n}`;
      const sent = request(port, 'POST', '/send', { phoneNumber: '+15550001111', message }).then((r) => results.push({ message, ...r }));
      inFlight.add(sent);
      sent.finally(() => inFlight.delete(sent));
      await sleep(40);
    }
    await Promise.all(inFlight);
  })();
  await sleep(500);
  const reloadStarted = Date.now();
  await pm2(home, ['reload', 'wa-gateway'], dir);
  const reloadMs = Date.now() - reloadStarted;
  await sleep(1000);
  sending = false;
  await traffic;

  const failed = results.filter((r) => r.status !== 200);
  assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${results.length} sends failed during the reload`);
  for (const { message } of results) assert.equal(extension.received.get(message), 1, `${message} reached the extension ${extension.received.get(message) ?? 0} times`);
  assert.ok(results.length >= 20, `only ${results.length} sends`);
  assert.ok(extension.connects() >= 2, 'the extension moved to another worker during the reload');
  t.diagnostic(`${results.length} sends during a ${reloadMs} ms reload; the extension connected ${extension.connects()} times`);
});
