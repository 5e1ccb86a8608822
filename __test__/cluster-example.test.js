'use strict';
// examples/cluster-app.js runs as a user would run it: a node:cluster primary with two
// workers on one port, each with the gateway attached and `cluster: { redis }` pointing
// at a throwaway Redis. The extension lands on one worker; sends are requested until
// one is handled by the other worker, and it must reach the extension and resolve.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const { FakeExtension, waitFor } = require('./helpers');
const { startRedis, redisSkipReason } = require('./redis');

const KEY = 'cluster-app-key-0123456789';
const skip = redisSkipReason() ?? false;

/** One request on a fresh connection (no keep-alive: each may land on another worker). */
function call(port, method, route, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: route,
        agent: false,
        timeout: 20_000,
        headers: { 'x-api-key': KEY, ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode, body: JSON.parse(text) });
          } catch (error) {
            reject(new Error(`${method} ${route}: not JSON (${res.statusCode}): ${text.slice(0, 200)}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${route}: no answer within 20 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

test('examples/cluster-app.js: an extension on one worker gets a send requested through another', { timeout: 90_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'examples', 'cluster-app.js')], {
    env: { ...process.env, PORT: '0', WORKERS: '2', REDIS_URL: redis.url, API_KEYS: KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that the workers can be killed with it whatever happens.
    detached: true,
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  t.after(async () => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  });

  const port = Number((await waitFor(() => /Listening on http:\/\/localhost:(\d+) with 2 workers/.exec(out), 20_000, `the app to listen (output: ${out})`))[1]);

  const extension = new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`, { apiKey: KEY });
  t.after(() => extension.ws?.terminate());
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);

  // Where it landed: the session's nodeId, as any worker reports it.
  let holder;
  const until = Date.now() + 15_000;
  while (!holder) {
    const sessions = await call(port, 'GET', '/sessions');
    holder = sessions.body.sessions?.find((s) => s.sessionId === extension.sessionId && s.deviceActive)?.nodeId;
    if (!holder && Date.now() > until) assert.fail(`the session never showed with a nodeId: ${JSON.stringify(sessions.body)}`);
    if (!holder) await new Promise((r) => setTimeout(r, 50));
  }

  // Requests until both workers answered and one that is not the holder sent (bounded).
  const handlers = new Set();
  let remote = null;
  const answers = [];
  for (let i = 0; i < 40 && (!remote || handlers.size < 2); i++) {
    const sent = await call(port, 'POST', '/send', { phoneNumber: '+1234567890', message: `hello ${i}` });
    handlers.add(sent.body.handledBy.pid);
    answers.push(`${sent.status} via ${sent.body.handledBy.nodeId}: ${sent.body.error?.code ?? 'ok'}`);
    if (sent.body.handledBy.nodeId !== holder) {
      assert.equal(sent.status, 200, `a send through the other worker failed: ${JSON.stringify(sent.body)}`);
      remote = sent.body;
    }
  }
  assert.equal(handlers.size, 2, `only one worker answered: ${answers.join('; ')}`);
  assert.ok(remote, `no send was handled by a worker other than the holder (${holder}): ${answers.join('; ')}`);
  assert.equal(remote.result.success, true);
  const command = extension.commands.find((c) => c.requestId === remote.result.requestId);
  assert.ok(command, 'the remote send reached the extension under the requestId it resolved with');
  assert.equal(remote.result.deviceInfo.sessionId, extension.sessionId);

  // SIGTERM: the workers drain and leave, then the primary.
  child.kill('SIGTERM');
  let timer;
  const exit = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r('hung'), 20_000)))]);
  clearTimeout(timer);
  assert.deepEqual(exit, { code: 0, signal: null }, out);
});
