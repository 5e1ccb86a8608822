'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

test('sendMessage resolves with the extension result and device info', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);

  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'Hello World!' });

  assert.equal(result.success, true);
  assert.match(result.requestId, /^[0-9a-f-]{36}$/);
  assert.equal(result.messageId, `msg-${result.requestId.slice(0, 8)}`);
  assert.equal(typeof result.timestamp, 'number');
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
  const command = ext.commands[0];
  assert.deepEqual(command, {
    type: 'send-message',
    requestId: result.requestId,
    data: { phoneNumber: '+1234567890', message: 'Hello World!' },
  });
  const sent = await waitFor(() => events.find((e) => e.type === 'message-sent'));
  assert.equal(sent.apiKey, GOOD_KEY);
  assert.equal(sent.sessionId, ext.sessionId);
  assert.equal(sent.userId, 'user-test');
  assert.equal(sent.phoneNumber, '+1234567890');
  assert.equal(sent.requestId, result.requestId);
  assert.equal(sent.messageId, result.messageId);
  assert.equal(sent.status, 'success');
  assert.equal(typeof sent.timestamp, 'number');
});

test('a success without messageId resolves with messageId null', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  await new FakeExtension(url, { respond: () => ({ success: true }) }).connectReady(gateway);
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' });
  assert.equal(result.messageId, null);
});

test('validation errors name the field and value and reach onError', async (t) => {
  const { gateway, errors } = await startGateway();
  t.after(() => gateway.stop());
  const cases = [
    [{ phoneNumber: '1234567890', message: 'Hello' }, 'phoneNumber', "Phone number must start with '+'"],
    [{ phoneNumber: '+12ab', message: 'Hello' }, 'phoneNumber', /only digits/],
    [{ phoneNumber: '+0123', message: 'Hello' }, 'phoneNumber', /cannot start with 0/],
    [{ phoneNumber: '+1234567890123456', message: 'Hello' }, 'phoneNumber', /2 to 15 digits/],
    [{ phoneNumber: 12345, message: 'Hello' }, 'phoneNumber', /must be a string/],
    [{ phoneNumber: '+1234567890', message: '   ' }, 'message', /non-empty/],
    [{ phoneNumber: '+1234567890' }, 'message', /non-empty/],
    [{ phoneNumber: '+1234567890', message: 'x', deviceSelectionStrategy: 'fastest' }, 'deviceSelectionStrategy', /one of/],
    [{ phoneNumber: '+1234567890', message: 'x', timeout: -5 }, 'timeout', /positive/],
  ];
  for (const [data, field, message] of cases) {
    const error = await gateway.sendMessage(GOOD_KEY, data).then(
      () => assert.fail('should reject'),
      (e) => e,
    );
    assert.ok(error instanceof Error);
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.details.field, field);
    assert.deepEqual(error.details.value, data[field]);
    if (typeof message === 'string') assert.equal(error.message, message);
    else assert.match(error.message, message);
  }
  const missing = await gateway.sendMessage(GOOD_KEY, null).catch((e) => e);
  assert.equal(missing.code, 'VALIDATION_ERROR');
  const badKey = await gateway.sendMessage('', { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(badKey.details.field, 'apiKey');
  assert.equal(errors.filter((e) => e.code === 'VALIDATION_ERROR').length, cases.length + 2);
});

test('NO_ACTIVE_DEVICE without a ready device, with a masked key in details', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const none = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(none.code, 'NO_ACTIVE_DEVICE');
  assert.equal(none.details.apiKey, 'test-key***');
  assert.ok(!JSON.stringify(none.details).includes(GOOD_KEY));

  const notReady = new FakeExtension(url);
  t.after(() => notReady.close());
  await notReady.open();
  await notReady.authenticate();
  notReady.sendStatus(false);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY)[0]?.lastStatusUpdate);
  const stillNone = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(stillNone.code, 'NO_ACTIVE_DEVICE');
});

test('an extension failure rejects with EXTENSION_ERROR and logs send-failed', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: () => ({ success: false, error: 'Phone number not found' }) }).connectReady(gateway);
  const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(error.code, 'EXTENSION_ERROR');
  assert.match(error.message, /Phone number not found/);
  assert.equal(error.details.requestId, ext.commands[0].requestId);
  assert.equal(error.details.sessionId, ext.sessionId);
  assert.equal(error.details.error, 'Phone number not found');
  const failed = await waitFor(() => events.find((e) => e.type === 'send-failed'));
  assert.equal(failed.status, 'failure');
  assert.equal(failed.phoneNumber, '+1234567890');
  assert.equal(failed.details.code, 'EXTENSION_ERROR');
  assert.match(failed.error, /Phone number not found/);
});

test('no result within the timeout rejects with REQUEST_TIMEOUT', async (t) => {
  const { gateway, url, events } = await startGateway({ requestTimeout: 5000 });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const error = await gateway
    .sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout: 150 })
    .catch((e) => e);
  assert.equal(error.code, 'REQUEST_TIMEOUT');
  assert.match(error.message, /timed out/);
  assert.deepEqual(error.details, { requestId: ext.commands[0].requestId, sessionId: ext.sessionId, timeout: 150, sent: true });
  await waitFor(() => events.find((e) => e.type === 'send-failed' && e.details.code === 'REQUEST_TIMEOUT'));
  // A late result settles nothing and breaks nothing.
  ext.result(ext.commands[0].requestId, { success: true });
  const next = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'y', timeout: 150 }).catch((e) => e);
  assert.equal(next.code, 'REQUEST_TIMEOUT');
});

test('the config requestTimeout applies when the call sets none', async (t) => {
  const { gateway, url } = await startGateway({ requestTimeout: 120 });
  t.after(() => gateway.stop());
  await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e);
  assert.equal(error.code, 'REQUEST_TIMEOUT');
  assert.equal(error.details.timeout, 120);
});

// requestTimeout is a minute: the test's own timeout fails it if the sends wait for that.
test('an extension that disconnects fails its requests with CONNECTION_LOST at once', { timeout: 20_000 }, async (t) => {
  const { gateway, url, events } = await startGateway({ requestTimeout: 60000 });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const pending = [1, 2, 3].map((n) =>
    gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: `m${n}` }).catch((e) => e),
  );
  await waitFor(() => ext.commands.length === 3);
  ext.ws.terminate();
  const results = await Promise.all(pending);
  for (const error of results) {
    assert.equal(error.code, 'CONNECTION_LOST');
    assert.equal(error.details.sessionId, ext.sessionId);
  }
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected'));
  assert.equal(gone.sessionId, ext.sessionId);
  assert.equal(typeof gone.details.code, 'number');
  assert.equal(typeof gone.details.reason, 'string');
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
});

test('a result from another session, or for an unknown id, settles nothing', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const target = await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const intruder = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const promise = gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout: 2000 });
  await waitFor(() => target.commands.length === 1);
  const { requestId } = target.commands[0];
  intruder.result(requestId, { success: true, messageId: 'forged' });
  target.result('00000000-0000-4000-8000-000000000000', { success: true });
  target.result('not-a-uuid', { success: true });
  // A round trip on each socket: its reply comes after the gateway acted on every
  // frame sent before it, so the forged results have been seen and ignored.
  for (const ext of [intruder, target]) {
    const echo = ext.next((frame) => frame.type === 'error' && /barrier/.test(frame.message));
    ext.send({ type: 'barrier' });
    await echo;
  }
  assert.equal(await Promise.race([promise, 'pending']), 'pending', 'nothing settled the send yet');
  target.result(requestId, { success: true, messageId: 'real' });
  const result = await promise;
  assert.equal(result.messageId, 'real');
  assert.equal(result.deviceInfo.sessionId, target.sessionId);
});

test('round-robin spreads sends over devices; random and per-call override work', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const devices = [];
  for (let i = 0; i < 3; i++) devices.push(await new FakeExtension(url).connectReady(gateway));
  const used = [];
  for (let i = 0; i < 6; i++) {
    const r = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: `n${i}` });
    used.push(r.deviceInfo.sessionId);
  }
  assert.deepEqual(used.slice(3), used.slice(0, 3));
  assert.equal(new Set(used).size, 3);
  const randomUse = new Set();
  for (let i = 0; i < 30; i++) {
    const r = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'r', deviceSelectionStrategy: 'random' });
    randomUse.add(r.deviceInfo.sessionId);
  }
  assert.ok(randomUse.size >= 2, 'random picks more than one device in 30 sends');
  for (const r of randomUse) assert.ok(devices.some((d) => d.sessionId === r));
});

test('config default strategy random is used when the call sets none', async (t) => {
  const { gateway, url } = await startGateway({ deviceSelectionStrategy: 'random' });
  t.after(() => gateway.stop());
  for (let i = 0; i < 2; i++) await new FakeExtension(url).connectReady(gateway);
  const seen = [];
  for (let i = 0; i < 30; i++) {
    seen.push((await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'r' })).deviceInfo.sessionId);
  }
  const alternating = seen.every((s, i) => i === 0 || s !== seen[i - 1]);
  assert.equal(alternating, false, 'random is not strict alternation over 30 sends');
});

test('a thousand concurrent sends each settle exactly once', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  await new FakeExtension(url).connectReady(gateway);
  await new FakeExtension(url).connectReady(gateway);
  const results = await Promise.all(
    Array.from({ length: 1000 }, (_, i) => gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: `n${i}` })),
  );
  assert.equal(new Set(results.map((r) => r.requestId)).size, 1000);
  assert.equal(gateway.getHealth().pendingRequests, 0);
});

test('commands bigger than the socket takes at once, sent in one tick and then one by one, arrive whole and in order', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const texts = ['a', 'b', 'c', 'd'].map((c, i) => `${i}:${c.repeat(3 * 1024 * 1024)}`);
  // Three in one tick (written together), then one more after the first results.
  const first = texts.slice(0, 3).map((message) => gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message }));
  await Promise.all(first);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: texts[3] });
  // And small ones behind, each alone.
  for (let i = 0; i < 20; i++) await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: `small ${i}` });
  const received = ext.commands.map((c) => c.data.message);
  assert.equal(received.length, 24);
  assert.ok(received.slice(0, 4).every((m, i) => m === texts[i]), 'a big command arrived cut or out of order');
  assert.deepEqual(received.slice(4), Array.from({ length: 20 }, (_, i) => `small ${i}`));
});

test('texts of every length around 256 bytes reach the extension exactly, whatever their characters', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  // A string is read into a buffer of 256 bytes when it fits; these cut a character of
  // 2, 3 or 4 bytes (or a lone surrogate, sent as U+FFFD) at every place near its end.
  const sent = [];
  for (const tail of ['é', '€', '😀', '\ud800']) {
    for (let ascii = 244; ascii <= 258; ascii++) {
      const message = 'a'.repeat(ascii) + tail + tail;
      sent.push(message);
      await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message });
    }
  }
  const received = ext.commands.map((c) => c.data.message);
  assert.deepEqual(received, sent.map((m) => m.replace(/\ud800/g, '\ufffd')));
  // The API key and the number go the same way.
  const longKey = await gateway.sendMessage('k'.repeat(300), { phoneNumber: '+1234567890', message: 'x' }).catch((e) => e.code);
  assert.equal(longKey, 'NO_ACTIVE_DEVICE');
});
