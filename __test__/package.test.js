'use strict';
// The path users take: `npm pack`, then `npm install <tarball>` into a fresh app with
// production dependencies only, which must build the addon and work from CommonJS,
// ESM and TypeScript.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function run(cmd, args, cwd, extraEnv = {}) {
  return execFileSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
    timeout: 600_000,
  });
}

test('the packed tarball installs into a fresh app, builds, and sends', { timeout: 900_000 }, async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-pack-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const tarball = run('npm', ['pack', '--silent', '--pack-destination', work], root).trim().split('\n').pop();
  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  // Reusing this checkout's cargo build directory only saves compile time: the
  // tarball's own install script still runs cargo and copies the addon.
  run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', path.join(work, tarball)], app, {
    CARGO_TARGET_DIR: path.join(root, 'target'),
  });
  const installed = path.join(app, 'node_modules', 'whatsapp-ws-extension-gateway');
  assert.ok(fs.existsSync(path.join(installed, 'gateway.node')), 'install built gateway.node');
  assert.ok(!fs.existsSync(path.join(installed, 'node_modules')), 'no dependencies were installed with it');

  // A client to play the extension: `ws` from this checkout, outside the app.
  const wsPath = require.resolve('ws');
  const script = `
    const { WhatsAppGateway, ERROR_CODES } = require('whatsapp-ws-extension-gateway');
    const WebSocket = require(${JSON.stringify(wsPath)});
    (async () => {
      const gateway = new WhatsAppGateway({ port: 0, host: '127.0.0.1', validateApiKey: () => ({ valid: true }) });
      await gateway.start();
      const ws = new WebSocket('ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws');
      ws.on('message', (raw) => {
        const f = JSON.parse(raw);
        if (f.type === 'authenticated') ws.send(JSON.stringify({ type: 'status', status: 'WhatsApp Web is logged in', ready: true }));
        if (f.type === 'send-message') ws.send(JSON.stringify({ type: 'message-result', requestId: f.requestId, success: true, messageId: 'm-1' }));
      });
      ws.on('open', () => ws.send(JSON.stringify({ type: 'authenticate', apiKey: 'packed-key-123' })));
      while (!gateway.getActiveSessions('packed-key-123').some((s) => s.deviceActive)) await new Promise((r) => setTimeout(r, 10));
      const result = await gateway.sendMessage('packed-key-123', { phoneNumber: '+1234567890', message: 'from the tarball' });
      ws.close();
      await gateway.stop();
      console.log(JSON.stringify({ messageId: result.messageId, code: ERROR_CODES.NO_ACTIVE_DEVICE }));
    })();
  `;
  const out = JSON.parse(run(process.execPath, ['-e', script], app).trim());
  assert.deepEqual(out, { messageId: 'm-1', code: 'NO_ACTIVE_DEVICE' });

  fs.writeFileSync(
    path.join(app, 'esm.mjs'),
    `import pkg, { WhatsAppGateway, ERROR_CODES, SERVER_MESSAGE_TYPES, EXTENSION_MESSAGE_TYPES } from 'whatsapp-ws-extension-gateway';
     const g = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }) });
     console.log(JSON.stringify([typeof pkg.WhatsAppGateway, ERROR_CODES.GATEWAY_SHUTDOWN, SERVER_MESSAGE_TYPES.PING, EXTENSION_MESSAGE_TYPES.AUTH, g.getHealth().status]));`,
  );
  const esm = JSON.parse(run(process.execPath, ['esm.mjs'], app).trim());
  assert.deepEqual(esm, ['function', 'GATEWAY_SHUTDOWN', 'ping', 'auth', 'stopped']);
});
