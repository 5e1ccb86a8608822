'use strict';
// Guarantees at the edges in cluster mode (README: "Delivery", "Cluster mode"): an
// idempotencyKey holds across processes however long its first call lasts, passes on
// only when its caller is gone and nothing was written, late truth reaches the calling
// process, and Redis trouble leaves local sends alone. Seen from the public API only.
const test = require('node:test');
const assert = require('node:assert/strict');
const { GOOD_KEY } = require('./helpers');
const { PROPAGATION_MS, PHONE, CLUSTER_TEST, sleep, eventually, settle, setUp, visibleOn } = require('./cluster-harness');

/** Short leases keep these tests short (300 ms is the least leaseMs takes). */
const SHORT_LEASE = 300;

/**
 * node-a with an extension answering by `respond`, node-c, and a calling process of its
 * own (killable) that sees the extension, all with short leases.
 */
async function callerAway(t, respond) {
  const cluster = await setUp(t);
  const options = { leaseMs: SHORT_LEASE };
  const a = await cluster.node({ nodeId: 'node-a', ...options });
  const c = await cluster.node({ nodeId: 'node-c', ...options });
  const caller = await cluster.nodeProcess({ nodeId: 'caller', ...options });
  const extension = await cluster.extension(a, { respond });
  await visibleOn([caller], extension);
  return { a, c, caller, extension };
}

test('an idempotencyKey holds for as long as its first call: a duplicate on another process after requestTimeout + leaseMs + 2 s is not sent again', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const options = { leaseMs: SHORT_LEASE, requestTimeout: 300 };
  const a = await cluster.node({ nodeId: 'node-a', ...options });
  const b = await cluster.node({ nodeId: 'node-b', ...options });
  const c = await cluster.node({ nodeId: 'node-c', ...options });
  let extension = null;
  extension = await cluster.extension(a, {
    respond: (command) => {
      // The first command is answered late (a slow phone); any other at once.
      const late = extension.commands.length === 1;
      if (!late) return { success: true, messageId: `wamid-${command.requestId}` };
      setTimeout(() => extension.result(command.requestId, { success: true, messageId: 'wamid-slow' }), 4000);
      return null;
    },
  });
  await visibleOn([a, b, c], extension);

  const send = { phoneNumber: PHONE, message: 'once only', idempotencyKey: 'long-call', timeout: 8000 };
  const first = b.gateway.sendMessage(GOOD_KEY, send);
  // Past what the key's record used to live (requestTimeout + leaseMs + 2 s), before the answer.
  await sleep(300 + SHORT_LEASE + 2000 + 600);
  const again = c.gateway.sendMessage(GOOD_KEY, send);
  const [one, two] = await Promise.all([settle(first, 15_000, 'the first call'), settle(again, 15_000, 'the retry')]);
  assert.equal(one.ok, true, one.error?.message);
  assert.equal(two.ok, true, two.error?.message);
  assert.equal(extension.commands.length, 1, 'the extension got the command once');
  assert.equal(two.value.duplicate, true);
  assert.equal(two.value.requestId, one.value.requestId);
  assert.equal(two.value.messageId, 'wamid-slow');
});

test('Redis down: a send to a local device works even for a key the process never sent on before', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a);
  await visibleOn([a, b], extension);
  await cluster.redis.kill();
  await sleep(200);
  const local = await settle(a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'first on this key here' }), 10_000, 'a local send');
  assert.equal(local.ok, true, local.error && `${local.error.code}: ${local.error.message}`);
  assert.equal(extension.commands.length, 1);
});

test('late truth across processes: the caller learns it, fires *-sent with late: true, and a duplicate elsewhere settles like a success with its metadata', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a, { respond: () => null });
  await visibleOn([a, b], extension);

  const metadata = { invoice: 'A-17' };
  const send = { phoneNumber: PHONE, message: 'slow', idempotencyKey: 'late-x', metadata };
  const timedOut = await settle(b.gateway.sendMessage(GOOD_KEY, { ...send, timeout: 500 }), 10_000, 'the call');
  assert.equal(timedOut.error?.code, 'REQUEST_TIMEOUT');
  const { requestId } = timedOut.error.details;
  assert.equal((await b.gateway.getMessageStatus(requestId)).state, 'unknown');
  const early = await settle(a.gateway.sendMessage(GOOD_KEY, send), 10_000, 'a retry before the truth');
  assert.equal(early.error?.code, 'REQUEST_TIMEOUT');
  assert.equal(early.error.details.duplicate, true);
  assert.equal(early.error.details.state, 'unknown');

  extension.result(requestId, { success: true, messageId: 'wamid-late' });
  const late = await eventually(() => b.events.find((e) => e.type === 'message-sent' && e.requestId === requestId), PROPAGATION_MS, 'the late message-sent on the caller');
  assert.equal(late.late, true);
  assert.deepEqual(late.metadata, metadata);
  assert.deepEqual(a.events.filter((e) => e.type === 'message-sent'), [], 'fired on the calling process only');
  assert.equal((await b.gateway.getMessageStatus(requestId)).state, 'sent');
  assert.equal((await a.gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'late-x' })).state, 'sent');

  const truth = await eventually(async () => {
    const retry = await settle(a.gateway.sendMessage(GOOD_KEY, send), 10_000, 'a retry after the truth');
    return retry.ok ? retry.value : null;
  }, PROPAGATION_MS, 'a retry to resolve');
  assert.equal(truth.duplicate, true);
  assert.equal(truth.requestId, requestId);
  assert.equal(truth.messageId, 'wamid-late');
  assert.deepEqual(truth.metadata, metadata);
  assert.equal(extension.commands.length, 1);
});

test('a key passes to a duplicate once its caller is gone and nothing was written; never once its command was', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const options = { leaseMs: SHORT_LEASE };
  const a = await cluster.node({ nodeId: 'node-a', ...options });
  const caller = await cluster.nodeProcess({ nodeId: 'caller', ...options });

  // Waiting for a device when its process dies: never written.
  const waiting = caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'hello', idempotencyKey: 'handed-over', waitForDevice: 30_000, timeout: 60_000 });
  waiting.catch(() => {});
  await sleep(500);
  const silentOne = await cluster.extension(a, { respond: () => null });
  await visibleOn([a], silentOne);
  // Written (to the silent device) when its process dies: maybe sent.
  const written = caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'maybe', idempotencyKey: 'maybe-sent', timeout: 60_000 });
  written.catch(() => {});
  await eventually(() => silentOne.commands.some((c) => c.data.message === 'maybe'), PROPAGATION_MS, 'the command to be written');
  // The waiting one may have found the device meanwhile: then it is written too.
  const waitingWasWritten = silentOne.commands.some((c) => c.data.message === 'hello');
  await caller.kill();

  const over = await settle(a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hello', idempotencyKey: 'handed-over', timeout: 1500 }), 15_000, 'the handed-over key');
  const hello = silentOne.commands.filter((c) => c.data.message === 'hello');
  assert.ok(hello.length <= 1, 'never written twice');
  if (over.error?.details?.duplicate === true && hello.length === 0) {
    // Killed after the waiting call had found the device and marked its command leaving,
    // before the command reached it: it may have been sent, so the duplicate is refused
    // with that said, and nothing is written.
    assert.equal(over.error.code, 'CONNECTION_LOST');
    assert.equal(over.error.details.state, 'unknown');
    assert.equal(over.error.details.sent, true);
  } else {
    assert.equal(hello.length, 1, 'written exactly once');
    if (!waitingWasWritten) {
      assert.equal(over.error?.code, 'REQUEST_TIMEOUT', 'sent by the duplicate (the device is silent)');
      assert.notEqual(over.error.details.duplicate, true);
    }
  }
  const maybe = await settle(a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'maybe', idempotencyKey: 'maybe-sent' }), 15_000, 'the maybe-sent key');
  assert.equal(maybe.ok, false);
  assert.equal(maybe.error.details.duplicate, true);
  assert.equal(maybe.error.details.state, 'unknown');
  assert.equal(silentOne.commands.filter((c) => c.data.message === 'maybe').length, 1, 'never written again');
});

test('a result naming a request no process remembers costs no Redis command', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const extension = await cluster.extension(a, { respond: () => null });
  await visibleOn([a], extension);
  const total = async () => Object.values(await cluster.redis.commandCounts()).reduce((sum, n) => sum + n, 0);
  const window = async (during) => {
    const before = await total();
    await during();
    return (await total()) - before;
  };
  const quiet = await window(() => sleep(1000));
  const noisy = await window(async () => {
    for (let i = 0; i < 500; i++) {
      extension.result(`00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, { success: true, messageId: 'x' });
    }
    await sleep(1000);
  });
  assert.ok(noisy - quiet < 100, `500 unknown results cost ${noisy - quiet} Redis commands more than a quiet second`);
});

test('getMessageStatus on any process answers for a send whose calling process died: settled as it ended, pending as unknown', CLUSTER_TEST, async (t) => {
  const { a, c, caller, extension } = await callerAway(t, (command) =>
    command.data.message === 'silent' ? null : { success: true, messageId: `wamid-${command.data.message}` },
  );
  const plain = await caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'plain' });
  const keyed = await caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'keyed', idempotencyKey: 'k-1', metadata: { n: 1 } });
  const silent = caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'silent', idempotencyKey: 'k-2', timeout: 3000 });
  silent.catch(() => {});
  await eventually(() => extension.commands.some((c) => c.data.message === 'silent'), PROPAGATION_MS, 'the silent command');
  const pendingId = extension.commands.find((c) => c.data.message === 'silent').requestId;
  await sleep(500); // a round of the caller's record writes
  await caller.kill();

  for (const node of [a, c]) {
    const one = await eventually(() => node.gateway.getMessageStatus(plain.requestId), PROPAGATION_MS, 'the plain send');
    assert.equal(one.state, 'sent');
    assert.equal(one.messageId, 'wamid-plain');
    const two = await node.gateway.getMessageStatus(keyed.requestId);
    assert.equal(two.state, 'sent');
    assert.deepEqual(two.metadata, { n: 1 });
  }
  // While its holder waits for the result, every process says so; once the holder's
  // wait ends, unknown (it may have gone out; its caller can no longer settle it).
  assert.equal((await c.gateway.getMessageStatus(pendingId)).state, 'in-flight');
  for (const node of [c, a]) {
    await eventually(async () => (await node.gateway.getMessageStatus(pendingId))?.state === 'unknown', PROPAGATION_MS, 'unknown');
  }
});

test('a late answer after its caller timed out and died: the holder and every other process say what the extension told', CLUSTER_TEST, async (t) => {
  // Answered only when the test says: after the call has timed out and its caller is gone.
  const { a, c, caller, extension } = await callerAway(t, () => null);
  const call = caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'late', idempotencyKey: 'late-1', timeout: 800 });
  const outcome = await settle(call, 10_000, 'the call');
  assert.equal(outcome.ok, false);
  assert.equal(outcome.error.code, 'REQUEST_TIMEOUT');
  const requestId = extension.commands[0].requestId;
  await sleep(500); // a round of the caller's record writes: Redis has it as unknown
  await caller.kill();
  extension.result(requestId, { success: true, messageId: 'wamid-late' });
  for (const node of [a, c]) {
    let last;
    const status = await eventually(
      async () => {
        last = await node.gateway.getMessageStatus(requestId);
        return last?.state === 'sent' ? last : null;
      },
      PROPAGATION_MS,
      `the extension's word on ${node.nodeId}`,
    ).catch((error) => assert.fail(`${error.message}; its status: ${JSON.stringify(last)}`));
    assert.equal(status.messageId, 'wamid-late');
    const byKey = await node.gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'late-1' });
    assert.equal(byKey?.state, 'sent', `by its idempotencyKey on ${node.nodeId}: ${JSON.stringify(byKey)}`);
    assert.equal(byKey.requestId, requestId);
  }
});

test('a record that changes while Redis is down reaches Redis once it is back: another process answers for it after its caller died', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const options = { leaseMs: SHORT_LEASE };
  const caller = await cluster.nodeProcess({ nodeId: 'caller', ...options });
  const c = await cluster.node({ nodeId: 'node-c', ...options });
  const extension = await cluster.extension(caller, { respond: () => ({ success: true, messageId: 'wamid-offline' }) });
  await visibleOn([caller, c], extension);
  await cluster.redis.kill();
  await sleep(300);
  // A local send while Redis is down: it settles on the caller, whose record changes then.
  const sent = await caller.send('message', GOOD_KEY, { phoneNumber: PHONE, message: 'while Redis is down', metadata: { n: 2 } });
  await cluster.redis.spawn();
  const key = `wa-gw:status:${sent.requestId}`;
  const stored = await eventually(async () => {
    const text = await cluster.redis.command('GET', key).catch(() => null);
    return text && JSON.parse(text).state === 'sent' ? text : null;
  }, PROPAGATION_MS + 5000, 'the settled record in Redis');
  assert.ok(stored);
  await caller.kill();
  const status = await eventually(() => c.gateway.getMessageStatus(sent.requestId), PROPAGATION_MS, 'the record on node-c');
  assert.equal(status.state, 'sent');
  assert.equal(status.messageId, 'wamid-offline');
  assert.deepEqual(status.metadata, { n: 2 });
});

test('cluster mode: stop({ drainMs }) caps the drain at drainMs instead of requestTimeout', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a', requestTimeout: 20_000 });
  const extension = await cluster.extension(a, { respond: () => null });
  await visibleOn([a], extension);
  const call = settle(a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'never answered' }), 30_000, 'the call');
  await eventually(() => extension.commands.length === 1, PROPAGATION_MS, 'the command');
  const started = Date.now();
  await a.gateway.stop({ drainMs: 300 });
  const took = Date.now() - started;
  assert.ok(took < 300 + 5000, `stop() took ${took} ms`);
  const outcome = await call;
  assert.equal(outcome.error?.code, 'GATEWAY_SHUTDOWN');
});
