'use strict';
// Delivery queues (README "Delivery"): pacing per device, maxQueuedSends / QUEUE_FULL, waitForDevice,
// a device leaving with unwritten sends, stop(). Order and counts, no timing asserts:
// intervals are long enough that "still queued" holds however slow the machine is.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');
const { WhatsAppGateway } = require('..');

const PHONE = '+1234567890';
const LONG = 60_000;

function silent(url, options = {}) {
  return new FakeExtension(url, { respond: () => null, ...options });
}

async function barrier(ext) {
  ext.send('barrier, not json');
  await ext.next((f) => f.type === 'error' && f.code === 'INVALID_MESSAGE');
}

/** Sends `n` messages m0..m(n-1); each promise is settled into `outcomes`. */
function sendMany(gateway, n, extra = {}) {
  const outcomes = [];
  const promises = [];
  for (let i = 0; i < n; i++) {
    const p = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `m${i}`, ...extra });
    p.then(
      (r) => (outcomes[i] = { ok: r }),
      (e) => (outcomes[i] = { error: e }),
    );
    promises.push(p);
  }
  return { outcomes, promises, settled: () => Promise.allSettled(promises) };
}

test('pacing: the first send to an idle device leaves at once, the rest wait their turn in order', async (t) => {
  const { gateway, url, events } = await startGateway({ pacing: { minIntervalMs: 400, jitterMs: 100 } });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);

  const { promises } = sendMany(gateway, 3);
  const results = await Promise.all(promises);
  assert.deepEqual(
    ext.commands.map((c) => c.data.message),
    ['m0', 'm1', 'm2'],
  );
  assert.deepEqual(
    results.map((r) => r.requestId),
    ext.commands.map((c) => c.requestId),
  );
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 3);
});

test('pacing: queued sends report queued, count against maxQueuedSends, and QUEUE_FULL names the device', async (t) => {
  const { gateway, url, events } = await startGateway({ pacing: { minIntervalMs: LONG }, maxQueuedSends: 2 });
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  const { outcomes, promises } = sendMany(gateway, 4);
  await waitFor(() => outcomes[3], 3000, 'the fourth to be refused');
  const full = outcomes[3].error;
  assert.equal(full.code, 'QUEUE_FULL');
  assert.equal(full.details.sessionId, ext.sessionId);
  assert.equal(full.details.queued, 2, 'the one being sent does not count');
  assert.equal(full.details.sent, false);
  const failed = await waitFor(() => events.find((e) => e.type === 'send-failed'), 3000, 'send-failed');
  assert.equal(failed.details.code, 'QUEUE_FULL');

  const first = await ext.next((f) => f.type === 'send-message');
  assert.equal(first.data.message, 'm0');
  assert.equal(gateway.getMessageStatus(first.requestId).state, 'in-flight');
  await barrier(ext);
  assert.equal(ext.commands.length, 1, 'the others wait a minute');
  assert.equal(outcomes.slice(0, 3).filter(Boolean).length, 0);

  // stop(): queued sends were never written, the one in flight was.
  await gateway.stop();
  await Promise.allSettled(promises);
  assert.deepEqual(
    outcomes.slice(0, 3).map((o) => [o.error.code, o.error.details.sent]),
    [
      ['GATEWAY_SHUTDOWN', true],
      ['GATEWAY_SHUTDOWN', false],
      ['GATEWAY_SHUTDOWN', false],
    ],
  );
  assert.equal(ext.commands.length, 1);
});

test('maxQueuedBytes counts the pacing queue: one more command over it waits, and is BACKPRESSURE at its timeout, never written', async (t) => {
  const { gateway, url, events } = await startGateway({ pacing: { minIntervalMs: LONG }, maxQueuedBytes: 2000 });
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  // Each command is about 700 bytes: one leaves, two fit in the queue, the fourth does not.
  const message = 'x'.repeat(600);
  const send = () => gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message, timeout: 500 }).catch((e) => e);
  // The first is on the wire before the others are made: under load its bytes could
  // still wait for the socket and count as ahead of them.
  const sends = [send()];
  await waitFor(() => ext.commands.length === 1, 5000, 'the first command');
  sends.push(send(), send(), send());
  // Those that only waited for their turn time out as never written (README "Delivery").
  const waited = await Promise.all(sends.slice(1, 3));
  assert.deepEqual(waited.map((e) => [e.code, e.details.sent]), [['REQUEST_TIMEOUT', false], ['REQUEST_TIMEOUT', false]]);
  const refused = await sends[3];
  assert.equal(refused.code, 'BACKPRESSURE');
  assert.equal(refused.details.sent, false);
  assert.ok(refused.details.queuedBytes > 1000 && refused.details.queuedBytes <= 2000, `${refused.details.queuedBytes}`);
  await barrier(ext);
  assert.equal(ext.commands.length, 1, 'only the first left');
  assert.ok(events.some((e) => e.type === 'send-failed' && e.details.code === 'BACKPRESSURE'));
});

test('pacing: maxPerMinute lets that many leave at once, the next waits', async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: 0, maxPerMinute: 2 } });
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const { outcomes } = sendMany(gateway, 3, { timeout: 500 });
  await waitFor(() => ext.commands.length === 2, 3000, 'two commands');
  // The third times out in the queue: its timeout counts from the call, and it never left.
  await waitFor(() => outcomes[2], 5000, 'the third to time out');
  assert.equal(outcomes[2].error.code, 'REQUEST_TIMEOUT');
  assert.equal(outcomes[2].error.details.sent, false);
  assert.equal(gateway.getMessageStatus(outcomes[2].error.details.requestId).state, 'failed');
  await barrier(ext);
  assert.deepEqual(
    ext.commands.map((c) => c.data.message),
    ['m0', 'm1'],
  );
});

test('a device leaving sends its unwritten queue back to selection; with none left, CONNECTION_LOST sent: false', async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: LONG } });
  t.after(() => gateway.stop());
  const a = await silent(url).connectReady(gateway);
  const b = await new FakeExtension(url).connectReady(gateway);

  // m0 -> a, m1 -> b (both leave at once), m2 -> a's queue, m3 -> b's queue.
  const { outcomes, settled } = sendMany(gateway, 4, { deviceSelectionStrategy: 'round-robin' });
  await waitFor(() => a.commands.length === 1 && b.commands.length === 1, 3000, 'one each');
  await a.close();
  // m0 was written to a: lost. m2 was not: it goes to b, behind m3 (a minute away).
  await waitFor(() => outcomes[0], 3000, 'm0 to fail');
  assert.equal(outcomes[0].error.code, 'CONNECTION_LOST');
  assert.equal(outcomes[0].error.details.sent, true);
  assert.equal(outcomes[2], undefined, 'm2 still waits, now on b');

  await b.close();
  await settled();
  assert.equal(outcomes[1].ok.deviceInfo.sessionId, b.sessionId);
  for (const i of [2, 3]) {
    assert.equal(outcomes[i].error.code, 'CONNECTION_LOST', `m${i}`);
    assert.equal(outcomes[i].error.details.sent, false, `m${i}`);
    assert.match(outcomes[i].error.details.requestId, /^[0-9a-f-]{36}$/);
  }
  assert.equal(outcomes[2].error.details.sessionId, b.sessionId, 'reported against the device it waited on last');
  assert.deepEqual(
    b.commands.map((c) => c.data.message),
    ['m1'],
  );
});

test('an unwritten send whose device left waits for a new device up to its waitForDevice, same requestId', async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: LONG }, waitForDevice: 20_000 });
  t.after(() => gateway.stop());
  const a = await new FakeExtension(url).connectReady(gateway);
  const { outcomes, promises } = sendMany(gateway, 2);
  await waitFor(() => a.commands.length === 1, 3000, 'm0 on a');
  const first = await promises[0];
  await a.close();
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 0, 3000, 'a to be gone');
  assert.equal(outcomes[1], undefined, 'm1 waits for a device');

  const b = await new FakeExtension(url).connectReady(gateway);
  const second = await promises[1];
  assert.equal(second.deviceInfo.sessionId, b.sessionId);
  assert.deepEqual(
    b.commands.map((c) => c.data.message),
    ['m1'],
  );
  assert.notEqual(second.requestId, first.requestId);
});

test('waitForDevice: a send waits for a device to become active, then goes out', async (t) => {
  const { gateway, url } = await startGateway({ waitForDevice: 20_000 });
  t.after(() => gateway.stop());
  const { outcomes, promises } = sendMany(gateway, 3);
  const ext = new FakeExtension(url);
  await ext.open();
  await ext.authenticate();
  await barrier(ext);
  assert.equal(outcomes.filter(Boolean).length, 0, 'a session that is not ready takes nothing');
  ext.sendStatus(true);
  const results = await Promise.all(promises);
  assert.deepEqual(
    ext.commands.map((c) => c.data.message),
    ['m0', 'm1', 'm2'],
  );
  assert.ok(results.every((r) => r.deviceInfo.sessionId === ext.sessionId));
});

test('waitForDevice: NO_ACTIVE_DEVICE with its reason when the wait (or the timeout) ends first; 0 per call turns it off', async (t) => {
  const { gateway, url } = await startGateway({ waitForDevice: 300 });
  t.after(() => gateway.stop());
  const none = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
  assert.equal(none.code, 'NO_ACTIVE_DEVICE');
  assert.equal(none.details.reason, 'no-sessions');
  assert.match(none.message, /no extension is connected/);

  const ext = new FakeExtension(url);
  await ext.open();
  await ext.authenticate();
  await barrier(ext);
  const notReady = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
  assert.equal(notReady.code, 'NO_ACTIVE_DEVICE');
  assert.equal(notReady.details.reason, 'none-ready');
  assert.match(notReady.message, /none reports/);

  const byTimeout = await gateway
    .sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', waitForDevice: 60_000, timeout: 200 })
    .catch((e) => e);
  assert.equal(byTimeout.code, 'NO_ACTIVE_DEVICE', 'the timeout ended the wait; no device was found');

  const off = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', waitForDevice: 0 }).catch((e) => e);
  // Rejected before anything else happens: a status frame now would be too late for it.
  ext.sendStatus(true);
  assert.equal((await off).code, 'NO_ACTIVE_DEVICE');
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', waitForDevice: -1 }), {
    code: 'VALIDATION_ERROR',
    details: { field: 'waitForDevice', value: -1 },
  });
});

test('waitForDevice: bounded by maxQueuedSends per key (QUEUE_FULL, sessionId null); stop() rejects the waiting sends', async (t) => {
  const { gateway } = await startGateway({ waitForDevice: LONG, maxQueuedSends: 2 });
  const { outcomes, settled } = sendMany(gateway, 3);
  await waitFor(() => outcomes[2], 3000, 'the third to be refused');
  assert.equal(outcomes[2].error.code, 'QUEUE_FULL');
  assert.equal(outcomes[2].error.details.sessionId, null);
  assert.equal(outcomes[2].error.details.queued, 2);
  assert.equal(outcomes[0], undefined);
  await gateway.stop();
  await settled();
  for (const i of [0, 1]) {
    assert.equal(outcomes[i].error.code, 'GATEWAY_SHUTDOWN');
    assert.equal(outcomes[i].error.details.sent, false);
  }
  t.after(() => gateway.stop());
});

test('before start() a send rejects at once whatever waitForDevice says', async () => {
  const gateway = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), waitForDevice: LONG, port: 0 });
  const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
  assert.equal(error.code, 'NO_ACTIVE_DEVICE');
  assert.equal(error.details.reason, 'not-running');
});

test('pacing options are checked', () => {
  const make = (extra) => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), ...extra });
  assert.throws(() => make({ pacing: { minIntervalMs: -1 } }), { name: 'TypeError', message: /pacing\.minIntervalMs/ });
  assert.throws(() => make({ pacing: { minIntervalMs: 10, maxPerMinute: 0 } }), { name: 'TypeError', message: /maxPerMinute/ });
  assert.throws(() => make({ pacing: 5 }), { name: 'TypeError', message: /pacing/ });
  assert.throws(() => make({ maxQueuedSends: 0 }), { name: 'TypeError', message: /maxQueuedSends/ });
  assert.throws(() => make({ waitForDevice: -5 }), { name: 'TypeError', message: /waitForDevice/ });
  make({ pacing: { minIntervalMs: 0, jitterMs: 0, maxPerMinute: Infinity }, waitForDevice: 0 });
});

test('pacing with the default requestTimeout: a send whose queue wait alone passes its timeout is warned about once per process, naming `timeout`', async () => {
  const { runScript } = require('./child-script');
  const script = `
    const { WhatsAppGateway } = require('.');
    const WebSocket = require(${JSON.stringify(require.resolve('ws'))});
    const warnings = [];
    process.removeAllListeners('warning');
    process.on('warning', (w) => warnings.push({ code: w.code, message: w.message }));
    const KEY = 'paced-key-0123456789';
    /** A ready extension that never answers: every command stays in flight. */
    function extension(url) {
      const ws = new WebSocket(url);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', apiKey: KEY })));
      ws.on('message', (raw) => {
        if (JSON.parse(raw).type === 'auth-success') ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
      });
      return ws;
    }
    /** A gateway with one ready device; makes n sends at once; returns what was warned meanwhile. */
    async function bulk(options, n, call = {}) {
      const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }), ...options });
      await gateway.start();
      const ws = extension('ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws');
      while (!gateway.getActiveSessions(KEY).some((s) => s.deviceActive)) await new Promise((r) => setTimeout(r, 10));
      const before = warnings.length;
      const sends = Array.from({ length: n }, (_, i) =>
        gateway.sendMessage(KEY, { phoneNumber: '+1234567890', message: 'm' + i, ...call }).catch((e) => e.code));
      // Long enough for a warning to arrive; far shorter than any of the timeouts.
      await new Promise((r) => setTimeout(r, 300));
      const warned = warnings.length - before;
      ws.terminate();
      await gateway.stop();
      await Promise.all(sends);
      return warned;
    }
    (async () => {
      const seen = [];
      // The queue fits in the timeout: nothing to say.
      seen.push(await bulk({ pacing: { minIntervalMs: 1000 } }, 9));
      // requestTimeout chosen by the user: theirs to decide.
      seen.push(await bulk({ pacing: { minIntervalMs: 4000 }, requestTimeout: 10000 }, 9));
      // Long enough per-call timeouts: nothing to say.
      seen.push(await bulk({ pacing: { minIntervalMs: 4000 } }, 9, { timeout: 60000 }));
      // The first hour: nine quick sends, 4 s apart, with the default 30 s.
      seen.push(await bulk({ pacing: { minIntervalMs: 4000, jitterMs: 3000 } }, 9));
      // Once per process.
      seen.push(await bulk({ pacing: { minIntervalMs: 4000 } }, 9));
      console.log(JSON.stringify({ seen, warnings }));
    })();`;
  const { code, stdout, stderr } = await runScript(script, { limit: 30_000 });
  assert.equal(code, 0, stderr);
  const { seen, warnings } = JSON.parse(stdout);
  assert.deepEqual(seen, [0, 0, 0, 1, 0]);
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].code, 'WA_GATEWAY_PACED_SEND_TIMEOUT');
  // The 9th waits at least 8 × 4 s; with the first jitter drawn, the 8th may already be past 30 s.
  const waited = Number(/waits at least (\d+) ms in its device's queue, past its timeout of 30000 ms/.exec(warnings[0].message)?.[1]);
  assert.ok(waited > 30_000 && waited <= 35_000, warnings[0].message);
  assert.match(warnings[0].message, /REQUEST_TIMEOUT/);
  assert.match(warnings[0].message, /`timeout`/);
});

test('pacing: maxPerMinute counts in the queue wait that is warned about', async () => {
  const { runScript } = require('./child-script');
  const script = `
    const { WhatsAppGateway } = require('.');
    const WebSocket = require(${JSON.stringify(require.resolve('ws'))});
    const warnings = [];
    process.removeAllListeners('warning');
    process.on('warning', (w) => warnings.push({ code: w.code, message: w.message }));
    (async () => {
      const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }),
        pacing: { minIntervalMs: 0, maxPerMinute: 12 } });
      await gateway.start();
      const ws = new WebSocket('ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws');
      ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', apiKey: 'k-0123456789' })));
      ws.on('message', (raw) => {
        const f = JSON.parse(raw);
        if (f.type === 'auth-success') ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
        if (f.type === 'send-message') ws.send(JSON.stringify({ type: 'message-result', requestId: f.requestId, success: true }));
      });
      while (!gateway.getActiveSessions('k-0123456789').some((s) => s.deviceActive)) await new Promise((r) => setTimeout(r, 10));
      const sends = Array.from({ length: 12 }, (_, i) =>
        gateway.sendMessage('k-0123456789', { phoneNumber: '+1234567890', message: 'm' + i }).catch((e) => e.code));
      await Promise.all(sends);
      const afterTwelve = warnings.length;
      const thirteenth = gateway.sendMessage('k-0123456789', { phoneNumber: '+1234567890', message: 'm12' }).catch((e) => e.code);
      await new Promise((r) => setTimeout(r, 300));
      ws.terminate();
      await gateway.stop();
      await thirteenth;
      console.log(JSON.stringify({ afterTwelve, warnings }));
    })();`;
  const { code, stdout, stderr } = await runScript(script, { limit: 30_000 });
  assert.equal(code, 0, stderr);
  const { afterTwelve, warnings } = JSON.parse(stdout);
  assert.equal(afterTwelve, 0);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0].message, /waits at least (5\d|60)\d\d\d ms/);
});
