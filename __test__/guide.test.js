'use strict';
// Runs the examples of the v1 user's guide (the file GUIDE_MD names; skipped without it,
// see guide-source.js) unchanged: each code block is taken from the guide by its heading
// and executed against a real gateway with simulated extensions, or type-checked for
// TypeScript blocks. v1-usage.test.js covers the same usage in the repository's own words.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension } = require('./helpers');

const root = path.resolve(__dirname, '..');
const { guideBlock: block, guideSkip } = require('./guide-source');

const AsyncFunction = (async () => {}).constructor;
const API_KEY = 'api-key-123';

/** Stand-ins for the application objects the examples mention but do not define. */
function appStubs(log) {
  const routes = {};
  return {
    require,
    console: { log: (...a) => log.push(a), warn: (...a) => log.push(a), error: (...a) => log.push(a) },
    db: { findUser: async () => null, collection: () => ({ insertOne: async () => {}, updateOne: async () => {} }) },
    notifyUser: async () => {},
    alertUser: () => {},
    alertAdmin: () => {},
    cleanupSession: () => {},
    updateDashboard: () => {},
    logToSentry: () => {},
    handleSendMessage: () => {},
    app: { get: (p, h) => (routes[`GET ${p}`] = h), post: (p, ...h) => (routes[`POST ${p}`] = h) },
    routes,
  };
}

/** Runs a guide block as the body of an async function; `gateway` is provided unless the block makes its own. */
async function runExample(title, gateway, log = []) {
  const code = block(title, 'javascript');
  const provided = { WhatsAppGateway, ...appStubs(log), gateway };
  const declares = (name) => new RegExp(`\\b(const|let|var|function)\\s+(\\{[^}]*\\b${name}\\b[^}]*\\}|${name}\\b)`).test(code);
  const names = Object.keys(provided).filter((name) => !declares(name));
  const values = names.map((name) => provided[name]);
  const fn = new AsyncFunction(...names, `${code}\n;return typeof gateway === 'undefined' ? undefined : gateway;`);
  return { result: await fn(...values), log, routes: provided.routes };
}

test('guide: examples that build their own gateway', { skip: guideSkip }, async () => {
  const { result: basic } = await runExample('Basic Setup');
  try {
    assert.equal(basic.getHealth().status, 'running');
    assert.equal(basic.getHealth().port, 3000);
  } finally {
    await basic.stop();
  }
  for (const title of ['Simple In-Memory Validation', 'Rate Limiting by API Key', 'Server-Side Connection Tracking']) {
    const { result } = await runExample(title);
    assert.ok(result instanceof WhatsAppGateway, title);
    assert.equal(result.getHealth().status, 'stopped');
  }
  // These fragments leave out validateApiKey, which the constructor requires (v1 too).
  for (const title of ['Handling Disconnections', 'Heartbeat Monitoring', 'onMessageLog - Track All Events']) {
    await assert.rejects(runExample(title), (e) => e instanceof TypeError && /validateApiKey/.test(e.message), title);
  }
});

test('guide: sending, media, sessions, device selection and errors', { timeout: 60_000, skip: guideSkip }, async (t) => {
  const { gateway, url } = await startGateway({ validKeys: [API_KEY] });
  t.after(() => gateway.stop());
  const devices = [];
  for (let i = 0; i < 3; i++) devices.push(await new FakeExtension(url, { apiKey: API_KEY }).connectReady(gateway));

  const { log: textLog } = await runExample('Simple Text Message', gateway);
  assert.equal(textLog[0][0], 'Success:');
  assert.equal(textLog[0][1].success, true);
  await runExample('With Custom Options', gateway);
  const { log: bulkLog } = await runExample('Bulk Messages', gateway);
  assert.deepEqual(bulkLog.map((l) => l.join(' ')), ['Sent: 3', 'Failed: 0']);
  await runExample('Message Templates', gateway);

  await runExample('Send Image with DataURL', gateway);
  const image = devices.flatMap((d) => d.commands).find((c) => c.type === 'send-image');
  assert.equal(image.data.caption, 'Check out this image!');
  await assert.rejects(runExample('Send Image from File Path', gateway), { code: 'MEDIA_NOT_ALLOWED' });
  for (const title of ['Send Image from HTTP URL', 'Send with Custom Timeout']) {
    await assert.rejects(runExample(title, gateway), (e) => ['FETCH_ERROR', 'MEDIA_NOT_ALLOWED'].includes(e.code), title);
  }

  const { log: sessionLog } = await runExample('Get Active Sessions', gateway);
  assert.deepEqual(sessionLog[0], ['Active devices:', 3]);
  const { log: canSend } = await runExample('Check if API Key Has Active Devices', gateway);
  assert.deepEqual(canSend, [['Can send messages']]);
  const { log: healthLog, routes } = await runExample('Gateway Health Check', gateway);
  assert.deepEqual(healthLog[0], ['Server Status:', 'running']);
  assert.deepEqual(healthLog[1], ['Active Sessions:', 3]);
  let served;
  await routes['GET /health']({}, { json: (body) => (served = body) });
  assert.equal(served.status, 'running');

  await runExample('Round-Robin (Default)', gateway);
  await runExample('Random Selection', gateway);
  const { log: spread } = await runExample('Testing Load Distribution', gateway);
  const usage = spread[0][1];
  assert.deepEqual(Object.values(usage).sort(), [33, 33, 34]);

  const { log: validation } = await runExample('Validation Errors', gateway);
  assert.deepEqual(validation, [
    ['Invalid input:', "Phone number must start with '+'"],
    ['Field:', 'phoneNumber'],
    ['Value:', '1234567890'],
  ]);
  await runExample('No Active Device', gateway);
  await runExample('Request Timeout', gateway);
  await runExample('Retry Logic with Exponential Backoff', gateway);
});

test('guide: no active device and request timeout paths', { timeout: 60_000, skip: guideSkip }, async (t) => {
  const { gateway, url } = await startGateway({ validKeys: [API_KEY] });
  t.after(() => gateway.stop());
  const { log } = await runExample('No Active Device', gateway);
  assert.deepEqual(log, [['No device connected']]);

  const silent = await new FakeExtension(url, { apiKey: API_KEY, respond: () => null }).connectReady(gateway);
  // The example waits 10 s, then retries with 20 s; answer the retry so it ends.
  const retried = new Promise((resolve) => {
    const timer = setInterval(() => {
      if (silent.commands.length === 2) {
        clearInterval(timer);
        silent.result(silent.commands[1].requestId, { success: true });
        resolve();
      }
    }, 20);
  });
  const { log: timeoutLog } = await runExample('Request Timeout', gateway);
  await retried;
  assert.deepEqual(timeoutLog[0], ['Request timed out']);
  assert.equal(timeoutLog[1][0], 'Request ID:');
  assert.equal(timeoutLog[1][1], silent.commands[0].requestId);
});

test('guide: TypeScript examples type-check against index.d.ts', { timeout: 120_000, skip: guideSkip }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-ts-'));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
    fs.writeFileSync(path.join(dir, 'basic.ts'), `${block('Basic TypeScript Setup', 'typescript')}\nexport {};\n`);
    fs.writeFileSync(
      path.join(dir, 'extended.ts'),
      `declare const db: { findUser(q: object): Promise<any> };\n${block('Custom Type Extensions', 'typescript')}\nexport {};\n`,
    );
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', '--module', 'esnext'];
    execFileSync(process.execPath, [tsc, ...flags, '--moduleResolution', 'bundler', 'basic.ts', 'extended.ts'], {
      cwd: dir,
      stdio: 'pipe',
    });
  } catch (error) {
    assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
