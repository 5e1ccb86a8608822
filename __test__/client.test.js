'use strict';
// The client for extension authors (docs/extension-protocol.md, "The client"), run in Node with `ws` as its WebSocket.
// Auth, status, commands, heartbeats, reconnection and refusals are observed against the
// real gateway; the 5.2 frames (message-ack, incoming-message / incoming-ack), which the
// gateway does not speak yet, against a small fake gateway that does.
const nodeTest = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { startGateway, waitFor, GOOD_KEY, PNG_1x1 } = require('./helpers');

const PHONE = '+15551234567';
const BASE = 20; // reconnectBaseDelay in these tests
const MAX = 200; // maxReconnectDelay in these tests
const root = path.resolve(__dirname, '..');

/** Every test is bounded in time: a client that never gets there fails instead of hanging. */
function test(name, options, fn) {
  if (typeof options === 'function') return nodeTest(name, { timeout: 20_000 }, options);
  return nodeTest(name, { timeout: 20_000, ...options }, fn);
}

let GatewayClient;
nodeTest.before(async () => {
  ({ GatewayClient } = await import('whatsapp-ws-extension-gateway/client'));
});

/** The delays the client must choose with random() = 0.5, from attempt 0 on. */
function expectedDelays(count) {
  return Array.from({ length: count }, (_, attempt) => Math.floor(0.5 * Math.min(MAX, BASE * 2 ** attempt)));
}

/**
 * A client with short timings, a fixed jitter (random() = 0.5) and a WebSocket class that
 * records every frame the client writes. Closed after the test.
 */
function newClient(t, url, options = {}) {
  const { origin, ...rest } = options;
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    constructor(address) {
      super(address, origin ? { origin } : undefined);
    }
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const client = new GatewayClient({
    url,
    apiKey: GOOD_KEY,
    extensionVersion: '3.1.4',
    browser: 'Chromium',
    WebSocket: RecordingWebSocket,
    reconnectBaseDelay: BASE,
    maxReconnectDelay: MAX,
    random: () => 0.5,
    ...rest,
  });
  const log = { open: [], authenticated: [], close: [], error: [] };
  for (const name of Object.keys(log)) client.on(name, (event) => log[name].push(event));
  t.after(() => client.close());
  return { client, sent, log };
}

function activeSession(gateway, sessionId) {
  return gateway.getActiveSessions(GOOD_KEY).find((s) => s.sessionId === sessionId && s.deviceActive);
}

/**
 * A gateway stand-in that speaks the delivery frames: it answers `auth` (unless
 * `holdAuth(conn)` says not yet) and records everything.
 */
async function startFakeGateway(t, onFrame = () => {}, { holdAuth = () => false } = {}) {
  const { WebSocketServer } = WebSocket;
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const connections = [];
  server.on('connection', (ws) => {
    const conn = { ws, frames: [], send: (frame) => ws.send(JSON.stringify(frame)) };
    connections.push(conn);
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString());
      conn.frames.push(frame);
      if (frame.type === 'auth' && !holdAuth(conn)) conn.send({ type: 'authenticated', sessionId: `fake-${connections.length}` });
      onFrame(conn, frame);
    });
  });
  t.after(
    () =>
      new Promise((resolve) => {
        for (const ws of server.clients) ws.terminate();
        server.close(resolve);
      }),
  );
  return {
    url: `ws://127.0.0.1:${server.address().port}/wa-ext-ws`,
    connections,
    frames: (type) => connections.flatMap((c) => c.frames).filter((f) => f.type === type),
  };
}

// ---- against the real gateway ----

for (const dialect of ['compat', 'v1', 'doc']) {
  test(`${dialect} gateway: authenticates once, is listed with its version and browser, answers commands`, async (t) => {
    const { gateway, url, events } = await startGateway({ dialect });
    t.after(() => gateway.stop());
    const { client, sent, log } = newClient(t, url);
    const seen = [];
    client.handle('send-message', async (data, context) => {
      seen.push({ data, context });
      return { messageId: `wa-${data.message}` };
    });
    client.handle('send-image', (data) => {
      seen.push({ data });
      return { messageId: 'wa-image' };
    });
    client.handle('send-document', () => {
      throw new Error('chat not found');
    });
    client.handle('send-video', () => ({ success: false, error: 'video too long' }));
    client.setStatus({ whatsappLoggedIn: true, ready: true });
    client.connect();

    await waitFor(() => log.authenticated.length === 1, 3000, 'authenticated');
    assert.deepEqual(sent[0], {
      type: 'auth',
      apiKey: GOOD_KEY,
      data: { extensionVersion: '3.1.4', browser: 'Chromium', fields: 'dataUrl' },
    });
    const { sessionId } = log.authenticated[0];
    assert.equal(client.sessionId, sessionId);
    assert.equal(client.connected, true);
    const session = await waitFor(() => activeSession(gateway, sessionId), 3000, 'active session');
    assert.equal(session.extensionVersion, '3.1.4');
    assert.equal(session.browser, 'Chromium');

    const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hello' });
    assert.equal(result.messageId, 'wa-hello');
    assert.equal(result.deviceInfo.sessionId, sessionId);
    assert.deepEqual(seen[0].data, { phoneNumber: PHONE, message: 'hello' });
    assert.deepEqual(seen[0].context, { requestId: result.requestId, type: 'send-message' });
    // The command came after both auth replies of 'compat': still one authentication.
    assert.equal(log.authenticated.length, 1);

    const image = await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'pic' });
    assert.equal(image.messageId, 'wa-image');
    assert.equal(seen[1].data.dataUrl, PNG_1x1, 'media is in data.dataUrl whatever field carried it');
    assert.equal(seen[1].data.imageDataUrl, undefined);
    assert.equal(seen[1].data.caption, 'pic');
    assert.equal(seen[1].data.mimeType, 'image/png');

    const thrown = await gateway.sendDocument(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1 }).catch((e) => e);
    assert.equal(thrown.code, 'EXTENSION_ERROR');
    assert.equal(thrown.details.error, 'chat not found');
    const refused = await gateway
      .sendVideo(GOOD_KEY, { phoneNumber: PHONE, dataUrl: 'data:video/mp4;base64,AAAA' })
      .catch((e) => e);
    assert.equal(refused.code, 'EXTENSION_ERROR');
    assert.equal(refused.details.error, 'video too long');

    const results = sent.filter((f) => f.type === 'message-result');
    assert.equal(results.length, 4, 'one result per command');
    assert.deepEqual(
      results.map((r) => r.success),
      [true, true, false, false],
    );
    assert.equal(events.filter((e) => e.type === 'session-connected').length, 1);
    assert.deepEqual(log.error, []);
  });
}

test('a command without a handler is answered with a failure', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const { client, log } = newClient(t, url);
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  await waitFor(() => log.authenticated.length && activeSession(gateway, client.sessionId), 3000, 'active session');
  const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
  assert.equal(error.code, 'EXTENSION_ERROR');
  assert.match(error.details.error, /no handler for 'send-message'/);
});

test('survives a gateway restart: reconnects with jittered backoff, re-sends its status, backoff resets after auth', async (t) => {
  const first = await startGateway();
  const { port } = first;
  let current = first.gateway;
  t.after(() => current.stop());
  const { client, log } = newClient(t, first.url);
  client.handle('send-message', (data) => ({ messageId: `wa-${data.message}` }));
  client.setStatus({ whatsappLoggedIn: true, ready: true, status: 'Ready to send' });
  client.connect();
  await waitFor(() => log.authenticated.length === 1, 3000, 'authenticated');
  const session = await waitFor(() => activeSession(first.gateway, client.sessionId), 3000, 'active session');
  assert.equal(session.status, 'Ready to send', 'status set before connect() was sent after auth');

  await first.gateway.stop();
  await waitFor(() => log.close.length >= 4, 5000, 'several tries while the gateway is down');
  assert.equal(log.close[0].code, 1001);
  assert.equal(client.connected, false);
  for (const close of log.close) assert.equal(close.willReconnect, true);

  const second = await startGateway({ port });
  current = second.gateway;
  await waitFor(() => log.authenticated.length === 2, 5000, 'authenticated again');
  const again = await waitFor(() => activeSession(second.gateway, client.sessionId), 3000, 'active session again');
  assert.equal(again.status, 'Ready to send', 'status re-sent after reconnecting');
  const result = await second.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after restart' });
  assert.equal(result.messageId, 'wa-after restart');
  const downtime = log.close.map((c) => c.reconnectDelay);
  assert.deepEqual(downtime, expectedDelays(downtime.length), 'uniform in [0, min(max, base * 2^attempt))');

  const before = log.close.length;
  await second.gateway.stop();
  await waitFor(() => log.close.length > before, 3000, 'close after the second stop');
  assert.equal(log.close[before].reconnectDelay, expectedDelays(1)[0], 'attempts start over after an authentication');
  assert.deepEqual(log.error, []);
});

test('answers pings while a long handler runs, and sends heartbeats of its own', async (t) => {
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 50, heartbeatTimeout: 150 });
  t.after(() => gateway.stop());
  const { client, sent, log } = newClient(t, url);
  client.handle('send-message', async () => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    return { messageId: 'slow' };
  });
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  await waitFor(() => log.authenticated.length && activeSession(gateway, client.sessionId), 3000, 'active session');
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'take your time', timeout: 5000 });
  assert.equal(result.messageId, 'slow');
  assert.equal(log.authenticated.length, 1, 'the session was never dropped');
  assert.equal(events.filter((e) => e.type === 'heartbeat-timeout').length, 0);
  assert.ok(sent.filter((f) => f.type === 'heartbeat').length >= 3);
  assert.deepEqual(
    sent.find((f) => f.type === 'heartbeat'),
    { type: 'heartbeat' },
  );

  // A gateway that pings once a minute hears from the client every heartbeatInterval.
  const quiet = await startGateway({ heartbeatInterval: 60_000 });
  t.after(() => quiet.gateway.stop());
  const other = newClient(t, quiet.url, { heartbeatInterval: 50 });
  other.client.connect();
  await waitFor(() => other.log.authenticated.length, 3000, 'authenticated');
  const [{ lastHeartbeat }] = quiet.gateway.getActiveSessions(GOOD_KEY);
  await waitFor(() => other.sent.filter((f) => f.type === 'heartbeat').length >= 3, 3000, 'unprompted heartbeats');
  await waitFor(
    () => quiet.gateway.getActiveSessions(GOOD_KEY)[0].lastHeartbeat > lastHeartbeat,
    3000,
    'gateway saw them',
  );
});

test('a refused key: error AUTHENTICATION_FAILED, close 1008, and the full maximum delay between tries', async (t) => {
  const { gateway, url } = await startGateway({ validKeys: ['someone-else-0123'] });
  t.after(() => gateway.stop());
  const { client, log } = newClient(t, url);
  client.connect();
  await waitFor(() => log.close.length >= 3, 3000, 'three refused tries');
  for (const close of log.close.slice(0, 3)) {
    assert.equal(close.code, 1008);
    assert.equal(close.willReconnect, true);
    assert.equal(close.reconnectDelay, MAX);
  }
  assert.ok(log.error.length >= 3);
  assert.equal(log.error[0].code, 'AUTHENTICATION_FAILED');
  assert.equal(log.error[0].closeCode, 1008);
  assert.ok(log.error[0] instanceof Error);
  assert.equal(log.authenticated.length, 0);
});

test('over the session limit: error MAX_SESSIONS_EXCEEDED, waits, and gets in once a place is free', async (t) => {
  const { gateway, url } = await startGateway({ maxSessionsPerKey: 1 });
  t.after(() => gateway.stop());
  const a = newClient(t, url);
  a.client.connect();
  await waitFor(() => a.log.authenticated.length, 3000, 'first client in');
  const b = newClient(t, url);
  b.client.connect();
  await waitFor(() => b.log.error.length, 3000, 'second client refused');
  assert.equal(b.log.error[0].code, 'MAX_SESSIONS_EXCEEDED');
  assert.equal(b.log.close[0].code, 1008);
  assert.equal(b.log.close[0].reconnectDelay, MAX);
  await a.client.close();
  await waitFor(() => b.log.authenticated.length, 3000, 'second client in after the first left');
});

test('a refused Origin (403) gets the normal backoff; the allowed one connects', async (t) => {
  const origin = 'chrome-extension://abcdefghijklmnopabcdefghijklmnop';
  const { gateway, url } = await startGateway({ allowedOrigins: [origin] });
  t.after(() => gateway.stop());
  const refused = newClient(t, url);
  refused.client.connect();
  await waitFor(() => refused.log.close.length >= 4, 3000, 'refused tries');
  const delays = refused.log.close.map((c) => c.reconnectDelay);
  assert.deepEqual(delays, expectedDelays(delays.length));
  assert.ok(refused.log.close.every((c) => c.code !== 1008 && c.willReconnect));
  assert.equal(refused.log.open.length, 0);

  const allowed = newClient(t, url, { origin });
  allowed.client.connect();
  await waitFor(() => allowed.log.authenticated.length, 3000, 'allowed origin authenticated');
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
});

test('a wrong path (404) or a refused Origin (403): error CONNECTION_FAILED naming the status at each try, normal backoff', async (t) => {
  const origin = 'chrome-extension://abcdefghijklmnopabcdefghijklmnop';
  const { gateway, url } = await startGateway({ allowedOrigins: [origin] });
  t.after(() => gateway.stop());
  const cases = [
    { url: url.replace('/wa-ext-ws', '/wrong-path?token=secret'), options: { origin }, status: 404, hint: /wrong path/ },
    { url, options: {}, status: 403, hint: /allowedOrigins/ },
  ];
  for (const { url: target, options, status, hint } of cases) {
    const { client, log } = newClient(t, target, options);
    client.connect();
    await waitFor(() => log.error.length >= 3 && log.close.length >= 3, 3000, `three refused tries (${status})`);
    for (const [i, error] of log.error.slice(0, 3).entries()) {
      assert.ok(error instanceof Error);
      assert.equal(error.code, 'CONNECTION_FAILED');
      assert.equal(error.status, status);
      assert.match(error.message, new RegExp(`HTTP ${status}`));
      assert.match(error.message, hint);
      assert.doesNotMatch(error.message, /secret/, 'the query string is left out');
      assert.match(error.message, new RegExp(`next try in ${log.close[i].reconnectDelay} ms`));
    }
    const delays = log.close.map((c) => c.reconnectDelay);
    assert.deepEqual(delays, expectedDelays(delays.length), 'the normal backoff');
    assert.ok(log.close.every((c) => c.code === 1006 && c.willReconnect));
    assert.equal(log.open.length, 0);
    await client.close();
  }
});

/**
 * What a browser's WebSocket shows of a failed connect: a bare `error` event and close
 * 1006, never the HTTP status.
 */
class BrowserLikeWebSocket {
  static OPEN = 1;
  constructor(url) {
    this.ws = new WebSocket(url);
    this.ws.on('open', () => this.onopen?.({ type: 'open' }));
    this.ws.on('message', (data) => this.onmessage?.({ type: 'message', data: data.toString() }));
    this.ws.on('error', () => this.onerror?.({ type: 'error' }));
    this.ws.on('close', (code, reason) => this.onclose?.({ type: 'close', code, reason: reason.toString() }));
  }
  get readyState() {
    return this.ws.readyState;
  }
  send(data) {
    this.ws.send(data);
  }
  close(code, reason) {
    this.ws.close(code, reason);
  }
}

test('where the status is hidden (browsers): error CONNECTION_FAILED after three failed connects in a row without an open', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const wrong = newClient(t, url.replace('/wa-ext-ws', '/wrong-path'), { WebSocket: BrowserLikeWebSocket });
  const closesAtError = [];
  wrong.client.on('error', () => closesAtError.push(wrong.log.close.length));
  wrong.client.connect();
  await waitFor(() => wrong.log.error.length >= 2, 3000, 'two errors');
  assert.deepEqual(closesAtError.slice(0, 2), [3, 4], 'the first error comes with the third failed connect');
  const [error] = wrong.log.error;
  assert.equal(error.code, 'CONNECTION_FAILED');
  assert.equal(error.status, null);
  assert.equal(error.failedConnects, 3);
  assert.match(error.message, /3 tries in a row/);
  assert.match(error.message, /404 for a wrong path, 403 for an Origin/);
  const delays = wrong.log.close.map((c) => c.reconnectDelay);
  assert.deepEqual(delays, expectedDelays(delays.length), 'the normal backoff');
  await wrong.client.close();

  // Failures that an open interrupts do not add up.
  let refuse = 2;
  const sockets = [];
  class FlakyWebSocket extends BrowserLikeWebSocket {
    constructor(address) {
      super(refuse-- > 0 ? address.replace('/wa-ext-ws', '/down') : address);
      sockets.push(this);
    }
  }
  const flaky = newClient(t, url, { WebSocket: FlakyWebSocket });
  flaky.client.connect();
  await waitFor(() => flaky.log.authenticated.length === 1, 3000, 'authenticated after two failures');
  refuse = 2;
  sockets.at(-1).ws.terminate(); // the connection drops
  await waitFor(() => flaky.log.authenticated.length === 2, 3000, 'authenticated again after two more failures');
  assert.equal(flaky.log.close.length, 5);
  assert.equal(flaky.log.error.length, 0, 'two failures, an open, two failures: no error');
});

test('close(): code 1000, no reconnection, also from the backoff wait', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const { client, log } = newClient(t, url);
  client.connect();
  await waitFor(() => log.authenticated.length, 3000, 'authenticated');
  await client.close();
  assert.deepEqual(log.close, [{ code: 1000, reason: 'Client closed', willReconnect: false, reconnectDelay: null }]);
  assert.equal(client.connected, false);
  const gone = await waitFor(
    () => events.find((e) => e.type === 'session-disconnected'),
    3000,
    'gateway saw the close',
  );
  assert.equal(gone.details.code, 1000);
  await new Promise((resolve) => setTimeout(resolve, 2 * MAX));
  assert.equal(log.open.length, 1, 'no new connection after close()');
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 0);

  // connect() again, even before the previous close() has finished.
  client.connect();
  await waitFor(() => log.authenticated.length === 2, 3000, 'authenticated again');
  const closing = client.close();
  client.connect();
  await closing;
  await waitFor(() => log.authenticated.length === 3, 3000, 'authenticated a third time');
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 1, 3000, 'one session left');
  assert.equal(gateway.getActiveSessions(GOOD_KEY)[0].sessionId, client.sessionId);
  await client.close();

  // Closed while waiting to reconnect (nothing listens on this port any more).
  const { port } = gateway.address();
  await gateway.stop();
  const waiting = newClient(t, `ws://127.0.0.1:${port}/wa-ext-ws`);
  waiting.client.connect();
  await waitFor(() => waiting.log.close.length, 3000, 'a failed try');
  await waiting.client.close();
  const tries = waiting.log.close.length;
  await new Promise((resolve) => setTimeout(resolve, 2 * MAX));
  assert.equal(waiting.log.close.length, tries, 'no tries after close()');
});

test('in Node with its own global WebSocket, and close() leaves nothing that keeps the process alive', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const script = `
    import { GatewayClient } from 'whatsapp-ws-extension-gateway/client';
    const client = new GatewayClient({ url: process.env.GATEWAY_URL, apiKey: process.env.API_KEY, browser: 'node' });
    client.handle('send-message', () => {
      setTimeout(() => client.close(), 50);
      return { messageId: 'from-global-websocket' };
    });
    client.setStatus({ whatsappLoggedIn: true, ready: true });
    client.connect();
  `;
  // Node 22+ has a global WebSocket; Node 20 has it behind a flag.
  const flags = typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket'];
  const child = spawn(process.execPath, [...flags, '--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, GATEWAY_URL: url, API_KEY: GOOD_KEY },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = once(child, 'exit');
  t.after(() => child.exitCode === null && child.kill());
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 5000, 'the child to connect');
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi' });
  assert.equal(result.messageId, 'from-global-websocket');
  const [code] = await exited;
  assert.equal(code, 0, stderr);
});

// ---- the 5.2 frames, against a fake gateway ----

test('status, acks and their queue: frames as docs/extension-protocol.md says, acks made offline sent after auth, bounded', async (t) => {
  const fake = await startFakeGateway(t);
  const { client, log } = newClient(t, fake.url, { maxQueuedAcks: 2 });
  client.setStatus({ whatsappLoggedIn: true, ready: true, status: 'Ready' });
  client.ack('r1', 'server');
  client.ack('r2', 'delivered', 'wa-2');
  client.ack('r3', 'read');
  client.connect();
  await waitFor(() => fake.frames('message-ack').length === 2, 3000, 'queued acks');
  const [conn] = fake.connections;
  assert.deepEqual(
    conn.frames.map((f) => f.type),
    ['auth', 'status', 'message-ack', 'message-ack'],
  );
  assert.deepEqual(conn.frames[1], { type: 'status', data: { whatsappLoggedIn: true, ready: true, status: 'Ready' } });
  assert.deepEqual(fake.frames('message-ack'), [
    { type: 'message-ack', requestId: 'r2', ack: 'delivered', messageId: 'wa-2' },
    { type: 'message-ack', requestId: 'r3', ack: 'read' },
  ]);
  client.ack('r4', 'played');
  client.setStatus({ whatsappLoggedIn: false, ready: false });
  await waitFor(() => conn.frames.length === 6, 3000, 'ack and status while connected');
  assert.deepEqual(conn.frames.slice(4), [
    { type: 'message-ack', requestId: 'r4', ack: 'played' },
    { type: 'status', data: { whatsappLoggedIn: false, ready: false } },
  ]);
  assert.equal(log.authenticated[0].sessionId, 'fake-1');
});

test('receive(): re-sent every interval and after a reconnect until incoming-ack, then resolves', async (t) => {
  let copies = 0;
  const fake = await startFakeGateway(t, (conn, frame) => {
    if (frame.type !== 'incoming-message') return;
    copies += 1;
    if (copies === 2) conn.ws.close(1011, 'gateway trouble'); // lost before it could ack
    if (copies === 4) conn.send({ type: 'incoming-ack', messageId: frame.data.messageId });
  });
  const { client, log } = newClient(t, fake.url, { receiveRetryInterval: 50 });
  const message = { messageId: 'in-1', from: '+15550001111', chatId: 'c1', body: 'hi', timestamp: 1700000000000 };
  client.connect();
  const received = client.receive(message);
  assert.equal(client.receive(message), received, 'the same messageId shares one pending call');
  assert.deepEqual(await received, { messageId: 'in-1' });
  assert.equal(fake.connections.length, 2);
  assert.equal(log.close[0].code, 1011);
  assert.ok(
    fake.connections[1].frames.some((f) => f.type === 'incoming-message'),
    're-sent after reconnecting',
  );
  for (const frame of fake.frames('incoming-message'))
    assert.deepEqual(frame, { type: 'incoming-message', data: message });
  const sentSoFar = fake.frames('incoming-message').length;
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(fake.frames('incoming-message').length, sentSoFar, 'no re-sends after the ack');
});

test('receive(): INVALID_MESSAGE with its messageId rejects and stops retries; other error frames are error events', async (t) => {
  const fake = await startFakeGateway(t, (conn, frame) => {
    if (frame.type === 'incoming-message') {
      conn.send({
        type: 'error',
        code: 'INVALID_MESSAGE',
        message: 'media too large',
        error: { code: 'INVALID_MESSAGE', message: 'media too large' },
        messageId: frame.data.messageId,
      });
    }
    if (frame.type === 'message-ack')
      conn.send({
        type: 'error',
        error: { code: 'UNKNOWN_MESSAGE_TYPE', message: 'Unknown message type: message-ack' },
      });
  });
  const { client, log } = newClient(t, fake.url, { receiveRetryInterval: 50 });
  client.connect();
  const error = await client.receive({ messageId: 'big', from: '+1555', timestamp: 1 }).catch((e) => e);
  assert.equal(error.code, 'INVALID_MESSAGE');
  assert.equal(error.message, 'media too large');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(fake.frames('incoming-message').length, 1, 'no retries after the rejection');

  client.ack('r1', 'read');
  await waitFor(() => log.error.length, 3000, 'error event');
  assert.equal(log.error[0].code, 'UNKNOWN_MESSAGE_TYPE');
  assert.equal(log.error[0].frame.type, 'error');
});

test('the auth reply says what the gateway takes: the authenticated event and client.limits carry it', async (t) => {
  const { gateway, url } = await startGateway({ maxPayload: 64 * 1024, maxMediaBytes: 32 * 1024 });
  t.after(() => gateway.stop());
  const { client, log } = newClient(t, url);
  assert.equal(client.limits, null, 'not known before auth');
  client.connect();
  await waitFor(() => log.authenticated.length === 1, 3000, 'authenticated');
  const limits = { maxPayload: 64 * 1024, maxMediaBytes: 32 * 1024 };
  assert.deepEqual(log.authenticated[0], { sessionId: client.sessionId, limits });
  assert.deepEqual(client.limits, limits);
});

test('receive(): a message whose frame would pass maxPayload rejects INVALID_MESSAGE at once, without sending or reconnecting', async (t) => {
  const { gateway, url, events } = await startGateway({ maxPayload: 64 * 1024 });
  t.after(() => gateway.stop());
  const { client, sent, log } = newClient(t, url);
  const message = (messageId, body) => ({ messageId, from: PHONE, timestamp: 1, body });
  // Made before the first auth: refused once the limits are known, never sent.
  const early = client.receive(message('early', 'x'.repeat(70 * 1024))).catch((e) => e);
  client.connect();
  await waitFor(() => log.authenticated.length === 1, 3000, 'authenticated');
  const refused = await early;
  assert.equal(refused.code, 'INVALID_MESSAGE');
  assert.equal(refused.messageId, 'early');
  // Counted in UTF-8 bytes, as it would go out: fewer characters than maxPayload, more bytes.
  const started = Date.now();
  const late = await client.receive(message('late', 'é'.repeat(33 * 1024))).catch((e) => e);
  assert.equal(late.code, 'INVALID_MESSAGE');
  assert.match(late.message, /maxPayload 65536/);
  assert.ok(Date.now() - started < 1000, 'at once');
  // One that fits goes through.
  assert.deepEqual(await client.receive(message('fits', 'hello')), { messageId: 'fits' });
  assert.deepEqual(
    sent.filter((f) => f.type === 'incoming-message').map((f) => f.data.messageId),
    ['fits'],
    'only the one that fits was sent',
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(log.close, [], 'the connection stayed up');
  assert.equal(log.authenticated.length, 1);
  assert.equal(events.filter((e) => e.type === 'message-received').length, 1);
});

test('receive(): bounded, and close() rejects what is pending', async (t) => {
  const fake = await startFakeGateway(t); // never acks
  const { client } = newClient(t, fake.url, { maxPendingReceives: 2 });
  client.connect();
  const one = client.receive({ messageId: 'a', from: '+1', timestamp: 1 });
  const two = client.receive({ messageId: 'b', from: '+1', timestamp: 2 });
  const full = await client.receive({ messageId: 'c', from: '+1', timestamp: 3 }).catch((e) => e);
  assert.equal(full.code, 'QUEUE_FULL');
  const invalid = await client.receive({ from: '+1' }).catch((e) => e);
  assert.ok(invalid instanceof TypeError);
  await waitFor(() => fake.frames('incoming-message').length === 2, 3000, 'both sent');
  const outcomes = Promise.all([one, two].map((pending) => pending.catch((e) => e)));
  await client.close();
  for (const error of await outcomes) assert.equal(error.code, 'CLIENT_CLOSED');
});

test('each command is answered at most once; a result its connection lost goes on the next one, once', async (t) => {
  let release;
  const slow = new Promise((resolve) => {
    release = resolve;
  });
  const fake = await startFakeGateway(t, (conn, frame) => {
    if (frame.type !== 'auth') return;
    if (conn === fake.connections[0]) {
      const command = { type: 'send-message', requestId: 'req-1', data: { phoneNumber: PHONE, message: 'once' } };
      conn.send(command);
      conn.send(command); // delivered twice
    } else {
      conn.send({ type: 'ping' });
    }
  });
  const { client, log } = newClient(t, fake.url);
  const calls = [];
  client.handle('send-message', async (data, { requestId }) => {
    calls.push(requestId);
    if (calls.length === 1) return { messageId: 'wa-once' };
    await slow;
    return { messageId: 'wa-late' };
  });
  client.connect();
  await waitFor(() => fake.frames('message-result').length === 1, 3000, 'a result');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(calls, ['req-1']);
  assert.equal(fake.frames('message-result').length, 1);
  const [result] = fake.frames('message-result');
  assert.equal(result.requestId, 'req-1');
  assert.equal(result.success, true);
  assert.equal(result.messageId, 'wa-once');
  assert.equal(typeof result.timestamp, 'number');

  // A command whose connection is lost while its handler runs is answered on the next
  // connection: the gateway takes it as the send's late truth.
  fake.connections[0].send({ type: 'send-message', requestId: 'req-2', data: { phoneNumber: PHONE, message: 'slow' } });
  await waitFor(() => calls.length === 2, 3000, 'second command taken');
  fake.connections[0].ws.close(1011);
  await waitFor(
    () => fake.connections[1]?.frames.some((f) => f.type === 'heartbeat'),
    3000,
    'reconnected, ping answered',
  );
  release();
  await slow;
  await waitFor(() => fake.connections[1].frames.some((f) => f.type === 'message-result'), 3000, 'the late result');
  const late = fake.connections[1].frames.filter((f) => f.type === 'message-result');
  assert.deepEqual(late.map((r) => [r.requestId, r.messageId]), [['req-2', 'wa-late']]);
  client.setStatus({ whatsappLoggedIn: true, ready: true }); // a frame after the handler's settlement
  await waitFor(() => fake.connections[1].frames.some((f) => f.type === 'status'), 3000, 'status');
  assert.equal(fake.frames('message-result').length, 2, 'each result sent once');
  assert.equal(log.authenticated.length, 2);
});

test('results that could not be sent wait for the next authentication, oldest first, at most 1000', async (t) => {
  let holding = false;
  const fake = await startFakeGateway(t, () => {}, { holdAuth: () => holding });
  const { client, log } = newClient(t, fake.url);
  const releases = [];
  client.handle('send-message', (data) => new Promise((resolve) => releases.push(() => resolve({ messageId: `wa-${data.message}` }))));
  client.connect();
  await waitFor(() => log.authenticated.length === 1, 3000, 'authenticated');
  for (let i = 0; i < 1002; i++) {
    fake.connections[0].send({ type: 'send-message', requestId: `r-${i}`, data: { phoneNumber: PHONE, message: String(i) } });
  }
  await waitFor(() => releases.length === 1002, 5000, 'every command taken');
  // Disconnected, and not let back in until the handlers are done.
  holding = true;
  fake.connections[0].ws.close(1011);
  await waitFor(() => fake.connections[1]?.frames.some((f) => f.type === 'auth'), 3000, 'connected again, auth held');
  for (const release of releases) release();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(fake.frames('message-result').length, 0, 'nothing sent before the authentication');
  holding = false;
  fake.connections[1].send({ type: 'authenticated', sessionId: 'fake-again' });
  await waitFor(() => log.authenticated.length === 2, 5000, 'authenticated again');
  await waitFor(() => fake.frames('message-result').length === 1000, 5000, 'the kept results');
  const ids = fake.frames('message-result').map((r) => r.requestId);
  assert.equal(ids[0], 'r-2', 'the oldest two were dropped for the bound');
  assert.equal(ids.at(-1), 'r-1001');
  const [first] = fake.frames('message-result');
  const authAt = fake.connections.at(-1).frames.findIndex((f) => f.type === 'auth');
  const resultAt = fake.connections.at(-1).frames.findIndex((f) => f.type === 'message-result');
  assert.ok(authAt !== -1 && authAt < resultAt, 'sent after the authentication');
  assert.equal(first.messageId, 'wa-2');
});

test('against the gateway: a result given after the connection dropped makes the unknown send sent, with a late image-sent', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const sockets = [];
  class TrackedWebSocket extends WebSocket {
    constructor(address) {
      super(address);
      sockets.push(this);
    }
  }
  const { client, log } = newClient(t, url, { WebSocket: TrackedWebSocket });
  let release;
  client.handle('send-image', () => new Promise((resolve) => (release = () => resolve({ messageId: 'wa-img' }))));
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  await waitFor(() => log.authenticated.length === 1 && activeSession(gateway, client.sessionId), 3000, 'active');
  const sending = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, idempotencyKey: 'img-1' }).catch((e) => e);
  await waitFor(() => release, 3000, 'the handler to run');
  sockets[0].terminate();
  const lost = await sending;
  assert.equal(lost.code, 'CONNECTION_LOST');
  assert.equal(gateway.getMessageStatus(lost.details.requestId).state, 'unknown');
  await waitFor(() => log.authenticated.length === 2, 3000, 'reconnected');
  release();
  const late = await waitFor(() => events.find((e) => e.type === 'image-sent'), 3000, 'the late image-sent');
  assert.equal(late.late, true);
  assert.equal(late.requestId, lost.details.requestId);
  assert.equal(gateway.getMessageStatus(lost.details.requestId).state, 'sent');
  const retry = await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, idempotencyKey: 'img-1' });
  assert.equal(retry.duplicate, true);
  assert.equal(retry.messageId, 'wa-img');
});

test('a listener that throws is reported as an error event and breaks nothing', async (t) => {
  const fake = await startFakeGateway(t);
  const { client, log } = newClient(t, fake.url);
  client.on('authenticated', () => {
    throw new Error('listener bug');
  });
  client.on('error', () => {
    throw new Error('error listener bug too');
  });
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  await waitFor(() => fake.frames('status').length, 3000, 'status after auth');
  assert.equal(log.error[0].code, 'LISTENER_ERROR');
  assert.match(log.error[0].message, /listener bug/);
});

// ---- construction, packaging, types ----

test('options are checked; without a WebSocket class it says to pass one', () => {
  assert.throws(() => new GatewayClient({ apiKey: 'k', WebSocket }), /'url'/);
  assert.throws(() => new GatewayClient({ url: 'http://x', apiKey: 'k', WebSocket }), /ws:\/\/ or wss:\/\//);
  assert.throws(() => new GatewayClient({ url: 'ws://x', WebSocket }), /'apiKey'/);
  assert.throws(
    () => new GatewayClient({ url: 'ws://x', apiKey: 'k', WebSocket, heartbeatInterval: 0 }),
    /'heartbeatInterval'/,
  );
  const client = new GatewayClient({ url: 'ws://x', apiKey: 'k', WebSocket });
  assert.throws(() => client.handle('send-mesage', () => {}), TypeError);
  assert.throws(() => client.on('opne', () => {}), TypeError);
  assert.equal(client.connected, false, 'the constructor does not connect');
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  delete globalThis.WebSocket;
  try {
    assert.throws(() => new GatewayClient({ url: 'ws://x', apiKey: 'k' }), /pass a WebSocket class/);
  } finally {
    if (descriptor) Object.defineProperty(globalThis, 'WebSocket', descriptor);
  }
});

test('one file with no imports and no Node APIs, shipped with its types', () => {
  const source = fs.readFileSync(path.join(root, 'client/gateway-client.mjs'), 'utf8');
  assert.doesNotMatch(source, /^\s*import[\s{(]/m);
  assert.doesNotMatch(source, /\bimport\(|\brequire\(|\bprocess\.|\bBuffer\b/);
  const packed = JSON.parse(
    execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }),
  );
  const files = packed[0].files.map((f) => f.path);
  assert.ok(files.includes('client/gateway-client.mjs'));
  assert.ok(files.includes('client/gateway-client.d.mts'));
});

test('types: a TypeScript extension compiles against the ./client export', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(root, '.tmp-client-types-'));
  try {
    fs.writeFileSync(
      path.join(dir, 'extension.mts'),
      `import { GatewayClient, type CloseEvent } from 'whatsapp-ws-extension-gateway/client';
       const client = new GatewayClient({ url: 'ws://127.0.0.1:3000/wa-ext-ws', apiKey: 'k', extensionVersion: '1', browser: 'Chrome' });
       client.handle('send-message', async (data, { requestId, type }) => ({ messageId: data.phoneNumber + requestId + type }));
       client.handle('send-image', (data) => (data.dataUrl ? { messageId: 'x' } : { success: false, error: 'no media' }));
       client.on('authenticated', ({ sessionId }) => sessionId.toUpperCase());
       client.on('close', (event: CloseEvent) => event.willReconnect && event.reconnectDelay);
       client.on('error', (error) => error.code);
       client.setStatus({ whatsappLoggedIn: true, ready: true, status: 'ok' });
       client.ack('r', 'read');
       const received: Promise<{ messageId: string }> = client.receive({ messageId: 'm', from: '+1', timestamp: 1 });
       client.connect();
       void received;
       void client.close();
       // @ts-expect-error unknown command
       client.handle('send-mesage', () => {});
       client.handle('check-number', async (data: { phoneNumber: string }, { requestId, type }) => ({ onWhatsApp: data.phoneNumber !== requestId + type }));
       client.handle('react', () => { throw Object.assign(new Error('gone'), { code: 'CHAT_NOT_FOUND' }); });
       client.handle('send-video', () => ({ success: false, error: 'too long', code: 'INVALID_MEDIA' }));
       // @ts-expect-error unknown ack
       client.ack('r', 'seen');
       export {};
      `,
    );
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = [
      '--noEmit',
      '--strict',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--target',
      'es2022',
    ];
    try {
      execFileSync(process.execPath, [tsc, ...flags, 'extension.mts'], { cwd: dir, encoding: 'utf8' });
    } catch (error) {
      assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
