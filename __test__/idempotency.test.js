'use strict';
// Guarantees at the edges, one process (README: "Delivery"): the states of a send's
// record ('unknown' included), late truth, what a retry with the same idempotencyKey
// returns in each state, IDEMPOTENCY_KEY_REUSED, metadata, look-ups, and the bound on
// records. Real extensions on loopback; the test answers for them.
const test = require('node:test');
const assert = require('node:assert/strict');
const { ERROR_CODES } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const PHONE = '+1234567890';

/** An extension that answers nothing by itself; the test answers for it. */
function silent(url, options = {}) {
  return new FakeExtension(url, { respond: () => null, ...options });
}

function nthCommand(ext, n) {
  return waitFor(() => ext.commands[n - 1], 3000, `command ${n}`);
}

/** A frame round trip: everything the extension sent before it has been handled. */
async function barrier(ext) {
  ext.send('barrier, not json');
  await ext.next((f) => f.type === 'error' && f.code === 'INVALID_MESSAGE' && f.messageId === undefined);
}

const failure = (promise) => promise.then(
  (value) => assert.fail(`expected a rejection, got ${JSON.stringify(value)}`),
  (error) => error,
);

test('a timed-out send whose result comes late becomes sent: late *-sent event, later acks, and a retry with its key resolves as a duplicate', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  const metadata = { orderId: 42, tags: ['a', 'b'] };
  const error = await failure(
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay', idempotencyKey: 'late-1', timeout: 200, metadata }),
  );
  assert.equal(error.code, 'REQUEST_TIMEOUT');
  assert.equal(error.details.sent, true);
  const { requestId } = error.details;
  const unknown = gateway.getMessageStatus(requestId);
  assert.equal(unknown.state, 'unknown');
  assert.equal(unknown.error.code, 'REQUEST_TIMEOUT');
  assert.equal(unknown.idempotencyKey, 'late-1');
  assert.deepEqual(unknown.metadata, metadata);

  // Before the truth: a retry says the first may have gone out, and sends nothing.
  const retried = await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay', idempotencyKey: 'late-1' }));
  assert.equal(retried.code, 'REQUEST_TIMEOUT');
  assert.equal(retried.details.duplicate, true);
  assert.equal(retried.details.state, 'unknown');
  assert.equal(retried.details.requestId, requestId);

  ext.result(requestId, { success: true, messageId: 'wa-late' });
  const late = await waitFor(() => events.find((e) => e.type === 'message-sent' && e.requestId === requestId), 3000, 'the late message-sent');
  assert.equal(late.late, true);
  assert.equal(late.messageId, 'wa-late');
  assert.deepEqual(late.metadata, metadata);
  assert.equal(late.apiKey, GOOD_KEY);
  const sent = gateway.getMessageStatus(requestId);
  assert.equal(sent.state, 'sent');
  assert.equal(sent.messageId, 'wa-late');
  assert.equal(sent.ack, 'sent');
  assert.equal(sent.error, null);
  assert.equal(events.filter((e) => e.type === 'send-failed' && e.requestId === requestId).length, 1, 'the failure stays told once');

  ext.send({ type: 'message-ack', requestId, ack: 'delivered' });
  const acked = await waitFor(() => events.find((e) => e.type === 'message-ack' && e.requestId === requestId), 3000, 'message-ack');
  assert.equal(acked.ack, 'delivered');
  assert.deepEqual(acked.metadata, metadata);
  assert.equal(gateway.getMessageStatus(requestId).ack, 'delivered');

  // The recipe: after a timeout, retry with the same key to learn the truth.
  const truth = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'pay', idempotencyKey: 'late-1' });
  assert.equal(truth.duplicate, true);
  assert.equal(truth.requestId, requestId);
  assert.equal(truth.messageId, 'wa-late');
  assert.equal(truth.ack, 'delivered');
  assert.deepEqual(truth.metadata, metadata);
  await barrier(ext);
  assert.equal(ext.commands.length, 1, 'written once');
  assert.equal(events.filter((e) => e.type === 'message-sent').length, 1);
});

test('a late failure makes an unknown send failed, with no event; a result for a send of another key changes nothing', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const other = await silent(url, { apiKey: OTHER_KEY }).connectReady(gateway);

  const error = await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', timeout: 150 }));
  const { requestId } = error.details;
  assert.equal(gateway.getMessageStatus(requestId).state, 'unknown', 'a plain send has its record too');
  other.result(requestId, { success: true, messageId: 'stolen' });
  await barrier(other);
  assert.equal(gateway.getMessageStatus(requestId).state, 'unknown');

  const eventsBefore = events.length;
  ext.result(requestId, { success: false, error: 'not on WhatsApp' });
  await barrier(ext);
  const failed = gateway.getMessageStatus(requestId);
  assert.equal(failed.state, 'failed');
  assert.equal(failed.error.code, 'EXTENSION_ERROR');
  assert.deepEqual(events.slice(eventsBefore).filter((e) => e.requestId === requestId), []);
  ext.result(requestId, { success: true, messageId: 'too-late' });
  await barrier(ext);
  assert.equal(gateway.getMessageStatus(requestId).state, 'failed', 'only unknown moves');
});

test('a session that closes with a send written makes it unknown; the reconnected extension tells the truth on its new session', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const first = await silent(url).connectReady(gateway);
  const sending = failure(gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: require('./helpers').PNG_1x1, idempotencyKey: 'img-lost' }));
  const command = await nthCommand(first, 1);
  await first.close();
  const lost = await sending;
  assert.equal(lost.code, 'CONNECTION_LOST');
  assert.equal(lost.details.sent, true);
  assert.equal(gateway.getMessageStatus(command.requestId).state, 'unknown');

  const again = await silent(url).connectReady(gateway);
  again.result(command.requestId, { success: true, messageId: 'wa-img' });
  const late = await waitFor(() => events.find((e) => e.type === 'image-sent' && e.requestId === command.requestId), 3000, 'image-sent');
  assert.equal(late.late, true);
  assert.equal(late.sessionId, again.sessionId);
  const status = gateway.getMessageStatus(command.requestId);
  assert.equal(status.state, 'sent');
  assert.equal(status.sessionId, again.sessionId);
  assert.equal(status.kind, 'image');
});

test('a result from another session of the same key settles a send still pending', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const old = await silent(url).connectReady(gateway);
  const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', timeout: 5000 });
  const command = await nthCommand(old, 1);
  // The extension reconnected; the old connection has not been noticed as dead yet.
  const fresh = await silent(url).connectReady(gateway);
  fresh.result(command.requestId, { success: true, messageId: 'wa-new' });
  const result = await sending;
  assert.equal(result.requestId, command.requestId);
  assert.equal(result.messageId, 'wa-new');
  assert.equal(result.deviceInfo.sessionId, fresh.sessionId);
  assert.equal(gateway.getMessageStatus(command.requestId).state, 'sent');
});

test('IDEMPOTENCY_KEY_REUSED: the key with another recipient, kind, text, caption or media sends nothing and leaves the first alone', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const { PNG_1x1 } = require('./helpers');
  const first = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hello', idempotencyKey: 'k1' });
  const before = gateway.getMessageStatus(first.requestId);
  const others = [
    gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567891', message: 'hello', idempotencyKey: 'k1' }),
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hello!', idempotencyKey: 'k1' }),
    gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'hello', idempotencyKey: 'k1' }),
  ];
  for (const other of others) {
    const error = await failure(other);
    assert.equal(error.code, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(error.code, ERROR_CODES.IDEMPOTENCY_KEY_REUSED);
    assert.deepEqual(error.details, { requestId: first.requestId });
  }
  // Caption and media of media sends.
  const image = await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'c', idempotencyKey: 'k2' });
  assert.equal((await failure(gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'd', idempotencyKey: 'k2' }))).code, 'IDEMPOTENCY_KEY_REUSED');
  const otherPng = PNG_1x1.replace('ggg', 'ggh');
  assert.equal((await failure(gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: otherPng, caption: 'c', idempotencyKey: 'k2' }))).code, 'IDEMPOTENCY_KEY_REUSED');
  assert.equal((await failure(gateway.sendVideo(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1.replace('image/png', 'video/mp4'), caption: 'c', idempotencyKey: 'k2' }))).code, 'IDEMPOTENCY_KEY_REUSED');
  // The same payload stays a duplicate; options that do not change the message are fine.
  const again = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hello', idempotencyKey: 'k1', timeout: 9999 });
  assert.deepEqual(again, { ...first, duplicate: true });
  assert.equal((await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'c', idempotencyKey: 'k2' })).requestId, image.requestId);
  assert.deepEqual(gateway.getMessageStatus(first.requestId), before, "the first's record is untouched");
  await barrier(ext);
  assert.equal(ext.commands.length, 2);
});

test('metadata: echoed in events, the record and a duplicate result; more than 4096 bytes of JSON, or no JSON, is VALIDATION_ERROR', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  let n = 0;
  const ext = await new FakeExtension(url, {
    respond: (command) => (++n === 2 ? { success: false, error: 'nope' } : { success: true, messageId: `wa-${n}` }),
  }).connectReady(gateway);

  const sent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'a', metadata: { campaign: 'spring', n: 1 } });
  assert.equal(sent.metadata, undefined, "the caller's own result does not repeat it");
  const sentEvent = await waitFor(() => events.find((e) => e.type === 'message-sent' && e.requestId === sent.requestId), 3000, 'message-sent');
  assert.deepEqual(sentEvent.metadata, { campaign: 'spring', n: 1 });
  assert.deepEqual(gateway.getMessageStatus(sent.requestId).metadata, { campaign: 'spring', n: 1 });

  const failed = await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'b', metadata: 'just a string' }));
  const failedEvent = await waitFor(() => events.find((e) => e.type === 'send-failed' && e.requestId === failed.details.requestId), 3000, 'send-failed');
  assert.equal(failedEvent.metadata, 'just a string');
  assert.equal(failed.details.sent, true, 'the extension said it failed: it was written');

  const keyed = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'c', idempotencyKey: 'meta-1', metadata: [1, 2, 3] });
  const duplicate = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'c', idempotencyKey: 'meta-1' });
  assert.deepEqual(duplicate, { ...keyed, duplicate: true, metadata: [1, 2, 3] });

  const plain = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'd' });
  const plainEvent = await waitFor(() => events.find((e) => e.type === 'message-sent' && e.requestId === plain.requestId), 3000, 'message-sent');
  assert.equal('metadata' in plainEvent, false);
  assert.equal(gateway.getMessageStatus(plain.requestId).metadata, null);

  const big = { text: 'x'.repeat(4096) };
  const tooBig = await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'e', metadata: big }));
  assert.equal(tooBig.code, 'VALIDATION_ERROR');
  assert.equal(tooBig.details.field, 'metadata');
  assert.match(tooBig.message, /4096 bytes/);
  const justFits = JSON.stringify({ t: 'é'.repeat(2044) });
  assert.equal(Buffer.byteLength(justFits), 4096);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'f', metadata: JSON.parse(justFits) });
  const overByBytes = { t: 'é'.repeat(2045) };
  assert.equal((await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'g', metadata: overByBytes }))).code, 'VALIDATION_ERROR');
  for (const bad of [10n, () => 1, Symbol('s')]) {
    const error = await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'h', metadata: bad }));
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.details.field, 'metadata');
  }
  const cyclic = {};
  cyclic.self = cyclic;
  assert.equal((await failure(gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'i', metadata: cyclic }))).code, 'VALIDATION_ERROR');
  await barrier(ext);
  assert.equal(ext.commands.length, 5);
});

test('getMessageStatus by { apiKey, idempotencyKey } and { apiKey, messageId }, within the key only', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: (c) => ({ success: true, messageId: `wa-${c.data.message}` }) }).connectReady(gateway);
  const a = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'one', idempotencyKey: 'order-7' });
  const b = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'two' });
  const byKey = gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'order-7' });
  assert.equal(byKey.requestId, a.requestId);
  assert.equal(byKey.state, 'sent');
  assert.equal(byKey.messageId, 'wa-one');
  assert.equal(gateway.getMessageStatus({ apiKey: OTHER_KEY, idempotencyKey: 'order-7' }), null);
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'order-8' }), null);
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, messageId: 'wa-two' }).requestId, b.requestId);
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, messageId: 'wa-one' }).requestId, a.requestId);
  assert.equal(gateway.getMessageStatus({ apiKey: OTHER_KEY, messageId: 'wa-two' }), null);
  // Kept from the first look-up on: a send after it is found too.
  const c = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'three' });
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, messageId: 'wa-three' }).requestId, c.requestId);
  const full = gateway.getMessageStatus(b.requestId);
  for (const field of ['requestId', 'state', 'ack', 'sessionId', 'updatedAt', 'messageId', 'idempotencyKey', 'metadata', 'error']) {
    assert.ok(field in full, field);
  }
  assert.equal(full.idempotencyKey, null);
  for (const bad of [null, {}, { apiKey: GOOD_KEY }, { idempotencyKey: 'order-7' }, 42]) {
    assert.equal(gateway.getMessageStatus(bad), null, JSON.stringify(bad));
  }
  assert.equal(ext.commands.length, 3);
});

test('maxMessageStatuses: the oldest settled records go first, a pending one never; a keyed record dropped early is counted', async (t) => {
  const { gateway, url } = await startGateway({ maxMessageStatuses: 3 });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: (c) => (c.data.message === 'hold' ? null : { success: true, messageId: 'm' }) }).connectReady(gateway);
  const evictions = () => Number(/^wa_gateway_status_evictions_total (\d+)$/m.exec(gateway.metrics())?.[1]);
  const before = evictions();
  assert.ok(Number.isInteger(before), 'the counter is exported');
  const held = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hold', idempotencyKey: 'held', timeout: 10_000 });
  const heldCommand = await nthCommand(ext, 1);
  const keyed = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'k', idempotencyKey: 'early' });
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `m${i}` }));
  assert.equal(gateway.getMessageStatus(keyed.requestId), null, 'the oldest settled went');
  assert.equal(gateway.getMessageStatus(results[0].requestId), null);
  assert.equal(gateway.getMessageStatus(results[3].requestId).state, 'sent');
  assert.equal(gateway.getMessageStatus(heldCommand.requestId).state, 'in-flight', 'pending: never evicted');
  assert.equal(evictions() - before, 1, 'the keyed record forgotten before its TTL');
  ext.result(heldCommand.requestId, { success: true, messageId: 'late-enough' });
  assert.equal((await held).messageId, 'late-enough');
  assert.throws(() => new (require('..').WhatsAppGateway)({ validateApiKey: () => ({ valid: true }), maxMessageStatuses: 0 }), {
    name: 'TypeError',
    message: /maxMessageStatuses/,
  });
});

test('a key stays reserved however long its first call waits for a device; a duplicate then settles like it', async (t) => {
  const { gateway, url } = await startGateway({ requestTimeout: 300 });
  t.after(() => gateway.stop());
  const first = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'patient', waitForDevice: 3000, timeout: 5000 });
  await new Promise((resolve) => setTimeout(resolve, 800));
  const duplicate = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', idempotencyKey: 'patient' });
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'patient' }).state, 'queued');
  const ext = await new FakeExtension(url).connectReady(gateway);
  const result = await first;
  assert.deepEqual(await duplicate, { ...result, duplicate: true });
  assert.equal(ext.commands.length, 1);
});

test('types: lookups, metadata, the unknown state, late events and IDEMPOTENCY_KEY_REUSED type-check; wrong uses do not', { timeout: 120_000 }, () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { execFileSync } = require('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-ts-'));
  const compile = (source) => {
    fs.writeFileSync(path.join(dir, 'use.ts'), `${source}\nexport {};\n`);
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', '--module', 'esnext', '--moduleResolution', 'bundler'];
    execFileSync(process.execPath, [tsc, ...flags, 'use.ts'], { cwd: dir, stdio: 'pipe' });
  };
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(path.resolve(__dirname, '..'), path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
    const prelude = `import { WhatsAppGateway, ERROR_CODES, type MessageState, type MessageLogData } from 'whatsapp-ws-extension-gateway';
const gateway = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), maxMessageStatuses: 1000 });`;
    compile(`${prelude}
async function use() {
  const r = await gateway.sendMessage('k', { phoneNumber: '+1', message: 'x', idempotencyKey: 'o-1', metadata: { order: 1 } });
  const meta: unknown = r.metadata;
  const s = gateway.getMessageStatus({ apiKey: 'k', idempotencyKey: 'o-1' });
  const state: MessageState | undefined = s?.state;
  if (state === 'unknown' && s?.error?.code === ERROR_CODES.REQUEST_TIMEOUT) console.log(s.idempotencyKey, s.messageId, s.metadata);
  gateway.getMessageStatus({ apiKey: 'k', messageId: 'wamid' });
  gateway.getMessageStatus(r.requestId);
  gateway.on('message-sent', (e: MessageLogData) => { if (e.late) console.log(e.metadata, e.recovered); });
  const code: 'IDEMPOTENCY_KEY_REUSED' = ERROR_CODES.IDEMPOTENCY_KEY_REUSED;
  return [meta, code];
}
void use;`);
    assert.throws(() => compile(`${prelude}\ngateway.getMessageStatus({ idempotencyKey: 'no api key' });`), 'a look-up by key needs its apiKey');
    assert.throws(() => compile(`${prelude}\nconst s = gateway.getMessageStatus('r');\nconst bad: 'sent' | 'failed' | null | undefined = s?.state;`), "'unknown' and the others are states");
  } catch (error) {
    if (error.code === 'ERR_ASSERTION') throw error;
    assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
