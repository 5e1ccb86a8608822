'use strict';
// The Express example runs as a user would run it (`node examples/express-app.js`):
// an extension connects to it, its REST routes send, and /health and /metrics answer.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const parsePrometheus = require('parse-prometheus-text-format');
const { FakeExtension, waitFor } = require('./helpers');

const KEY = 'example-key-0123456789';

test('examples/express-app.js: attach, send over REST, health, metrics, SIGTERM', { timeout: 60_000 }, async (t) => {
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'examples', 'express-app.js')], {
    env: { ...process.env, PORT: '0', API_KEYS: `${KEY},second-key-0123456789` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => child.kill('SIGKILL'));

  const port = Number((await waitFor(() => /Listening on http:\/\/localhost:(\d+)/.exec(out), 10_000, 'the app to listen'))[1]);
  const base = `http://127.0.0.1:${port}`;
  const call = async (method, route, body, key = KEY) => {
    const res = await fetch(base + route, {
      method,
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body: body && JSON.stringify(body),
    });
    const type = res.headers.get('content-type') ?? '';
    return { status: res.status, type, body: type.includes('json') ? await res.json() : await res.text() };
  };

  const health = await call('GET', '/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'running');

  const early = await call('POST', '/api/send-message', { phoneNumber: '+1234567890', message: 'nobody there' });
  assert.equal(early.status, 409);
  assert.equal(early.body.code, 'NO_ACTIVE_DEVICE');

  const ext = await new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`, { apiKey: KEY });
  await ext.open();
  await ext.authenticate();
  ext.sendStatus(true);
  t.after(() => ext.close());
  let sessions;
  for (let i = 0; i < 100; i++) {
    sessions = await call('GET', '/api/sessions');
    if (sessions.body.some((s) => s.deviceActive)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(sessions.body[0].sessionId, ext.sessionId);

  const sent = await call('POST', '/api/send-message', { phoneNumber: '+1234567890', message: 'Hi from REST' });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  assert.equal(sent.body.success, true);
  assert.equal(ext.commands[0].data.message, 'Hi from REST');

  const png = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
  const image = await call('POST', '/api/send-image', { phoneNumber: '+1234567890', dataUrl: png, caption: 'dot' });
  assert.equal(image.status, 200, JSON.stringify(image.body));
  assert.equal(ext.commands[1].type, 'send-image');

  const invalid = await call('POST', '/api/send-message', { phoneNumber: '1234567890', message: 'x' });
  assert.equal(invalid.status, 400);
  assert.equal(invalid.body.code, 'VALIDATION_ERROR');
  assert.equal(invalid.body.details.field, 'phoneNumber');

  const metrics = await call('GET', '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.type, /^text\/plain/);
  const families = parsePrometheus(metrics.body);
  const sends = families.find((f) => f.name === 'wa_gateway_sends_total');
  const ok = sends.metrics.find((m) => m.labels.kind === 'message' && m.labels.outcome === 'success');
  assert.equal(ok.value, '1');

  const refused = new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`, { apiKey: 'not-listed-0123456789' });
  await refused.open();
  await assert.rejects(refused.authenticate(), (e) => e.frame?.code === 'AUTHENTICATION_FAILED');

  child.kill('SIGTERM');
  const { code, signal } = await exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, out);
  assert.match(out, /extension connected from 127\.0\.0\.1/);
});
