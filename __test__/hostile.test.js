'use strict';
// Hostile, slow and broken peers (README "Migrating from v1"): what the gateway answers to requests it
// does not take, and durations that would round to nothing.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

/** Sends raw bytes to the port; resolves with everything read once the server closes. */
function rawExchange(port, text, ms = 5000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${ms} ms; got ${JSON.stringify(data)}`));
    }, ms);
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(text);
  });
}

test('standalone: a plain HTTP request gets 426 Upgrade Required, on any path; the gateway keeps serving', async (t) => {
  const { gateway, port, url } = await startGateway();
  t.after(() => gateway.stop());
  for (const path of ['/', '/wa-ext-ws', '/health']) {
    const reply = await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    assert.match(reply, /^HTTP\/1\.1 426 Upgrade Required\r\n/, path);
    assert.match(reply, /\r\nUpgrade: websocket\r\n/i, path);
  }
  const posted = await rawExchange(port, 'POST /wa-ext-ws HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}');
  assert.match(posted, /^HTTP\/1\.1 426 /);
  // An upgrade on another path is still a 404, and garbage a 400.
  const other = await rawExchange(
    port,
    'GET /other HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  assert.match(other, /^HTTP\/1\.1 404 /);
  assert.match(await rawExchange(port, '\x16\x03\x01\x02\x00garbage\r\n\r\n'), /^HTTP\/1\.1 400 /);
  const huge = `GET /wa-ext-ws HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(16 * 1024)}\r\n\r\n`;
  assert.match(await rawExchange(port, huge), /^HTTP\/1\.1 431 /);
  await waitFor(() => gateway.getHealth().connections === 0, 3000, 'no connection left');
  const ext = new FakeExtension(url);
  await ext.connectReady(gateway);
  const sent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'still serving' });
  assert.equal(sent.success, true);
  await ext.close();
});

test('a duration option below 1 ms, or not finite, is a TypeError naming it', () => {
  const validateApiKey = () => ({ valid: true });
  const cases = [
    ['heartbeatInterval', 0.5],
    ['heartbeatInterval', Infinity],
    ['heartbeatTimeout', 0.999],
    ['heartbeatTimeout', -Infinity],
    ['requestTimeout', 0.25],
    ['authTimeout', 0],
    ['authTimeout', NaN],
    ['mediaFetchTimeout', 0.1],
  ];
  for (const [option, value] of cases) {
    assert.throws(
      () => new WhatsAppGateway({ validateApiKey, [option]: value }),
      (error) => error instanceof TypeError && error.message.includes(option),
      `${option}: ${value}`,
    );
  }
  for (const option of ['heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'authTimeout', 'mediaFetchTimeout']) {
    assert.doesNotThrow(() => new WhatsAppGateway({ validateApiKey, [option]: 1 }), option);
    assert.doesNotThrow(() => new WhatsAppGateway({ validateApiKey, [option]: 1.5 }), option);
  }
});

test("a call's timeout below 1 ms, or not finite, is a VALIDATION_ERROR; 1 ms is a real deadline", async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = new FakeExtension(url, { respond: () => null });
  await ext.connectReady(gateway);
  for (const timeout of [0.5, 0, -1, Infinity, NaN, '100']) {
    const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout }).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR', String(timeout));
    assert.equal(error.details.field, 'timeout');
    assert.match(error.message, /at least 1/);
  }
  assert.equal(ext.commands.length, 0, 'nothing was sent for an invalid call');
  const late = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout: 1.5 }).catch((e) => e);
  assert.equal(late.code, 'REQUEST_TIMEOUT');
  await ext.close();
});

// ---------------------------------------------------------------------------
// Sessions that stop reading, read slowly, or flood.

const WebSocket = require('ws');

/** A raw extension: authenticates (v1 dialect) and reports ready; nothing else. */
async function rawExtension(url, gateway, apiKey = GOOD_KEY) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  ws.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const authed = new Promise((resolve) => {
    ws.on('message', function onAuth(data) {
      if (JSON.parse(data.toString()).type === 'auth-success') {
        ws.off('message', onAuth);
        resolve();
      }
    });
  });
  ws.send(JSON.stringify({ type: 'auth', apiKey, data: { extensionVersion: '1', browser: 'test' } }));
  await authed;
  ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
  await waitFor(() => gateway.getActiveSessions(apiKey).some((s) => s.deviceActive), 3000, 'an active session');
  return ws;
}

const pngDataUrl = (bytes) =>
  `data:image/png;base64,${Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(bytes, 7)]).toString('base64')}`;

test('a session that stops reading and floods unknown frames is closed; stop() ends it within 5 s and leaves nothing', { timeout: 30_000 }, async (t) => {
  const { gateway, url } = await startGateway({ heartbeatInterval: 200, heartbeatTimeout: 1500 });
  t.after(() => gateway.stop());
  const ws = await rawExtension(url, gateway);
  ws._socket.pause();
  // Each unknown type is echoed in its error reply: replies as large as the flood.
  const flood = JSON.stringify({ type: `x${'y'.repeat(500 * 1024)}` });
  let stop = false;
  (async () => {
    while (!stop && ws.readyState === WebSocket.OPEN) {
      if (ws.bufferedAmount < 4 * 1024 * 1024) ws.send(flood);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  t.after(() => {
    stop = true;
    ws.terminate();
  });
  // The gateway notices the replies make no progress and drops the session.
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 0, 10_000, 'the stalled session to be dropped');
  // A second one, then stop() with it still flooding.
  const second = await rawExtension(url, gateway);
  second._socket.pause();
  const floodSecond = setInterval(() => second.bufferedAmount < 4 * 1024 * 1024 && second.send(flood), 2);
  t.after(() => {
    clearInterval(floodSecond);
    second.terminate();
  });
  await new Promise((r) => setTimeout(r, 300));
  const stopped = await Promise.race([
    gateway.stop().then(() => 'stopped'),
    new Promise((r) => setTimeout(() => r('still stopping after 5 s'), 5000)),
  ]);
  assert.equal(stopped, 'stopped');
  const health = gateway.getHealth();
  assert.equal(health.activeSessions, 0);
  assert.equal(health.connections, 0);
  // A send while stopped settles at once.
  const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(error.code, 'NO_ACTIVE_DEVICE');
  assert.equal(error.details.reason, 'not-running');
});

test('an extension on a slow line that keeps heartbeating receives a large command whole and is not dropped', { timeout: 40_000 }, async (t) => {
  const { gateway, url } = await startGateway({ heartbeatInterval: 200, heartbeatTimeout: 1000, requestTimeout: 30_000 });
  t.after(() => gateway.stop());
  const ws = await rawExtension(url, gateway);
  const beat = setInterval(() => ws.send(JSON.stringify({ type: 'heartbeat' })), 150);
  t.after(() => clearInterval(beat));
  // Reads about 4 MB/s: the ~17 MB command (two copies of ~8.5 MB) takes seconds to write.
  const socket = ws._socket;
  let allowance = 0;
  socket.on('data', (chunk) => {
    allowance -= chunk.length;
    if (allowance <= 0) socket.pause();
  });
  const pace = setInterval(() => {
    allowance = 200 * 1024;
    socket.resume();
  }, 50);
  t.after(() => clearInterval(pace));
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.type === 'send-image') {
      ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: 'slow-ok' }));
    }
  });
  const result = await gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', dataUrl: pngDataUrl(6 * 1024 * 1024) });
  assert.equal(result.messageId, 'slow-ok');
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1, 'still connected');
  ws.terminate();
});

test('maxQueuedBytes: sends to a session that reads nothing wait for room, and reject with BACKPRESSURE when their timeout ends', { timeout: 30_000 }, async (t) => {
  const maxQueuedBytes = 2 * 1024 * 1024;
  // The timeout ends while the later sends still wait for room (README "Delivery").
  const { gateway, url, events } = await startGateway({ maxQueuedBytes, heartbeatTimeout: 30_000, requestTimeout: 1000 });
  t.after(() => gateway.stop());
  const ws = await rawExtension(url, gateway);
  ws._socket.pause();
  t.after(() => ws.terminate());
  const image = pngDataUrl(256 * 1024);
  // More than the socket's buffers and maxQueuedBytes take.
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, () => gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', dataUrl: image }).catch((e) => e)),
  );
  const backpressure = outcomes.find((e) => e?.code === 'BACKPRESSURE');
  assert.ok(backpressure, 'a send was refused with BACKPRESSURE');
  const { sessionId, queuedBytes, maxQueuedBytes: limit, sent } = backpressure.details;
  assert.equal(sent, false, 'its command was never written');
  assert.equal(sessionId, gateway.getActiveSessions(GOOD_KEY)[0].sessionId);
  assert.equal(limit, maxQueuedBytes);
  assert.ok(queuedBytes > 0 && queuedBytes <= maxQueuedBytes, `queuedBytes ${queuedBytes}`);
  assert.ok(events.some((e) => e.type === 'send-failed' && e.details.code === 'BACKPRESSURE'));
});

// ---------------------------------------------------------------------------
// Connections before auth.

function upgrade(url, headers = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.on('error', () => {});
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      resolve({ ws, status: res.statusCode });
    });
  });
}

test('maxPendingAuth: one connection more than the cap gets HTTP 503; a slot is free again once one authenticates', async (t) => {
  const { gateway, url } = await startGateway({ maxPendingAuth: 3 });
  t.after(() => gateway.stop());
  const open = [];
  t.after(() => open.forEach((ws) => ws.terminate()));
  for (let i = 0; i < 3; i++) {
    const { ws, status } = await upgrade(url);
    open.push(ws);
    assert.equal(status, 101);
  }
  assert.equal((await upgrade(url)).status, 503);
  open[0].send(JSON.stringify({ type: 'auth', apiKey: GOOD_KEY }));
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 1, 3000, 'the session');
  const { ws, status } = await upgrade(url);
  open.push(ws);
  assert.equal(status, 101);
});

test('maxPendingAuthPerIp counts the client address; loopback peers are exempt without trustProxy', async (t) => {
  const open = [];
  t.after(() => open.forEach((ws) => ws.terminate()));
  const local = await startGateway({ maxPendingAuthPerIp: 2 });
  t.after(() => local.gateway.stop());
  for (let i = 0; i < 4; i++) {
    const { ws, status } = await upgrade(local.url);
    open.push(ws);
    assert.equal(status, 101, 'loopback is not capped per address');
  }
  const proxied = await startGateway({ maxPendingAuthPerIp: 2, trustProxy: true });
  t.after(() => proxied.gateway.stop());
  for (let i = 0; i < 2; i++) {
    const { ws, status } = await upgrade(proxied.url, { 'X-Real-IP': '203.0.113.5' });
    open.push(ws);
    assert.equal(status, 101);
  }
  assert.equal((await upgrade(proxied.url, { 'X-Real-IP': '203.0.113.5' })).status, 503);
  const other = await upgrade(proxied.url, { 'X-Real-IP': '203.0.113.6' });
  open.push(other.ws);
  assert.equal(other.status, 101, 'another address has its own count');
});

test('maxPreAuthPayload: a larger frame before auth closes with 1009, refused from its header; after auth maxPayload applies', async (t) => {
  const { gateway, url } = await startGateway({ maxPreAuthPayload: 4096, authTimeout: 5000 });
  t.after(() => gateway.stop());
  const big = (await upgrade(url)).ws;
  const bigClosed = new Promise((resolve) => big.on('close', resolve));
  big.send(JSON.stringify({ type: 'auth', apiKey: GOOD_KEY, pad: 'x'.repeat(8192) }));
  assert.equal(await bigClosed, 1009);

  // Only the header of a 1 MiB frame: the gateway does not wait for the body.
  const headerOnly = (await upgrade(url)).ws;
  const headerClosed = new Promise((resolve) => headerOnly.on('close', resolve));
  const header = Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]);
  headerOnly._socket.write(header);
  const outcome = await Promise.race([headerClosed, new Promise((r) => setTimeout(() => r('no close before authTimeout'), 4000))]);
  headerOnly.terminate();
  assert.equal(outcome, 1009);

  // Auth followed at once by a large frame, in one burst: the large one is after auth.
  const eager = (await upgrade(url)).ws;
  const replies = [];
  eager.on('message', (data) => replies.push(JSON.parse(data.toString()).type));
  eager.send(JSON.stringify({ type: 'auth', apiKey: OTHER_KEY }));
  eager.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true }, pad: 'p'.repeat(64 * 1024) }));
  await waitFor(() => gateway.getActiveSessions(OTHER_KEY).some((s) => s.deviceActive), 3000, 'the eager session to be ready');
  assert.ok(replies.includes('auth-success'));
  eager.terminate();

  const ext = new FakeExtension(url);
  await ext.connectReady(gateway);
  ext.send({ type: 'status', data: { whatsappLoggedIn: true, ready: true }, pad: 'z'.repeat(64 * 1024) });
  const sent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'after a large status' });
  assert.equal(sent.success, true);
  await ext.close();
});

// ---------------------------------------------------------------------------
// NO_ACTIVE_DEVICE says why.

test("NO_ACTIVE_DEVICE carries details.reason 'not-running', 'no-sessions' or 'none-ready', each with its own message", async (t) => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }) });
  const data = { phoneNumber: '+1234567890', message: 'x' };
  const reasons = {};
  const before = await gateway.sendMessage(GOOD_KEY, data).catch((e) => e);
  reasons[before.details.reason] = before.message;
  // Media is not even fetched while stopped.
  const media = await gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', imageUrl: 'http://192.0.2.1/never.png' }).catch((e) => e);
  assert.deepEqual([media.code, media.details.reason], ['NO_ACTIVE_DEVICE', 'not-running']);
  await gateway.start();
  t.after(() => gateway.stop());
  const none = await gateway.sendMessage(GOOD_KEY, data).catch((e) => e);
  reasons[none.details.reason] = none.message;
  const ext = new FakeExtension(`ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`);
  await ext.open();
  await ext.authenticate();
  ext.sendStatus(false);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 1, 3000, 'the session');
  const notReady = await gateway.sendMessage(GOOD_KEY, data).catch((e) => e);
  reasons[notReady.details.reason] = notReady.message;
  for (const error of [before, none, notReady]) assert.equal(error.code, 'NO_ACTIVE_DEVICE');
  assert.deepEqual(Object.keys(reasons).sort(), ['no-sessions', 'none-ready', 'not-running']);
  assert.equal(new Set(Object.values(reasons)).size, 3, 'three different messages');
  assert.match(reasons['not-running'], /not running/);
  await ext.close();
  await gateway.stop();
  const after = await gateway.sendMessage(GOOD_KEY, data).catch((e) => e);
  assert.deepEqual([after.code, after.details.reason], ['NO_ACTIVE_DEVICE', 'not-running']);
});

test('while stop() runs, a new send rejects GATEWAY_SHUTDOWN; once stopped, NO_ACTIVE_DEVICE with reason not-running', { timeout: 20_000 }, async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ws = await rawExtension(url, gateway);
  t.after(() => ws.terminate());
  ws._socket.pause();
  // A command larger than the socket buffers: stop() waits a little for its frame to end.
  const big = gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', dataUrl: pngDataUrl(8 * 1024 * 1024) }).catch((e) => e);
  await new Promise((r) => setTimeout(r, 300));
  const stopping = gateway.stop();
  const during = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(during.code, 'GATEWAY_SHUTDOWN');
  await stopping;
  assert.equal((await big).code, 'GATEWAY_SHUTDOWN');
  const after = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.deepEqual([after.code, after.details.reason], ['NO_ACTIVE_DEVICE', 'not-running']);
});
