'use strict';
// Delivery (README): acks and waitFor, getMessageStatus, least-busy, idempotency keys,
// incoming messages, against real extensions on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const PHONE = '+1234567890';

/** An extension that answers nothing by itself; the test answers for it. */
function silent(url, options = {}) {
  return new FakeExtension(url, { respond: () => null, ...options });
}

/** Waits for the n-th command (1-based) the extension got. */
function nthCommand(ext, n) {
  return waitFor(() => ext.commands[n - 1], 3000, `command ${n}`);
}

function ack(ext, requestId, level, messageId) {
  ext.send({ type: 'message-ack', requestId, ack: level, ...(messageId ? { messageId } : {}) });
}

/** A frame round trip: everything the extension sent before it has been handled. */
async function barrier(ext) {
  ext.send('barrier, not json');
  await ext.next((f) => f.type === 'error' && f.code === 'INVALID_MESSAGE' && f.messageId === undefined);
}

test("waitFor 'delivered' resolves on the first ack at or above it, with ack; the *-sent event fires on the result", async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  let settled = null;
  const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi', waitFor: 'delivered' });
  sending.then((r) => (settled = r));
  const command = await nthCommand(ext, 1);
  ext.result(command.requestId, { success: true, messageId: 'wa-1' });
  await waitFor(() => events.find((e) => e.type === 'message-sent'), 3000, 'message-sent');
  ack(ext, command.requestId, 'server');
  await barrier(ext);
  assert.equal(settled, null, "'server' is below 'delivered'");
  assert.deepEqual(gateway.getMessageStatus(command.requestId).ack, 'server');

  ack(ext, command.requestId, 'read');
  const result = await sending;
  assert.equal(result.ack, 'read', 'the highest ack known when it resolves');
  assert.equal(result.requestId, command.requestId);
  assert.equal(result.messageId, 'wa-1');
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 1, 'the *-sent event fires once');

  const acks = events.filter((e) => e.type === 'message-ack');
  assert.deepEqual(
    acks.map((e) => e.ack),
    ['server', 'read'],
  );
  assert.equal(acks[0].requestId, command.requestId);
  assert.equal(acks[0].messageId, 'wa-1', "the result's messageId when the ack has none");
  assert.equal(acks[0].phoneNumber, PHONE);
  assert.equal(acks[0].sessionId, ext.sessionId);
  assert.equal(acks[0].apiKey, GOOD_KEY);
});

test('a plain send resolves with ack sent; acks only move forward and unknown or foreign ones are ignored', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const other = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);

  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi' });
  assert.equal(result.ack, 'sent');
  assert.deepEqual(Object.keys(result).sort(), ['ack', 'deviceInfo', 'messageId', 'requestId', 'success', 'timestamp']);

  ack(other, result.requestId, 'read'); // another API key
  ack(ext, '00000000-0000-4000-8000-000000000000', 'read'); // unknown request
  ack(ext, 'not-a-uuid', 'read');
  ack(ext, result.requestId, 'delivered');
  ack(ext, result.requestId, 'server'); // late
  ack(ext, result.requestId, 'delivered', 'changed'); // repeated
  ack(ext, result.requestId, 'bogus'); // unknown level
  await barrier(ext);
  await barrier(other);
  const acks = events.filter((e) => e.type === 'message-ack');
  assert.deepEqual(
    acks.map((e) => [e.requestId, e.ack]),
    [[result.requestId, 'delivered']],
  );
  const status = gateway.getMessageStatus(result.requestId);
  assert.equal(status.state, 'sent');
  assert.equal(status.ack, 'delivered');
  assert.equal(status.sessionId, ext.sessionId);
  assert.equal(typeof status.updatedAt, 'number');
  assert.ok(Math.abs(status.updatedAt - Date.now()) < 60_000, 'ms since the epoch');
});

test('an ack is accepted from another session of the same key (an extension that reconnected)', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const first = await silent(url).connectReady(gateway);
  const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi', waitFor: 'read' });
  const command = await nthCommand(first, 1);
  first.result(command.requestId, { success: true, messageId: 'wa-2' });
  await waitFor(() => gateway.getMessageStatus(command.requestId)?.state === 'sent', 3000, 'sent status');
  await first.close();

  const second = await silent(url).connectReady(gateway);
  ack(second, command.requestId, 'read', 'wa-2b');
  const result = await sending;
  assert.equal(result.ack, 'read');
  assert.equal(result.messageId, 'wa-2b', "the ack's messageId wins");
  assert.equal(result.deviceInfo.sessionId, first.sessionId, 'the device that sent it');
});

test('waitFor that times out after a successful result: REQUEST_TIMEOUT with details.ack, no send-failed, status stays sent', async (t) => {
  const { gateway, url, events, errors } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  const none = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'a', waitFor: 'delivered', timeout: 300 });
  const noneCommand = await nthCommand(ext, 1);
  ext.result(noneCommand.requestId, { success: true, messageId: 'wa-3' });
  const error = await none.then(
    () => assert.fail('must not resolve'),
    (e) => e,
  );
  assert.equal(error.code, 'REQUEST_TIMEOUT');
  assert.match(error.message, /timed out/);
  assert.match(error.message, /did go out/);
  assert.match(error.message, /extension sent no acks/);
  assert.equal(error.details.ack, 'sent');
  assert.equal(error.details.requestId, noneCommand.requestId);
  assert.equal(error.details.sent, true);

  const some = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'b', waitFor: 'read', timeout: 300 });
  const someCommand = await nthCommand(ext, 2);
  ext.result(someCommand.requestId, { success: true });
  ack(ext, someCommand.requestId, 'server');
  const later = await some.then(
    () => assert.fail('must not resolve'),
    (e) => e,
  );
  assert.equal(later.code, 'REQUEST_TIMEOUT');
  assert.equal(later.details.ack, 'server');
  assert.match(later.message, /'server'/);

  assert.equal(events.filter((e) => e.type === 'send-failed').length, 0);
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 2);
  assert.equal(gateway.getMessageStatus(noneCommand.requestId).state, 'sent');
  assert.equal(gateway.getMessageStatus(someCommand.requestId).ack, 'server');
  assert.equal(errors.filter((e) => e.code === 'REQUEST_TIMEOUT').length, 2, 'reported to onError');
});

test('waitFor is validated, and stop() rejects a caller waiting for an ack with GATEWAY_SHUTDOWN', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', waitFor: 'seen' }), {
    code: 'VALIDATION_ERROR',
    details: { field: 'waitFor', value: 'seen' },
  });
  const ext = await silent(url).connectReady(gateway);
  const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', waitFor: 'played' });
  const command = await nthCommand(ext, 1);
  ext.result(command.requestId, { success: true });
  await waitFor(() => gateway.getMessageStatus(command.requestId)?.state === 'sent', 3000, 'sent status');
  const stopping = gateway.stop();
  await assert.rejects(sending, { code: 'GATEWAY_SHUTDOWN' });
  await stopping;
});

test('getMessageStatus follows a send: in-flight, then sent or failed; null for unknown ids', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  assert.equal(gateway.getMessageStatus('00000000-0000-4000-8000-000000000000'), null);
  assert.equal(gateway.getMessageStatus('nope'), null);
  assert.equal(gateway.getMessageStatus(42), null);

  const ok = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'a' });
  const okCommand = await nthCommand(ext, 1);
  const inFlight = gateway.getMessageStatus(okCommand.requestId);
  assert.deepEqual(
    { state: inFlight.state, ack: inFlight.ack, sessionId: inFlight.sessionId },
    { state: 'in-flight', ack: null, sessionId: ext.sessionId },
  );
  ext.result(okCommand.requestId, { success: true });
  await ok;
  assert.equal(gateway.getMessageStatus(okCommand.requestId).state, 'sent');

  const bad = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'b' });
  const badCommand = await nthCommand(ext, 2);
  ext.result(badCommand.requestId, { success: false, error: 'nope' });
  await assert.rejects(bad, { code: 'EXTENSION_ERROR' });
  const failed = gateway.getMessageStatus(badCommand.requestId);
  assert.equal(failed.state, 'failed');
  assert.equal(failed.ack, null);
});

test("'least-busy' picks the device with the fewest unanswered sends; ties go round-robin", async (t) => {
  const { gateway, url } = await startGateway({ deviceSelectionStrategy: 'least-busy' });
  t.after(() => gateway.stop());
  const a = await silent(url).connectReady(gateway);
  const b = await silent(url).connectReady(gateway);
  const c = await silent(url).connectReady(gateway);
  const devices = [a, b, c];
  const sendOne = (n) => gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `m${n}` });

  // Three sends on three idle devices: one each (ties in turn).
  const first = [sendOne(1), sendOne(2), sendOne(3)];
  await waitFor(() => devices.every((d) => d.commands.length === 1), 3000, 'one command each');
  // a answers; it is now the only idle device, so the next two go to a, then... a has one again.
  a.result(a.commands[0].requestId, { success: true });
  await first[0];
  const fourth = sendOne(4);
  await waitFor(() => a.commands.length === 2, 3000, 'a gets the fourth');
  assert.equal(b.commands.length + c.commands.length, 2);

  // A send that only waits for an ack no longer counts.
  const waiting = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'w', waitFor: 'read', deviceSelectionStrategy: 'least-busy' });
  await waitFor(() => devices.reduce((n, d) => n + d.commands.length, 0) === 5, 3000, 'fifth command');
  const holder = devices.find((d) => d.commands.some((cmd) => cmd.data.message === 'w'));
  // Everyone has one unanswered send now; answer all but keep 'w' waiting for its ack.
  for (const d of devices) for (const cmd of d.commands) d.result(cmd.requestId, { success: true });
  await Promise.all([...first, fourth]);
  await waitFor(() => gateway.getHealth().pendingRequests === 0, 3000, 'all answered');
  const picks = [];
  for (let n = 0; n < 3; n++) {
    const before = devices.map((d) => d.commands.length);
    const p = sendOne(10 + n);
    await waitFor(() => devices.some((d, i) => d.commands.length > before[i]), 3000, 'a pick');
    picks.push(devices.findIndex((d, i) => d.commands.length > before[i]));
    p.catch(() => {});
  }
  assert.deepEqual([...picks].sort(), [0, 1, 2], 'each device once: ties in turn, the ack-waiter counts as idle');
  assert.ok(holder);
  ack(holder, holder.commands.find((cmd) => cmd.data.message === 'w').requestId, 'read');
  assert.equal((await waiting).ack, 'read');
});

// ---- idempotency keys ----

const http = require('node:http');
const { PNG_1x1 } = require('./helpers');

/**
 * A media server whose one route answers only when the test says so: `answer(status)`
 * for every request, or `answer(status, later)` for the first and the ones after it.
 */
async function heldMediaServer(t) {
  let release;
  const released = new Promise((resolve) => (release = (first, later = first) => resolve({ first, later })));
  let requests = 0;
  const server = http.createServer(async (req, res) => {
    requests += 1;
    const nth = requests;
    const answers = await released;
    const status = nth === 1 ? answers.first : answers.later;
    if (status === 200) {
      const png = Buffer.from(PNG_1x1.split(',')[1], 'base64');
      res.writeHead(200, { 'content-type': 'image/png' }).end(png);
    } else {
      res.writeHead(status).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return {
    url: `http://127.0.0.1:${server.address().port}/img.png`,
    answer: release,
    requests: () => requests,
  };
}

test('a duplicate idempotencyKey settles like the first: same ids, duplicate: true, sent once, events once', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  const first = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay 10', idempotencyKey: 'order-1' });
  const command = await nthCommand(ext, 1);
  // In flight (written, unanswered): the duplicate waits for the first. (Another payload
  // with the key is IDEMPOTENCY_KEY_REUSED now: see idempotency.test.js.)
  const inFlightDuplicate = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay 10', idempotencyKey: 'order-1' });
  ext.result(command.requestId, { success: true, messageId: 'wa-9' });
  const result = await first;
  assert.equal(result.duplicate, undefined, 'the first is no duplicate');
  const dup = await inFlightDuplicate;
  assert.deepEqual(dup, { ...result, duplicate: true });
  const later = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay 10', idempotencyKey: 'order-1' });
  assert.equal(later.requestId, result.requestId);
  assert.equal(later.messageId, 'wa-9');
  assert.equal(later.duplicate, true);
  await barrier(ext);
  assert.equal(ext.commands.length, 1, 'the message went out once');
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 1);

  // Another API key has its own keys.
  const other = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const own = await gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'order-1' });
  assert.notEqual(own.requestId, result.requestId);
  assert.equal(other.commands.length, 1);
});

test('a duplicate of a failed send rejects like it with details.duplicate, and fires no second send-failed', async (t) => {
  const { gateway, url, events, errors } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: () => ({ success: false, error: 'blocked' }) }).connectReady(gateway);
  const first = await gateway
    .sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'k-fail' })
    .catch((e) => e);
  assert.equal(first.code, 'EXTENSION_ERROR');
  const dup = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'k-fail' }).catch((e) => e);
  assert.equal(dup.code, 'EXTENSION_ERROR');
  assert.equal(dup.message, first.message);
  assert.deepEqual(dup.details, { ...first.details, duplicate: true });
  assert.equal(first.details.duplicate, undefined);
  await barrier(ext);
  assert.equal(ext.commands.length, 1);
  assert.equal(events.filter((e) => e.type === 'send-failed').length, 1);
  assert.equal(errors.filter((e) => e.code === 'EXTENSION_ERROR').length, 1);
});

test('a key whose first send failed before being written is free again: the retry sends', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'retry-1' }), {
    code: 'NO_ACTIVE_DEVICE',
  });
  const ext = await new FakeExtension(url).connectReady(gateway);
  const retried = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'retry-1' });
  assert.equal(retried.duplicate, undefined);
  assert.equal(ext.commands.length, 1);
});

test('a duplicate waiting for an unwritten first is sent as a new call if the first fails before being written', async (t) => {
  const { gateway, url } = await startGateway({ mediaAllowPrivateHosts: true });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const media = await heldMediaServer(t);

  const first = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageUrl: media.url, idempotencyKey: 'img-1' }).catch((e) => e);
  await waitFor(() => media.requests() === 1, 3000, 'the fetch to start');
  const waiting = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageUrl: media.url, idempotencyKey: 'img-1', caption: 'again' }).catch((e) => e);
  assert.equal((await waiting).code, 'IDEMPOTENCY_KEY_REUSED', 'another caption is another message');
  const same = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageUrl: media.url, idempotencyKey: 'img-1' });
  await barrier(ext);
  assert.equal(ext.commands.length, 0, 'the duplicate waits for the first');
  media.answer(404, 200);
  assert.equal((await first).code, 'FETCH_ERROR');
  // Sent as a new call: its own fetch, then its command.
  const sent = await same;
  assert.equal(sent.duplicate, undefined, 'sent as a new call');
  assert.equal(media.requests(), 2);
  assert.equal(ext.commands.length, 1);
  assert.equal(ext.commands[0].type, 'send-image');
});

test('a duplicate waiting for an unwritten first settles like it once the first is written', async (t) => {
  const { gateway, url } = await startGateway({ mediaAllowPrivateHosts: true });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const media = await heldMediaServer(t);

  const first = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageUrl: media.url, idempotencyKey: 'img-2' });
  await waitFor(() => media.requests() === 1, 3000, 'the fetch to start');
  const waiting = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageUrl: media.url, idempotencyKey: 'img-2' });
  media.answer(200);
  const result = await first;
  assert.deepEqual(await waiting, { ...result, duplicate: true });
  await barrier(ext);
  assert.deepEqual(
    ext.commands.map((c) => c.type),
    ['send-image'],
  );
});

test('idempotencyKey is validated (1 to 200 characters)', async (t) => {
  const { gateway } = await startGateway();
  t.after(() => gateway.stop());
  for (const bad of ['', 'x'.repeat(201), 42]) {
    const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: bad }).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.details.field, 'idempotencyKey');
    assert.match(error.message, /1 to 200 characters/);
  }
  assert.throws(() => new (require('..').WhatsAppGateway)({ validateApiKey: () => ({ valid: true }), idempotencyTtl: 0 }), {
    name: 'TypeError',
    message: /idempotencyTtl/,
  });
});

// ---- incoming messages ----

test('incoming-message: event message-received with data as sent, incoming-ack, repeats acked but not emitted', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const other = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const data = {
    messageId: 'in-1',
    from: '+15550001',
    chatId: '15550001@c.us',
    body: 'hello',
    timestamp: 1700000000000,
    media: { mimeType: 'image/png', dataUrl: PNG_1x1, fileName: 'a.png' },
    custom: { nested: [1, 2] },
  };
  ext.send({ type: 'incoming-message', data });
  assert.deepEqual(await ext.next((f) => f.type === 'incoming-ack'), { type: 'incoming-ack', messageId: 'in-1' });
  ext.send({ type: 'incoming-message', data }); // a retry
  assert.deepEqual(await ext.next((f) => f.type === 'incoming-ack'), { type: 'incoming-ack', messageId: 'in-1' });
  other.send({ type: 'incoming-message', data }); // the same id on another key is another message
  await other.next((f) => f.type === 'incoming-ack');

  const received = events.filter((e) => e.type === 'message-received');
  assert.equal(received.length, 2);
  assert.deepEqual(received[0].data, data);
  assert.equal(received[0].apiKey, GOOD_KEY);
  assert.equal(received[0].sessionId, ext.sessionId);
  assert.equal(received[0].userId, 'user-test');
  assert.equal(typeof received[0].timestamp, 'number');
  assert.equal(received[1].apiKey, OTHER_KEY);

  // A reconnected extension retrying on a new session is still a repeat.
  await ext.close();
  const again = await new FakeExtension(url).connectReady(gateway);
  again.send({ type: 'incoming-message', data });
  await again.next((f) => f.type === 'incoming-ack');
  assert.equal(events.filter((e) => e.type === 'message-received').length, 2);
});

test('an invalid or oversized incoming-message gets INVALID_MESSAGE with its messageId, and no event', async (t) => {
  const { gateway, url, events } = await startGateway({ maxMediaBytes: 1000 });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const invalid = () => ext.next((f) => f.type === 'error');

  ext.send({ type: 'incoming-message', data: { messageId: 'in-2', timestamp: 1 } });
  let error = await invalid();
  assert.equal(error.code, 'INVALID_MESSAGE');
  assert.equal(error.error.code, 'INVALID_MESSAGE');
  assert.equal(error.messageId, 'in-2');
  assert.match(error.message, /from/);

  const big = `data:image/png;base64,${'A'.repeat(4000)}`;
  ext.send({ type: 'incoming-message', data: { messageId: 'in-3', from: 'x', timestamp: 1, media: { mimeType: 'image/png', dataUrl: big } } });
  error = await invalid();
  assert.equal(error.messageId, 'in-3');
  assert.match(error.message, /maxMediaBytes/);

  ext.send({ type: 'incoming-message' });
  error = await invalid();
  assert.equal(error.code, 'INVALID_MESSAGE');
  assert.equal(error.messageId, undefined);

  await barrier(ext);
  assert.equal(events.filter((e) => e.type === 'message-received').length, 0);
  assert.equal(ext.frames.filter((f) => f.frame.type === 'incoming-ack').length, 0);
  // Still open and serving.
  ext.send({ type: 'incoming-message', data: { messageId: 'in-4', from: 'x', timestamp: 1 } });
  await ext.next((f) => f.type === 'incoming-ack' && f.messageId === 'in-4');
});

test('before auth, the new frames get NOT_AUTHENTICATED like any other', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = new FakeExtension(url);
  await ext.open();
  ext.send({ type: 'incoming-message', data: { messageId: 'in-1', from: 'x', timestamp: 1 } });
  assert.equal((await ext.next((f) => f.type === 'error')).code, 'NOT_AUTHENTICATED');
  ext.send({ type: 'message-ack', requestId: 'r', ack: 'read' });
  assert.equal((await ext.next((f) => f.type === 'error')).code, 'NOT_AUTHENTICATED');
  assert.equal(events.length, 0);
  await ext.close();
});

test('per-call timeouts fire on time in any order: a short one behind a long one, a long one after a settled short one', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const timedOut = (error) => error.code === 'REQUEST_TIMEOUT';

  // A short call answered at once, then a longer one nobody answers: it fails at its own time.
  const quick = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'a', timeout: 150 });
  ext.result((await nthCommand(ext, 1)).requestId, { success: true, messageId: 'wa-a' });
  await quick;
  let started = performance.now();
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'b', timeout: 400 }), timedOut);
  let elapsed = performance.now() - started;
  assert.ok(elapsed >= 380 && elapsed < 2000, `400 ms timeout fired after ${elapsed} ms`);

  // A long call pending, then a short one: the short one does not wait for the long one.
  const long = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'c', timeout: 5000 });
  long.catch(() => {});
  await nthCommand(ext, 3);
  started = performance.now();
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'd', timeout: 200 }), timedOut);
  elapsed = performance.now() - started;
  assert.ok(elapsed >= 180 && elapsed < 2000, `200 ms timeout fired after ${elapsed} ms`);
});
