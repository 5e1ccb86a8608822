'use strict';
// Waiting for room, not failing (README "Delivery"): a send whose command would take its
// session past maxQueuedBytes waits, in order, for the socket to take bytes; it rejects
// BACKPRESSURE (details.sent: false) only if its timeout ends while it waits.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { startGateway, waitFor, GOOD_KEY } = require('./helpers');

const PHONE = '+1234567890';

const imageOf = (bytes) =>
  `data:image/png;base64,${Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), crypto.randomBytes(bytes)]).toString('base64')}`;

/**
 * An extension that answers every command with success, reading its frames cheaply
 * (a command of megabytes is not parsed whole). `commands` lists the captions in the
 * order they arrived. `pause()`/`resume()` stop and restart reading its socket.
 */
async function extension(url, gateway) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const commands = [];
  ws.on('message', (data) => {
    const head = data.toString('latin1', 0, Math.min(data.length, 400));
    if (head.includes('"type":"auth-success"')) {
      ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
      return;
    }
    if (head.includes('"type":"ping"')) return ws.send(JSON.stringify({ type: 'heartbeat' }));
    const id = head.match(/"requestId":"([^"]+)"/);
    if (!id) return;
    commands.push(head.match(/"(?:caption|message)":"(c\d+)/)?.[1]);
    ws.send(JSON.stringify({ type: 'message-result', requestId: id[1], success: true, messageId: `ok-${commands.length}` }));
  });
  ws.send(JSON.stringify({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '1', browser: 'test' } }));
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 5000, 'an active session');
  return {
    ws,
    commands,
    pause: () => ws._socket.pause(),
    resume: () => ws._socket.resume(),
  };
}

/** Runs `total` sends, `inFlight` at a time; resolves with each one's outcome, in call order. */
async function sendImages(gateway, total, inFlight, data) {
  const outcomes = new Array(total);
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const calledAt = Date.now();
      outcomes[i] = await gateway
        .sendImage(GOOD_KEY, { phoneNumber: PHONE, caption: `c${i}`, ...data(i) })
        .then(
          (result) => ({ ok: true, result, ms: Date.now() - calledAt }),
          (error) => ({ ok: false, error, ms: Date.now() - calledAt }),
        );
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return outcomes;
}

const failures = (outcomes) =>
  outcomes.filter((o) => !o.ok).map((o) => `${o.error.code}: ${o.error.message}`);

test('default config: 50 sends of 4 MiB images through one device, 8 at a time, all succeed, also while the extension stops reading for 2 s', { timeout: 180_000 }, async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await extension(url, gateway);
  t.after(() => ext.ws.terminate());
  const image = imageOf(4 * 1024 * 1024);
  // A slow network: nothing is read for 2 s, while the first sends queue up behind.
  ext.pause();
  setTimeout(ext.resume, 2000);
  const outcomes = await sendImages(gateway, 50, 8, () => ({ imageDataUrl: image }));
  assert.deepEqual(failures(outcomes), []);
  assert.equal(ext.commands.length, 50);
});

test('sends wait for room in the order they were made', { timeout: 120_000 }, async (t) => {
  const { gateway, url } = await startGateway({ maxQueuedBytes: 1024 * 1024 });
  t.after(() => gateway.stop());
  const ext = await extension(url, gateway);
  t.after(() => ext.ws.terminate());
  ext.pause();
  setTimeout(ext.resume, 1500);
  // Text: a media send's command is made once its media is loaded, and loads may end
  // in any order; the order of waiting for room is that of the commands.
  const text = 'x'.repeat(300 * 1024);
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `c${i} ${text}` }).then(
        () => ({ ok: true }),
        (error) => ({ ok: false, error }),
      ),
    ),
  );
  assert.deepEqual(failures(outcomes), []);
  assert.deepEqual(
    ext.commands,
    outcomes.map((_, i) => `c${i}`),
    'written in call order',
  );
});

test('a send rejects BACKPRESSURE (details.sent false) only when its timeout ends while it waits for room', { timeout: 120_000 }, async (t) => {
  const maxQueuedBytes = 1024 * 1024;
  const { gateway, url, events } = await startGateway({ maxQueuedBytes, heartbeatTimeout: 60_000 });
  t.after(() => gateway.stop());
  const ext = await extension(url, gateway);
  t.after(() => ext.ws.terminate());
  ext.pause();
  // Commands of about a third of maxQueuedBytes, more of them than the socket's buffers
  // and maxQueuedBytes take: the later ones wait. (Text: made in call order.)
  const text = 'x'.repeat(300 * 1024);
  const timeout = 2000;
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, (_, i) => {
      const calledAt = Date.now();
      return gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `c${i} ${text}`, timeout }).then(
        (result) => ({ ok: true, result, ms: Date.now() - calledAt }),
        (error) => ({ ok: false, error, ms: Date.now() - calledAt }),
      );
    }),
  );
  assert.ok(outcomes.every((o) => !o.ok), 'nothing was read: nothing succeeds');
  const codes = outcomes.map((o) => o.error.code);
  assert.ok(codes.every((c) => c === 'REQUEST_TIMEOUT' || c === 'BACKPRESSURE'), codes.join());
  const firstWaiting = codes.indexOf('BACKPRESSURE');
  assert.ok(firstWaiting > 0, `some were written, later ones waited: ${codes.join()}`);
  assert.ok(codes.slice(firstWaiting).every((c) => c === 'BACKPRESSURE'), 'those after the first that waited waited too');
  for (const { error, ms } of outcomes) {
    assert.ok(ms >= timeout - 50, `${error.code} came after ${ms} ms, before the timeout`);
    if (error.code === 'REQUEST_TIMEOUT') {
      assert.equal(error.details.sent, true);
      continue;
    }
    const { sessionId, queuedBytes, maxQueuedBytes: limit, sent, requestId } = error.details;
    assert.equal(sent, false);
    assert.equal(limit, maxQueuedBytes);
    assert.equal(sessionId, gateway.getActiveSessions(GOOD_KEY)[0].sessionId);
    assert.ok(queuedBytes > 0 && queuedBytes <= maxQueuedBytes, `queuedBytes ${queuedBytes}`);
    assert.match(requestId, /^[0-9a-f-]{36}$/);
  }
  assert.ok(events.some((e) => e.type === 'send-failed' && e.details.code === 'BACKPRESSURE'));
  // Those that waited were never written: once reading resumes, nothing more arrives.
  const written = codes.indexOf('BACKPRESSURE');
  ext.resume();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.ok(ext.commands.length <= written, `${ext.commands.length} commands arrived, ${written} were written`);
});

test('a command larger than maxQueuedBytes goes once its session has nothing queued', { timeout: 60_000 }, async (t) => {
  const { gateway, url } = await startGateway({ maxQueuedBytes: 64 * 1024 });
  t.after(() => gateway.stop());
  const ext = await extension(url, gateway);
  t.after(() => ext.ws.terminate());
  const image = imageOf(600 * 1024);
  const outcomes = await sendImages(gateway, 4, 4, () => ({ imageDataUrl: image }));
  assert.deepEqual(failures(outcomes), []);
});

test('sends waiting for room count in maxQueuedSends: one more rejects QUEUE_FULL (sent false) at once', { timeout: 60_000 }, async (t) => {
  const { gateway, url } = await startGateway({ maxQueuedBytes: 1024 * 1024, maxQueuedSends: 3 });
  t.after(() => gateway.stop());
  const ext = await extension(url, gateway);
  t.after(() => ext.ws.terminate());
  ext.pause();
  const image = imageOf(600 * 1024);
  const sends = Array.from({ length: 30 }, (_, i) =>
    gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, caption: `c${i}`, imageDataUrl: image }).then(
      () => null,
      (e) => e,
    ),
  );
  const refused = await Promise.race(sends.map((s) => s.then((e) => (e?.code === 'QUEUE_FULL' ? e : new Promise(() => {})))));
  assert.equal(refused.details.sent, false);
  assert.equal(refused.details.queued, 3);
  ext.resume();
  const outcomes = await Promise.all(sends);
  const codes = outcomes.map((e) => e?.code ?? 'ok');
  assert.ok(codes.every((c) => c === 'ok' || c === 'QUEUE_FULL'), codes.join());
  assert.equal(codes.filter((c) => c === 'ok').length, ext.commands.length);
});
