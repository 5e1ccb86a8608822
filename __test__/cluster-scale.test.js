'use strict';
// Cluster mode at scale (README "Cluster mode"): idle sessions cost Redis per process,
// not per session; a session that connects on one process is usable from another within
// a second. Gateways run in child processes on a throwaway redis-server; the extensions
// are simulated here. What Redis serves is read from its own INFO commandstats.
const test = require('node:test');
const assert = require('node:assert/strict');
const { FakeExtension, eventually } = require('./helpers');
const { startRedis, redisSkipReason, sleep } = require('./redis');
const { startNodeProcess } = require('./cluster-node');

const skip = redisSkipReason() ?? false;
const PHONE = '+15550001111';

/** Every command Redis ran (scripts' own commands included), but our INFO. */
async function commandsSoFar(redis) {
  const counts = await redis.commandCounts();
  let total = 0;
  for (const [name, calls] of Object.entries(counts)) if (name !== 'info') total += calls;
  return { total, counts };
}

/** Opens `count` extensions, `parallel` at a time, each authenticated and ready. */
async function connectMany(t, specs, parallel = 50) {
  const extensions = [];
  t.after(() => {
    for (const extension of extensions) extension.ws?.terminate();
  });
  let next = 0;
  const worker = async () => {
    while (next < specs.length) {
      const { url, apiKey } = specs[next++];
      const extension = new FakeExtension(url, { apiKey });
      extensions.push(extension);
      await extension.open();
      await extension.authenticate();
      extension.sendStatus(true);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return extensions;
}

test('idle sessions cost Redis per process: 2000 ready sessions on 200 keys over 2 processes make at most 20 commands/s', { timeout: 180_000, skip }, async (t) => {
  const redis = await startRedis(t);
  // Default lease and heartbeat: what an operator gets.
  const cluster = { redis: redis.url };
  const nodes = [await startNodeProcess(t, { cluster }, { forward: false }), await startNodeProcess(t, { cluster }, { forward: false })];
  const keys = Array.from({ length: 200 }, (_, i) => `idle-key-${String(i).padStart(4, '0')}-0123456789`);
  const specs = [];
  for (let i = 0; i < 2000; i++) {
    const node = nodes[i % 2];
    specs.push({ url: `ws://127.0.0.1:${node.port}/wa-ext-ws`, apiKey: keys[i % keys.length] });
  }
  await connectMany(t, specs);
  await eventually(
    async () => (await Promise.all(nodes.map((n) => n.request('health')))).every((h) => h.activeSessions === 2000),
    30_000,
    'both processes to count 2000 sessions',
  );
  await eventually(
    async () => (await nodes[1].request('sessions', { apiKey: keys[7] })).filter((s) => s.deviceActive).length === 10,
    10_000,
    'a key\'s ten sessions active as seen from the other process',
  );
  // What connecting wrote is over; then the sessions stay idle (no status, no send).
  await sleep(2000);
  const windowMs = 20_000;
  const before = await commandsSoFar(redis);
  const startedAt = Date.now();
  await sleep(windowMs);
  const after = await commandsSoFar(redis);
  const seconds = (Date.now() - startedAt) / 1000;
  const perSecond = (after.total - before.total) / seconds;
  const mix = Object.entries(after.counts)
    .map(([name, calls]) => [name, calls - (before.counts[name] ?? 0)])
    .filter(([name, delta]) => name !== 'info' && delta > 0)
    .map(([name, delta]) => `${name} ${(delta / seconds).toFixed(2)}/s`)
    .join(', ');
  t.diagnostic(`idle: ${perSecond.toFixed(2)} commands/s (${mix})`);
  assert.ok(perSecond <= 20, `${perSecond.toFixed(1)} commands/s with 2000 idle sessions on 2 processes (${mix})`);
  // Still one cluster: both processes see every session.
  const health = await Promise.all(nodes.map((n) => n.request('health')));
  assert.deepEqual(health.map((h) => h.activeSessions), [2000, 2000]);
});

test('a session that connects on one process is usable from another within a second', { timeout: 60_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const cluster = { redis: redis.url };
  const a = await startNodeProcess(t, { cluster });
  const b = await startNodeProcess(t, { cluster });
  const apiKey = 'visible-key-0123456789';
  const url = `ws://127.0.0.1:${a.port}/wa-ext-ws`;
  // B has read the key's listing lately (its first device answered a send from B).
  await connectMany(t, [{ url, apiKey }]);
  await eventually(async () => (await b.request('sessions', { apiKey })).some((s) => s.deviceActive), 10_000, 'the first device seen from B');
  const warm = await b.send('message', apiKey, { phoneNumber: PHONE, message: 'warm' });
  assert.equal(warm.success, true);

  for (let round = 0; round < 3; round++) {
    const [extension] = await connectMany(t, [{ url, apiKey }]);
    const connectedAt = Date.now();
    await eventually(
      async () => (await b.request('sessions', { apiKey })).some((s) => s.sessionId === extension.sessionId && s.deviceActive),
      5000,
      'the new session active as seen from B',
    );
    const listedMs = Date.now() - connectedAt;
    // Round-robin from B over the key's devices reaches the new one once B sees it.
    await eventually(
      async () => {
        const result = await b.send('message', apiKey, { phoneNumber: PHONE, message: `round ${round}` });
        return result.deviceInfo.sessionId === extension.sessionId;
      },
      5000,
      'a send from B to reach the new device',
    );
    const usableMs = Date.now() - connectedAt;
    t.diagnostic(`round ${round}: listed after ${listedMs} ms, a send from B reached it after ${usableMs} ms`);
    assert.ok(listedMs <= 1000, `listed on B after ${listedMs} ms`);
    // B reads a key's listing again at most a second after its last read.
    assert.ok(usableMs <= 2000, `usable from B after ${usableMs} ms`);
  }
});

test('what changes while Redis is briefly away (less than a lease, nothing lost) is written once it is back: a status, a connect, a leave', { timeout: 90_000, skip }, async (t) => {
  // Redis keeps its data across the restart (append-only file): the leases survive, so
  // nothing is republished wholesale; only what changed meanwhile must be written.
  const redis = await startRedis(t, { args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
  const cluster = { redis: redis.url, leaseMs: 8000 };
  const a = await startNodeProcess(t, { cluster });
  const b = await startNodeProcess(t, { cluster });
  const url = `ws://127.0.0.1:${a.port}/wa-ext-ws`;
  const apiKey = 'away-key-0123456789';
  const [changing, leaving] = await connectMany(t, [{ url, apiKey }, { url, apiKey }]);
  const activeOnB = async () => (await b.request('sessions', { apiKey })).filter((s) => s.deviceActive).map((s) => s.sessionId).sort();
  await eventually(async () => (await activeOnB()).length === 2, 10_000, 'both sessions seen from B');

  await redis.stop();
  await eventually(async () => (await a.request('health')).cluster.redis === 'reconnecting', 10_000, 'A to notice');
  changing.sendStatus(false);
  await leaving.close();
  const [arriving] = await connectMany(t, [{ url, apiKey }]);
  await sleep(300);
  await redis.spawn();

  await eventually(
    async () => JSON.stringify(await activeOnB()) === JSON.stringify([arriving.sessionId]),
    5000,
    'B to see only the session that arrived as active',
  );
  const all = await b.request('sessions', { apiKey });
  assert.deepEqual(all.map((s) => s.sessionId).sort(), [changing.sessionId, arriving.sessionId].sort(), 'the session that left is not listed');
  assert.equal(all.find((s) => s.sessionId === changing.sessionId).ready, false);
});

test('idempotency survives a Redis restarted empty while the recording process lives: a retry on another process settles like the first, never sent twice', { timeout: 90_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const cluster = { redis: redis.url, leaseMs: 3000 };
  const a = await startNodeProcess(t, { cluster });
  const b = await startNodeProcess(t, { cluster });
  const apiKey = 'restart-key-0123456789';
  const [extension] = await connectMany(t, [{ url: `ws://127.0.0.1:${a.port}/wa-ext-ws`, apiKey }]);
  // The second call's result is held back until after the restart: it is pending there.
  let held;
  extension.respond = (command) => {
    if (command.data.message === 'pending across') {
      held = command;
      return null;
    }
    return { success: true, messageId: `wamid-${command.requestId}` };
  };
  await eventually(async () => (await b.request('sessions', { apiKey })).some((s) => s.deviceActive), 10_000, 'the device seen from B');

  const settled = await a.send('message', apiKey, { phoneNumber: PHONE, message: 'settled before', idempotencyKey: 'order-settled' });
  assert.equal(settled.success, true);
  const later = await a.send('message', apiKey, { phoneNumber: PHONE, message: 'retried later', idempotencyKey: 'order-later' });
  const pending = a.send('message', apiKey, { phoneNumber: PHONE, message: 'pending across', idempotencyKey: 'order-pending', timeout: 30_000 });
  await eventually(() => held, 10_000, 'the pending call to reach the extension');

  await redis.restart();
  assert.equal(await redis.command('DBSIZE'), 0, 'Redis came back empty');

  // Retried on the other process at once, before any lease round after the restart. Until
  // B has its connection back it refuses (CLUSTER_UNAVAILABLE, nothing sent), as while
  // Redis is away; a caller retries.
  const refusals = [];
  const retry = async (data) => {
    const until = Date.now() + 15_000;
    for (;;) {
      try {
        return await b.send('message', apiKey, { phoneNumber: PHONE, ...data });
      } catch (error) {
        if (error.code !== 'CLUSTER_UNAVAILABLE' || Date.now() > until) throw error;
        assert.equal(error.details.sent, false, error.message);
        refusals.push(error.message);
        await sleep(100);
      }
    }
  };
  const retrySettled = await retry({ message: 'settled before', idempotencyKey: 'order-settled' });
  assert.equal(retrySettled.duplicate, true);
  assert.equal(retrySettled.requestId, settled.requestId);
  assert.equal(retrySettled.messageId, settled.messageId);
  const retryLater = await retry({ message: 'retried later', idempotencyKey: 'order-later' });
  assert.equal(retryLater.duplicate, true);
  assert.equal(retryLater.requestId, later.requestId);

  const retryPending = retry({ message: 'pending across', idempotencyKey: 'order-pending', timeout: 30_000 });
  await sleep(500);
  extension.result(held.requestId, { success: true, messageId: 'wamid-pending' });
  const [first, again] = await Promise.all([pending, retryPending]);
  assert.equal(first.messageId, 'wamid-pending');
  assert.equal(again.duplicate, true);
  assert.equal(again.requestId, first.requestId);
  assert.equal(again.messageId, 'wamid-pending');
  t.diagnostic(`refused while B reconnected: ${refusals.length}`);

  // And later retries on either process, once the round is over.
  for (const node of [a, b]) {
    const repeat = await node.send('message', apiKey, { phoneNumber: PHONE, message: 'settled before', idempotencyKey: 'order-settled' });
    assert.equal(repeat.requestId, settled.requestId);
  }
  const written = (text) => extension.commands.filter((c) => c.data.message === text).length;
  assert.equal(written('settled before'), 1, 'the settled call written once');
  assert.equal(written('retried later'), 1, 'the call retried later written once');
  assert.equal(written('pending across'), 1, 'the pending call written once');
});

test('a Redis restarted empty while a send crosses processes: the answer reaches the caller once its inbox is made again', { timeout: 90_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const cluster = { redis: redis.url, leaseMs: 3000 };
  const holder = await startNodeProcess(t, { cluster });
  const caller = await startNodeProcess(t, { cluster });
  const apiKey = 'across-key-0123456789';
  const [extension] = await connectMany(t, [{ url: `ws://127.0.0.1:${holder.port}/wa-ext-ws`, apiKey }]);
  extension.respond = () => null;
  await eventually(async () => (await caller.request('sessions', { apiKey })).some((s) => s.deviceActive), 10_000, 'the device seen from the caller');
  for (let round = 0; round < 3; round++) {
    const send = caller.send('message', apiKey, { phoneNumber: PHONE, message: `across ${round}`, timeout: 20_000 });
    const command = await eventually(() => extension.commands.find((c) => c.data.message === `across ${round}`), 10_000, 'the command');
    await redis.restart();
    // Answered at once: the caller's inbox may not be there yet.
    extension.result(command.requestId, { success: true, messageId: `wamid-${round}` });
    const result = await send.catch((e) => { throw new Error(`round ${round}: ${e.message}`); });
    assert.equal(result.requestId, command.requestId);
    assert.equal(result.messageId, `wamid-${round}`);
    await sleep(1000);
  }
});

test('status records survive a Redis restarted empty while their calling process lives: another process answers for them, by request id and by idempotencyKey, even once that process is gone', { timeout: 90_000, skip }, async (t) => {
  const redis = await startRedis(t);
  const cluster = { redis: redis.url, leaseMs: 3000 };
  const a = await startNodeProcess(t, { cluster });
  const b = await startNodeProcess(t, { cluster });
  const apiKey = 'status-key-0123456789';
  const [extension] = await connectMany(t, [{ url: `ws://127.0.0.1:${a.port}/wa-ext-ws`, apiKey }]);
  await eventually(async () => (await b.request('sessions', { apiKey })).some((s) => s.deviceActive), 10_000, 'the device seen from B');

  const keyed = await a.send('message', apiKey, { phoneNumber: PHONE, message: 'keyed', idempotencyKey: 'order-1', metadata: { order: 1 } });
  const plain = await a.send('message', apiKey, { phoneNumber: PHONE, message: 'plain' });
  extension.send({ type: 'message-ack', requestId: plain.requestId, ack: 'delivered' });
  const lookups = [keyed.requestId, plain.requestId, { apiKey, idempotencyKey: 'order-1' }];
  const expected = [
    { requestId: keyed.requestId, state: 'sent', messageId: keyed.messageId, metadata: { order: 1 } },
    { requestId: plain.requestId, state: 'sent', messageId: plain.messageId, ack: 'delivered' },
    { requestId: keyed.requestId, state: 'sent', messageId: keyed.messageId, idempotencyKey: 'order-1' },
  ];
  const answers = (node) => Promise.all(lookups.map((lookup) => node.request('status', { lookup })));
  const matches = (records) =>
    records.every((record, i) => record && Object.entries(expected[i]).every(([k, v]) => JSON.stringify(record[k]) === JSON.stringify(v)));
  await eventually(async () => matches(await answers(b)), 10_000, 'the records answered by B before the restart');
  const statusKeys = (ids) => Promise.all(ids.map(async (id) => (await redis.command('KEYS', `*status:${id}`)).length));
  const stored = (id) => redis.command('GET', `wa-gw:status:${id}`);
  // Every change written before the restart (the ack too): nothing left to write then.
  await eventually(async () => (await stored(plain.requestId))?.includes('delivered'), 10_000, 'the ack in Redis');

  await redis.restart();
  assert.equal(await redis.command('DBSIZE'), 0, 'Redis came back empty');

  // B answers again once it has its connection back; A writes its records again
  // within a lease round or two of the restart (in Redis for anyone, as before).
  await eventually(async () => matches(await answers(b)), 15_000, 'the records answered by B after the restart');
  await eventually(async () => (await statusKeys([keyed.requestId, plain.requestId])).every((n) => n === 1), 15_000, 'the status records in Redis again');
  assert.ok((await stored(plain.requestId)).includes('delivered'), 'written as it is now');

  // A is gone (SIGKILL): its records in Redis still answer, as they ended.
  await a.kill();
  const after = await answers(b);
  assert.ok(matches(after), `B answers once A is gone: ${JSON.stringify(after)}`);
});
