'use strict';
// Per-call `target` (README: "Choosing the device"): only the named session is used, with
// its pacing; a target that is not connected and active is NO_ACTIVE_DEVICE with
// details.reason 'target-unavailable', after waitForDevice, which then waits for that
// session only. Real extensions on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const PHONE = '+1234567890';
const UNKNOWN_SESSION = '00000000-0000-4000-8000-000000000000';

/** A frame round trip: everything the extension sent before it has been handled. */
async function barrier(ext) {
  ext.send('barrier, not json');
  await ext.next((f) => f.type === 'error' && f.code === 'INVALID_MESSAGE');
}

test('target: every send goes to the named session, whatever the strategy', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const a = await new FakeExtension(url).connectReady(gateway);
  const b = await new FakeExtension(url).connectReady(gateway);
  for (const strategy of ['round-robin', 'random', 'least-busy', undefined]) {
    for (let i = 0; i < 3; i++) {
      const result = await gateway.sendMessage(GOOD_KEY, {
        phoneNumber: PHONE,
        message: `to b ${i}`,
        target: b.sessionId,
        deviceSelectionStrategy: strategy,
      });
      assert.equal(result.deviceInfo.sessionId, b.sessionId);
    }
  }
  assert.equal(a.commands.length, 0, 'the other session got nothing');
  assert.equal(b.commands.length, 12);
  // Without target, round-robin still alternates.
  const one = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' });
  const two = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'y' });
  assert.notEqual(one.deviceInfo.sessionId, two.deviceInfo.sessionId);
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 14);
});

test('target: a session that is not connected, of another key, or not active is NO_ACTIVE_DEVICE target-unavailable, nothing sent', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const active = await new FakeExtension(url).connectReady(gateway);
  const other = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const idle = new FakeExtension(url);
  await idle.open();
  await idle.authenticate();
  idle.sendStatus(false);
  await barrier(idle);

  for (const target of [UNKNOWN_SESSION, other.sessionId, idle.sessionId]) {
    const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', target }).catch((e) => e);
    assert.equal(error.code, 'NO_ACTIVE_DEVICE', target);
    assert.equal(error.details.reason, 'target-unavailable');
    assert.match(error.message, /target session/);
  }
  assert.equal(active.commands.length + other.commands.length + idle.commands.length, 0);
  assert.equal(events.filter((e) => e.type === 'send-failed').length, 0, 'no device was chosen');
});

test('target with waitForDevice waits for that session only, while another is active', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const busy = await new FakeExtension(url).connectReady(gateway);
  const later = new FakeExtension(url);
  await later.open();
  await later.authenticate();
  later.sendStatus(false);
  await barrier(later);

  const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'wait for it', target: later.sessionId, waitForDevice: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(busy.commands.length, 0, 'the active session is not used');
  assert.equal(gateway.getHealth().queuedSends, 1);
  later.sendStatus(true);
  const result = await sending;
  assert.equal(result.deviceInfo.sessionId, later.sessionId);
  assert.equal(later.commands.length, 1);
  assert.equal(busy.commands.length, 0);

  // Its wait ends: target-unavailable, never sent; sends behind it for other sessions are not held up.
  later.sendStatus(false);
  await barrier(later);
  const started = Date.now();
  const waiting = gateway
    .sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'in vain', target: later.sessionId, waitForDevice: 400 })
    .catch((e) => e);
  const meanwhile = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'meanwhile', waitForDevice: 400 });
  assert.equal(meanwhile.deviceInfo.sessionId, busy.sessionId);
  const error = await waiting;
  assert.ok(Date.now() - started >= 350, 'it waited');
  assert.equal(error.code, 'NO_ACTIVE_DEVICE');
  assert.equal(error.details.reason, 'target-unavailable');
  assert.equal(error.details.sent, false);
  assert.equal(later.commands.length, 1);
});

test("target: the named session's pacing applies", async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: 400 } });
  t.after(() => gateway.stop());
  const a = await new FakeExtension(url).connectReady(gateway);
  const b = await new FakeExtension(url).connectReady(gateway);
  const arrivals = [];
  b.respond = (command) => {
    arrivals.push(Date.now());
    return { success: true, messageId: command.requestId };
  };
  const sends = [1, 2, 3].map((i) =>
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `paced ${i}`, target: b.sessionId }),
  );
  const results = await Promise.all(sends);
  assert.ok(results.every((r) => r.deviceInfo.sessionId === b.sessionId));
  assert.equal(a.commands.length, 0);
  for (let i = 1; i < arrivals.length; i++) {
    assert.ok(arrivals[i] - arrivals[i - 1] >= 350, `departures ${i} and ${i + 1} are ${arrivals[i] - arrivals[i - 1]} ms apart`);
  }
});

test('target: a paced send whose session leaves before it is written fails, never sent elsewhere', async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: 60_000 }, waitForDevice: 5000 });
  t.after(() => gateway.stop());
  const other = await new FakeExtension(url).connectReady(gateway);
  const leaving = await new FakeExtension(url).connectReady(gateway);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'first', target: leaving.sessionId });
  const queued = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'queued', target: leaving.sessionId }).catch((e) => e);
  await waitFor(() => gateway.getHealth().queuedSends === 1, 3000, 'the second send to queue');
  await leaving.close();
  const error = await queued;
  assert.equal(error.code, 'CONNECTION_LOST');
  assert.equal(error.details.sent, false);
  assert.equal(other.commands.length, 0, 'not sent to another session');
});

test('target is checked: a non-empty string', async (t) => {
  const { gateway } = await startGateway();
  t.after(() => gateway.stop());
  for (const target of ['', 7, {}, 'x'.repeat(201)]) {
    const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', target }).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.details.field, 'target');
  }
});
