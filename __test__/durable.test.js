'use strict';
// Durable mode (README "Durable mode"): a gateway in a child process, killed with
// SIGKILL, started again on the same store. The extension lives in this process, so it
// sees every command each gateway process wrote, across kills.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { WhatsAppGateway, ERROR_CODES } = require('..');
const { startNodeProcess } = require('./cluster-node');
const { FakeExtension, waitFor, eventually, GOOD_KEY, PNG_1x1 } = require('./helpers');

function storePath(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-durable-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'gateway.db');
}

/** An extension of GOOD_KEY on `node`'s port, ready; `respond` as FakeExtension's. */
async function readyExtension(t, node, respond) {
  const extension = new FakeExtension(`ws://127.0.0.1:${node.port}/wa-ext-ws`, { respond });
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  await waitFor(async () => true, 10);
  t.after(() => extension.ws.terminate());
  const active = async () => (await node.request('sessions', { apiKey: GOOD_KEY })).some((s) => s.deviceActive);
  for (let i = 0; i < 300 && !(await active()); i++) await new Promise((r) => setTimeout(r, 10));
  return extension;
}

/** Reads the store with the sqlite3 shell, as the README shows. */
function sql(store, query) {
  const out = execFileSync('sqlite3', ['-json', store, query], { encoding: 'utf8' });
  return out.trim() === '' ? [] : JSON.parse(out);
}

const settle = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));

test('paced sends still queued at a SIGKILL go out once after a restart, in order, with their request id and metadata', async (t) => {
  const store = storePath(t);
  const options = { store, pacing: { minIntervalMs: 400 } };
  let node = await startNodeProcess(t, options);
  const first = await readyExtension(t, node);
  const calls = [];
  for (let i = 0; i < 5; i++) {
    calls.push(settle(node.send('message', GOOD_KEY, { phoneNumber: `+1555000000${i}`, message: `hi ${i}`, timeout: 60_000, metadata: { n: i } })));
  }
  await waitFor(() => first.commands.length >= 2, 5000, 'two commands out');
  await node.kill();
  first.ws.terminate();
  const out = first.commands.map((c) => c.data.phoneNumber);
  const queued = sql(store, 'SELECT request_id, phone_number FROM queued ORDER BY seq');
  assert.ok(queued.length >= 1, 'the store holds the sends still queued');
  assert.deepEqual(
    [...out, ...queued.map((q) => q.phone_number)].sort(),
    [0, 1, 2, 3, 4].map((i) => `+1555000000${i}`),
    'every send went out or is queued, none both',
  );
  const queuedIds = queued.map((q) => q.request_id);

  node = await startNodeProcess(t, options);
  const second = await readyExtension(t, node);
  await waitFor(() => second.commands.length >= queued.length, 10_000, 'the queued sends');
  assert.deepEqual(second.commands.map((c) => c.requestId), queuedIds, 'in order, with their request ids');
  await waitFor(() => node.events.filter((e) => e.type === 'message-sent').length >= queued.length, 5000, 'their events');
  const sent = node.events.filter((e) => e.type === 'message-sent');
  for (const event of sent) {
    assert.equal(event.recovered, true);
    assert.deepEqual(event.metadata, { n: Number(event.phoneNumber.slice(-1)) });
    assert.equal(event.apiKey, GOOD_KEY, 'recovered events carry the key');
  }
  for (const id of queuedIds) {
    const status = await node.request('status', { lookup: id });
    assert.equal(status.state, 'sent');
  }
  assert.equal(sql(store, 'SELECT count(*) AS n FROM queued')[0].n, 0);
});

test('a send written and unanswered at a SIGKILL is unknown, a retry with its key never sends it again, and a late result settles it', async (t) => {
  const store = storePath(t);
  let node = await startNodeProcess(t, { store });
  const silent = await readyExtension(t, node, () => null);
  const call = settle(node.send('message', GOOD_KEY, { phoneNumber: '+15550001111', message: 'pay', idempotencyKey: 'order-1', metadata: { order: 1 } }));
  const command = await silent.next((f) => f.type === 'send-message', 5000);
  await node.kill();
  assert.ok((await call).error.processExited);

  node = await startNodeProcess(t, { store });
  const status = await node.request('status', { lookup: { apiKey: GOOD_KEY, idempotencyKey: 'order-1' } });
  assert.equal(status.state, 'unknown');
  assert.equal(status.requestId, command.requestId);
  assert.deepEqual(status.metadata, { order: 1 });

  const extension = await readyExtension(t, node, () => null);
  const retry = await settle(node.send('message', GOOD_KEY, { phoneNumber: '+15550001111', message: 'pay', idempotencyKey: 'order-1' }));
  assert.equal(retry.error?.details?.duplicate, true);
  assert.equal(retry.error.details.state, 'unknown');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(extension.commands.length, 0, 'never written again');

  // The extension reconnected and reports what happened to the first command.
  extension.result(command.requestId, { success: true, messageId: 'wa-late-1' });
  await waitFor(async () => true, 10);
  let late;
  for (let i = 0; i < 200; i++) {
    late = await node.request('status', { lookup: command.requestId });
    if (late.state === 'sent') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(late.state, 'sent');
  assert.equal(late.messageId, 'wa-late-1');
  const again = await node.send('message', GOOD_KEY, { phoneNumber: '+15550001111', message: 'pay', idempotencyKey: 'order-1' });
  assert.equal(again.duplicate, true);
  assert.equal(again.messageId, 'wa-late-1');
  assert.equal(extension.commands.length, 0);
});

test('an outcome is in the store before its promise settles: a SIGKILL right after keeps it', async (t) => {
  const store = storePath(t);
  let node = await startNodeProcess(t, { store });
  await readyExtension(t, node);
  const results = [];
  for (let i = 0; i < 20; i++) {
    results.push(await node.send('message', GOOD_KEY, { phoneNumber: '+15550002222', message: `m${i}`, idempotencyKey: `k${i}` }));
  }
  await node.kill();
  node = await startNodeProcess(t, { store });
  const extension = await readyExtension(t, node);
  for (const [i, result] of results.entries()) {
    const status = await node.request('status', { lookup: result.requestId });
    assert.equal(status?.state, 'sent', `send ${i}`);
    const retry = await node.send('message', GOOD_KEY, { phoneNumber: '+15550002222', message: `m${i}`, idempotencyKey: `k${i}` });
    assert.equal(retry.duplicate, true);
    assert.equal(retry.messageId, result.messageId);
  }
  assert.equal(extension.commands.length, 0, 'no retry sent anything');
});

test('a recovered send past its deadline fails REQUEST_TIMEOUT unsent; one still in time waits for a device until its deadline', async (t) => {
  const store = storePath(t);
  const options = { store, waitForDevice: 60_000 };
  let node = await startNodeProcess(t, options);
  const early = settle(node.send('message', GOOD_KEY, { phoneNumber: '+15550003333', message: 'soon', timeout: 800, metadata: 'm-early' }));
  const later = settle(node.send('message', GOOD_KEY, { phoneNumber: '+15550004444', message: 'later', timeout: 60_000 }));
  for (let i = 0; i < 300 && sql(store, 'SELECT count(*) AS n FROM queued')[0].n < 2; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const [soon, late] = sql(store, 'SELECT request_id FROM queued ORDER BY seq').map((r) => r.request_id);
  await node.kill();
  await Promise.all([early, later]);
  await new Promise((r) => setTimeout(r, 900));

  node = await startNodeProcess(t, options);
  const failed = await waitFor(() => node.events.find((e) => e.type === 'send-failed'), 5000, 'send-failed');
  assert.equal(failed.requestId, soon);
  assert.equal(failed.recovered, true);
  assert.equal(failed.details.code, 'REQUEST_TIMEOUT');
  assert.equal(failed.metadata, 'm-early');
  const status = await node.request('status', { lookup: soon });
  assert.equal(status.state, 'failed');
  assert.equal(status.error.code, 'REQUEST_TIMEOUT');

  // No device yet: the other waits; one connects a second later and gets it.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await node.request('status', { lookup: late })).state, 'queued');
  const extension = await readyExtension(t, node);
  await waitFor(() => extension.commands.length === 1, 5000, 'the waiting send');
  assert.equal(extension.commands[0].requestId, late);
  assert.equal(extension.commands[0].data.phoneNumber, '+15550004444');
});

test('recovered sends whose wait for a device ends each get their final status and event', async (t) => {
  const store = storePath(t);
  const options = { store, waitForDevice: 60_000 };
  let node = await startNodeProcess(t, options);
  for (let i = 0; i < 3; i++) {
    node.send('message', GOOD_KEY, { phoneNumber: `+155500099${i}`, message: `w${i}`, timeout: 2500, idempotencyKey: `w${i}` }).catch(() => {});
  }
  for (let i = 0; i < 300 && sql(store, 'SELECT count(*) AS n FROM queued')[0].n < 3; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const ids = sql(store, 'SELECT request_id FROM queued ORDER BY seq').map((r) => r.request_id);
  await node.kill();
  node = await startNodeProcess(t, options);
  await waitFor(() => node.events.filter((e) => e.type === 'send-failed').length === 3, 6000, 'three send-failed');
  for (const id of ids) {
    const status = await node.request('status', { lookup: id });
    assert.equal(status.state, 'failed', id);
    assert.equal(status.error.code, 'NO_ACTIVE_DEVICE');
  }
  await waitFor(() => sql(store, 'SELECT count(*) AS n FROM queued')[0].n === 0, 3000, 'the queue emptied');
});

test('media waiting in the store is kept once, decoded, and goes out as given', async (t) => {
  const store = storePath(t);
  const options = { store, waitForDevice: 60_000 };
  let node = await startNodeProcess(t, options);
  for (let i = 0; i < 3; i++) {
    node.send('image', GOOD_KEY, { phoneNumber: `+155500055${i}`, imageDataUrl: PNG_1x1, caption: `c${i}` }).catch(() => {});
  }
  for (let i = 0; i < 300 && sql(store, 'SELECT count(*) AS n FROM queued')[0].n < 3; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const media = sql(store, 'SELECT mime_type, length(bytes) AS size FROM media');
  const decoded = Buffer.from(PNG_1x1.split(',')[1], 'base64');
  assert.deepEqual(media, [{ mime_type: 'image/png', size: decoded.length }], 'one row, decoded bytes');
  await node.kill();
  node = await startNodeProcess(t, options);
  const extension = await readyExtension(t, node);
  await waitFor(() => extension.commands.length === 3, 5000, 'three images');
  for (const command of extension.commands) assert.equal(command.data.imageDataUrl, PNG_1x1);
  assert.deepEqual(extension.commands.map((c) => c.data.caption), ['c0', 'c1', 'c2']);
  await waitFor(() => sql(store, 'SELECT count(*) AS n FROM media')[0].n === 0, 3000, 'media dropped once sent');
});

test('incoming de-duplication survives a SIGKILL', async (t) => {
  const store = storePath(t);
  let node = await startNodeProcess(t, { store });
  let extension = await readyExtension(t, node);
  extension.send({ type: 'incoming-message', data: { messageId: 'in-1', from: '+15550006666', body: 'hello', timestamp: Date.now() } });
  await extension.next((f) => f.type === 'incoming-ack');
  await waitFor(() => node.events.some((e) => e.type === 'message-received'), 3000, 'the event');
  await waitFor(() => sql(store, 'SELECT count(*) AS n FROM incoming')[0].n === 1, 3000, 'the id stored');
  await node.kill();
  node = await startNodeProcess(t, { store });
  extension = await readyExtension(t, node);
  extension.send({ type: 'incoming-message', data: { messageId: 'in-1', from: '+15550006666', body: 'hello', timestamp: Date.now() } });
  await extension.next((f) => f.type === 'incoming-ack');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(node.events.filter((e) => e.type === 'message-received').length, 0, 'a repeat is acked, not emitted');
});

test('two gateways on one store: the second start() rejects STORE_LOCKED; store with cluster and a bad storeSync are TypeErrors', async (t) => {
  const store = storePath(t);
  const node = await startNodeProcess(t, { store });
  await assert.rejects(startNodeProcess(t, { store }), (error) => error.code === 'STORE_LOCKED' && /another gateway/.test(error.message));
  const local = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }), store });
  await assert.rejects(local.start(), { code: ERROR_CODES.STORE_LOCKED });
  assert.equal(local.isRunning, false);
  await node.kill();
  await local.start();
  await local.stop();
  assert.throws(
    () => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), store, cluster: { redis: 'redis://127.0.0.1:1' } }),
    (e) => e instanceof TypeError && /'store'/.test(e.message),
  );
  assert.throws(() => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), store, storeSync: 'sometimes' }), TypeError);
  new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), store, storeSync: 'full' });
});

test('stop({ drainMs }) lets a written send settle; with store, sends still queued stay for the next start', async (t) => {
  const store = storePath(t);
  const events = [];
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: () => ({ valid: true }),
    onMessageLog: (e) => events.push(e),
    store,
    pacing: { minIntervalMs: 60_000 },
  });
  await gateway.start();
  t.after(() => gateway.stop());
  const url = () => `ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`;
  let answer = null;
  const extension = new FakeExtension(url(), { respond: () => null });
  await extension.connectReady(gateway);
  const written = gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550007777', message: 'first' });
  const queued = settle(gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550008888', message: 'second', timeout: 60_000 }));
  const command = await extension.next((f) => f.type === 'send-message');
  answer = setTimeout(() => extension.result(command.requestId, { success: true, messageId: 'wa-1' }), 600);
  const started = Date.now();
  await gateway.stop({ drainMs: 5000 });
  clearTimeout(answer);
  assert.ok(Date.now() - started < 5000 + 5000);
  assert.equal((await written).messageId, 'wa-1', 'answered 600 ms into the drain: resolved');
  const [row] = sql(store, 'SELECT phone_number FROM queued');
  assert.equal(row.phone_number, '+15550008888', 'the queued send stays in the store');

  // The same gateway started again: the queued send goes out and its promise settles.
  await gateway.start();
  const again = new FakeExtension(url());
  await again.connectReady(gateway);
  const { value } = await queued;
  assert.equal(value.success, true);
  assert.equal(value.recovered, true);
  assert.equal(again.commands[0].data.phoneNumber, '+15550008888');
  assert.ok(events.some((e) => e.type === 'message-sent' && e.recovered === true && e.phoneNumber === '+15550008888'));
  await gateway.stop({ drainMs: 0 });
  await assert.rejects(gateway.stop({ drainMs: -1 }), TypeError);
});

test('without store, stop({ drainMs }) drains too, and still rejects sends waiting unwritten', async (t) => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }), pacing: { minIntervalMs: 60_000 } });
  await gateway.start();
  t.after(() => gateway.stop());
  const extension = new FakeExtension(`ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`, { respond: () => null });
  await extension.connectReady(gateway);
  const written = gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550007777', message: 'first' });
  const queued = settle(gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550008888', message: 'second' }));
  const command = await extension.next((f) => f.type === 'send-message');
  setTimeout(() => extension.result(command.requestId, { success: true, messageId: 'wa-2' }), 600);
  await gateway.stop({ drainMs: 5000 });
  assert.equal((await written).messageId, 'wa-2');
  const { error } = await queued;
  assert.equal(error.code, 'GATEWAY_SHUTDOWN');
  assert.equal(error.details.sent, false);
});

test('sends waiting for room on a socket at a SIGKILL stay in the store and go out once after a restart, in order; none is written twice', { timeout: 120_000 }, async (t) => {
  const store = storePath(t);
  // 1 MiB of room per socket; each command is about 700 KB, so behind a socket that is
  // not read most of them wait for room.
  const options = { store, maxQueuedBytes: 1 << 20 };
  let node = await startNodeProcess(t, options);
  const first = await readyExtension(t, node);
  first.ws._socket.pause();
  const image = `data:image/png;base64,${Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), require('node:crypto').randomBytes(512 * 1024)]).toString('base64')}`;
  const keys = Array.from({ length: 16 }, (_, i) => `room-${i}`);
  const calls = keys.map((idempotencyKey, i) =>
    settle(node.send('image', GOOD_KEY, { phoneNumber: '+15550002222', caption: `c${i}`, dataUrl: image, idempotencyKey, metadata: { i }, timeout: 60_000 })),
  );
  const status = (n, idempotencyKey) => n.request('status', { lookup: { apiKey: GOOD_KEY, idempotencyKey } });
  // The last waits for room behind the full socket ('queued' while it does).
  await eventually(async () => (await status(node, keys.at(-1)))?.state === 'queued', 10_000, 'the last send waiting for room');
  await new Promise((r) => setTimeout(r, 300)); // the store's commits of the moment
  await node.kill();
  for (const call of calls) assert.ok((await call).error?.processExited);
  // What the kernel still held for the first extension was written.
  first.ws._socket.resume();
  await waitFor(() => first.closed, 10_000, 'the first extension to see the close');
  const written = new Set(first.commands.map((c) => c.requestId));
  const queued = sql(store, 'SELECT request_id FROM queued ORDER BY seq').map((q) => q.request_id);
  assert.ok(queued.length >= 1, 'the sends waiting for room are in the store');
  for (const id of queued) assert.ok(!written.has(id), `${id} both written and queued`);

  node = await startNodeProcess(t, options);
  const second = await readyExtension(t, node);
  await waitFor(() => second.commands.length >= queued.length, 20_000, 'the sends taken up');
  assert.deepEqual(second.commands.map((c) => c.requestId), queued, 'each once, in order, with its request id');
  await waitFor(() => node.events.filter((e) => e.type === 'image-sent' && e.recovered).length >= queued.length, 10_000, 'their events');
  for (const event of node.events.filter((e) => e.type === 'image-sent')) {
    assert.equal(event.recovered, true);
    assert.equal(typeof event.metadata?.i, 'number');
  }
  // Retrying every key sends nothing more.
  await Promise.all(keys.map((idempotencyKey, i) => settle(node.send('image', GOOD_KEY, { phoneNumber: '+15550002222', caption: `c${i}`, dataUrl: image, idempotencyKey, timeout: 5000 }))));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(second.commands.length, queued.length, 'no retry was written');
  for (const [i] of keys.entries()) {
    const out = [...first.commands, ...second.commands].filter((c) => c.data.caption === `c${i}`);
    assert.ok(out.length <= 1, `c${i} written ${out.length} times`);
  }
});

test('stop({ drainMs }) with store: sends waiting for room on a socket stay in the store and settle after the next start', { timeout: 60_000 }, async (t) => {
  const store = storePath(t);
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: () => ({ valid: true }),
    store,
    maxQueuedBytes: 1 << 20,
  });
  await gateway.start();
  t.after(() => gateway.stop());
  const url = () => `ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`;
  const extension = new FakeExtension(url());
  await extension.connectReady(gateway);
  extension.ws._socket.pause();
  const image = `data:image/png;base64,${Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), require('node:crypto').randomBytes(512 * 1024)]).toString('base64')}`;
  const calls = Array.from({ length: 12 }, (_, i) => settle(gateway.sendImage(GOOD_KEY, { phoneNumber: '+15550003333', caption: `s${i}`, dataUrl: image, timeout: 60_000 })));
  const waitingForRoom = async () => sql(store, 'SELECT count(*) AS n FROM queued')[0].n;
  // Until every send has loaded its image and reached the socket or its waiting room (the
  // count holds still): a send still loading at stop() fails with GATEWAY_SHUTDOWN, another case.
  let seen = -1;
  await eventually(async () => {
    const [before, now] = [seen, await waitingForRoom()];
    seen = now;
    return now > 0 && now === before;
  }, 10_000, 'sends waiting for room kept in the store', 200);
  await gateway.stop({ drainMs: 200 });
  extension.ws.terminate();
  const kept = sql(store, 'SELECT request_id FROM queued ORDER BY seq').map((r) => r.request_id);
  assert.ok(kept.length >= 1, 'kept for the next start');

  await gateway.start();
  const again = new FakeExtension(url());
  await again.connectReady(gateway);
  await waitFor(() => again.commands.length >= kept.length, 20_000, 'the kept sends');
  assert.deepEqual(again.commands.map((c) => c.requestId), kept, 'in order');
  const outcomes = await Promise.all(calls);
  const resolved = outcomes.filter((o) => o.value?.recovered);
  // (Media is loaded in parallel: the order sends reach their device is the store's.)
  assert.deepEqual(resolved.map((o) => o.value.requestId).sort(), [...kept].sort(), 'their promises resolve, recovered');
  assert.equal(sql(store, 'SELECT count(*) AS n FROM queued')[0].n, 0);
});

test('sends reaching one idle socket from several threads at once are each kept in the store before they wait for room', { timeout: 180_000 }, async (t) => {
  // Media sends reach their device from the runtime's threads as their media loads, so
  // several may find the same socket with nothing queued at the same moment. Each round
  // takes a fresh session whose socket is not read and sends it four large images at
  // once: one is written in part and stays so, the others wait for room. At a SIGKILL,
  // each waiting send must be in the store whole, so that the next start takes it up
  // again (none may end as "never queued").
  const store = storePath(t);
  // From a file: loaded on the runtime's threads, in parallel.
  const media = path.join(path.dirname(store), 'media');
  fs.mkdirSync(media);
  const file = path.join(media, 'big.png');
  fs.writeFileSync(file, Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), require('node:crypto').randomBytes(12 << 20)]));
  const options = { store, maxQueuedBytes: 1 << 20, maxMediaBytes: 64 << 20, waitForDevice: 0, mediaFileRoots: [media] };
  let node = await startNodeProcess(t, options);
  const imageUrl = require('node:url').pathToFileURL(file).href;
  const ids = [];
  const lost = [];
  for (let round = 0; round < 6; round++) {
    const apiKey = `race-key-${round}`;
    const extension = new FakeExtension(`ws://127.0.0.1:${node.port}/wa-ext-ws`, { apiKey, respond: () => null });
    await extension.open();
    await extension.authenticate();
    extension.sendStatus(true);
    t.after(() => extension.ws.terminate());
    await eventually(async () => (await node.request('sessions', { apiKey })).some((s) => s.deviceActive), 10_000, 'the device');
    extension.ws._socket.pause();
    const each = [0, 1, 2, 3].map((i) => ({ caption: `r${round}-${i}`, idempotencyKey: `${apiKey}-${i}` }));
    for (const { idempotencyKey } of each) ids.push({ apiKey, idempotencyKey });
    node.request('burst', { kind: 'image', apiKey, data: { phoneNumber: '+15550004321', imageUrl, timeout: 120_000 }, each }).catch(() => {});
    // Each is written (in part) or kept whole in the store, waiting for room: what the
    // store must hold once a send reached its device.
    const placed = () =>
      sql(store, `SELECT count(*) AS n FROM records r WHERE r.api_key = '${apiKey}'
                  AND (r.written = 1 OR EXISTS (SELECT 1 FROM queued q WHERE q.request_id = r.request_id))`)[0].n;
    await eventually(() => placed() === each.length, 20_000, `round ${round}: each send written or kept`).catch((error) => {
      lost.push(error.message);
    });
  }
  await new Promise((r) => setTimeout(r, 500)); // the store's commits of the moment
  await node.kill();

  node = await startNodeProcess(t, options);
  const states = [];
  for (const id of ids) {
    const status = await node.request('status', { lookup: id });
    states.push(`${id.idempotencyKey}: ${status?.state} ${status?.error?.message ?? ''}`);
  }
  assert.deepEqual(lost, [], 'no send waits for room without its row');
  assert.deepEqual(states.filter((s) => / failed /.test(s)), [], 'each went out (unknown) or is taken up again (queued)');
  assert.ok(states.some((s) => / queued /.test(s)), states.join('\n'));
});
