'use strict';
// What a new user (or a v1 app) meets first: v1's `||` defaults (README "new WhatsAppGateway(config)"), messages
// that name the fix for common mistakes, and the demo stopping on SIGTERM.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const express = require('express');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension } = require('./helpers');

const validateApiKey = () => ({ valid: true });
const PHONE = '+1234567890';

test("v1's `||` defaults: 0, NaN, '', null, undefined and false mean the default for v1's options", async (t) => {
  for (const unset of [0, NaN, '', null, undefined, false]) {
    const gateway = new WhatsAppGateway({
      validateApiKey,
      host: '127.0.0.1',
      port: unset,
      path: unset,
      server: unset,
      heartbeatInterval: unset,
      requestTimeout: unset,
      maxSessionsPerKey: unset,
      deviceSelectionStrategy: unset,
    });
    const health = gateway.getHealth();
    assert.equal(health.status, 'stopped', String(unset));
  }
  // The defaults really apply: requestTimeout NaN (an unset environment variable) is
  // 30000, maxSessionsPerKey 0 is 10, path '' is /wa-ext-ws. Port '0' picks a free port.
  const { gateway } = await startGateway({
    port: '0',
    requestTimeout: Number(process.env.WA_GATEWAY_SURELY_UNSET),
    maxSessionsPerKey: 0,
    path: '',
    deviceSelectionStrategy: '',
  });
  t.after(() => gateway.stop());
  const url = `ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`;
  const devices = [];
  for (let i = 0; i < 10; i++) devices.push(await new FakeExtension(url).connectReady(gateway));
  t.after(() => Promise.all(devices.map((d) => d.close())));
  const eleventh = new FakeExtension(url);
  await eleventh.open();
  await assert.rejects(eleventh.authenticate(), (e) => e.frame?.code === 'MAX_SESSIONS_EXCEEDED');
  const result = await gateway.sendMessage(devices[0].apiKey, { phoneNumber: PHONE, message: 'defaults' });
  assert.equal(result.success, true);
});

test('port 0 means the default 3000, as in v1', async () => {
  const gateway = new WhatsAppGateway({ validateApiKey, host: '127.0.0.1', port: 0 });
  try {
    await gateway.start();
    assert.equal(gateway.address().port, 3000);
  } catch (error) {
    // Something else on this machine has 3000: the refusal names it all the same.
    assert.equal(error.code, 'EADDRINUSE');
    assert.match(error.message, /port 3000 /);
  } finally {
    await gateway.stop();
  }
});

test('wrong values that v1 would not have skipped are still TypeErrors naming the option', () => {
  assert.throws(() => new WhatsAppGateway({ validateApiKey, maxSessionsPerKey: -1 }), /'maxSessionsPerKey'/);
  assert.throws(() => new WhatsAppGateway({ validateApiKey, deviceSelectionStrategy: 'fastest' }), /'deviceSelectionStrategy'/);
  assert.throws(() => new WhatsAppGateway({ validateApiKey, port: 70000 }), /'port'/);
});

test('an Express app passed as server says to pass http.createServer(app), without its source', () => {
  const app = express();
  app.get('/secret-route-source-marker', (_req, res) => res.send('x'));
  let error;
  try {
    new WhatsAppGateway({ validateApiKey, server: app });
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof TypeError);
  assert.match(error.message, /'server'/);
  assert.match(error.message, /http\.createServer\(app\)/);
  assert.match(error.message, /got a function/);
  assert.doesNotMatch(error.message, /\{|=>|next\)/, 'no function source in the message');
  assert.ok(error.message.length < 300, error.message);
});

test('a taken port: start() rejects EADDRINUSE naming the port and the fix', async (t) => {
  const blocker = net.createServer();
  await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => blocker.close());
  const { port } = blocker.address();
  const gateway = new WhatsAppGateway({ validateApiKey, host: '127.0.0.1', port });
  await assert.rejects(gateway.start(), (e) => {
    assert.equal(e.code, 'EADDRINUSE');
    assert.match(e.message, new RegExp(`port ${port} is already in use`));
    assert.match(e.message, /another 'port'/);
    assert.equal(e.details.port, port);
    return true;
  });
});

test('media sources without a scheme: the field the caller used, and a message that names the fix', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  t.after(() => ext.close());
  const base64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
  const send = (data) => gateway.sendImage(ext.apiKey, { phoneNumber: PHONE, ...data });

  await assert.rejects(send({ imageDataUrl: base64 }), (e) => {
    assert.equal(e.code, 'VALIDATION_ERROR');
    assert.equal(e.details.field, 'imageDataUrl');
    assert.match(e.message, /raw base64/);
    assert.match(e.message, /data:image\/png;base64,/);
    return true;
  });
  for (const [field, source] of [['imageUrl', '/tmp/x.png'], ['dataUrl', 'uploads/photo.jpg'], ['imageUrl', './x.png']]) {
    await assert.rejects(send({ [field]: source }), (e) => {
      assert.equal(e.code, 'VALIDATION_ERROR');
      assert.equal(e.details.field, field);
      assert.equal(e.details.value, source);
      assert.match(e.message, /file:\/\//);
      assert.match(e.message, /mediaFileRoots/);
      return true;
    });
  }
  assert.equal(ext.commands.length, 0);
});

test('details.value never holds a whole Buffer or a whole long string', async (t) => {
  const { gateway } = await startGateway();
  t.after(() => gateway.stop());
  const bytes = Buffer.alloc(50_000, 1);
  await assert.rejects(gateway.sendImage('some-key-0123456789', { phoneNumber: PHONE, dataUrl: bytes }), (e) => {
    assert.equal(e.details.field, 'dataUrl');
    assert.equal(typeof e.details.value, 'string');
    assert.match(e.details.value, /50000 bytes/);
    assert.match(e.message, /base64/);
    return true;
  });
  const long = 'x'.repeat(100_000);
  await assert.rejects(gateway.sendMessage('some-key-0123456789', { phoneNumber: long, message: 'm' }), (e) => {
    assert.ok(e.details.value.length < 200);
    assert.match(e.details.value, /100000 characters/);
    return true;
  });
});

test('the demo (npm start) stops cleanly on SIGTERM as on Ctrl+C', { timeout: 30_000 }, async () => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'examples', 'demo.js')], {
      env: { ...process.env, PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve({ code, sig })));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    while (!out.includes('Still serving') && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, /sendImage resolved/);
    child.kill(signal);
    const { code, sig } = await exited;
    clearTimeout(timer);
    assert.deepEqual({ code, sig }, { code: 0, sig: null }, out);
    assert.match(out, new RegExp(`${signal}: stopping`));
  }
});
