'use strict';
// Cluster mode over Redis (README "Cluster mode"), seen from the public API only: two or three
// gateways (in this process with different nodeIds, or in child processes where one
// must die by SIGKILL) share a throwaway redis-server on loopback; simulated extensions
// connect to one gateway and sends are called on another. Nothing here knows how the
// gateway lays its data out in Redis.
const test = require('node:test');
const assert = require('node:assert/strict');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, GOOD_KEY, OTHER_KEY, PNG_1x1 } = require('./helpers');
const { TestRedis } = require('./redis');
const { freePort } = require('./free-port');

const {
  LEASE_MS,
  PROPAGATION_MS,
  PHONE,
  CLUSTER_TEST,
  sleep,
  eventually,
  settle,
  setUp,
  visibleOn,
} = require('./cluster-harness');

const outcomes = (events, requestId) =>
  events.filter((e) => e.requestId === requestId && (e.type.endsWith('-sent') || e.type === 'send-failed'));

test('a send called on one process reaches a device on another and resolves there, with the requestId the extension answered', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  let answer = (command) => ({ success: true, messageId: `wamid-${command.requestId}` });
  const extension = await cluster.extension(a, { respond: (command) => answer(command) });
  await visibleOn([a, b], extension);

  const result = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'across processes' });
  assert.equal(extension.commands.length, 1);
  const [command] = extension.commands;
  assert.equal(command.type, 'send-message');
  assert.deepEqual(command.data, { phoneNumber: PHONE, message: 'across processes' });
  assert.equal(result.success, true);
  assert.equal(result.requestId, command.requestId);
  assert.equal(result.messageId, `wamid-${command.requestId}`);
  assert.equal(result.deviceInfo.sessionId, extension.sessionId);

  // *-sent fires on the caller only; session events only on the holder.
  await eventually(() => outcomes(b.events, result.requestId).length === 1, 5000, 'message-sent on the calling process');
  assert.equal(outcomes(b.events, result.requestId)[0].type, 'message-sent');
  assert.equal(outcomes(b.events, result.requestId)[0].phoneNumber, PHONE);
  const sessionEvents = (events) => events.filter((e) => e.type.startsWith('session-') && e.sessionId === extension.sessionId).map((e) => e.type);
  assert.deepEqual([...new Set(sessionEvents(a.events))].sort(), ['session-connected', 'session-status']);
  assert.deepEqual(sessionEvents(b.events), []);

  // The command written for a remote caller is the one a local caller gets (media
  // loaded on the caller and carried along included).
  const local = await a.gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'dot' });
  const remote = await b.gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'dot' });
  const [localCommand, remoteCommand] = extension.commands.slice(1);
  assert.equal(localCommand.requestId, local.requestId);
  assert.equal(remoteCommand.requestId, remote.requestId);
  assert.equal(remoteCommand.type, 'send-image');
  assert.deepEqual(remoteCommand.data, localCommand.data);

  // An extension's failure comes back to the caller as EXTENSION_ERROR, send-failed there.
  answer = () => ({ success: false, error: 'chat not found' });
  const failed = await settle(b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'fails' }), 10_000, 'the failing send');
  assert.equal(failed.ok, false);
  assert.equal(failed.error.code, 'EXTENSION_ERROR', failed.error.message);
  const failedCommand = extension.commands.at(-1);
  assert.equal(failed.error.details.requestId, failedCommand.requestId);
  assert.equal(failed.error.details.sessionId, extension.sessionId);
  await eventually(() => outcomes(b.events, failedCommand.requestId).length === 1, 5000, 'send-failed on the calling process');
  assert.equal(outcomes(b.events, failedCommand.requestId)[0].type, 'send-failed');
  assert.deepEqual(outcomes(a.events, failedCommand.requestId), []);
  assert.deepEqual(outcomes(a.events, result.requestId), []);

  // No answer within the call's timeout: REQUEST_TIMEOUT on the caller, naming the request.
  answer = () => null;
  const silent = await settle(b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'unanswered', timeout: 500 }), 10_000, 'the unanswered send');
  assert.equal(silent.error?.code, 'REQUEST_TIMEOUT', silent.error?.message ?? 'the unanswered send resolved');
  const silentCommand = extension.commands.at(-1);
  assert.equal(silent.error.details.requestId, silentCommand.requestId, `details: ${JSON.stringify(silent.error.details)}`);
  assert.equal(silent.error.details.sessionId, extension.sessionId);
  assert.equal(silent.error.details.timeout, 500);
  await eventually(() => outcomes(b.events, silentCommand.requestId).length === 1, 5000, 'send-failed for the timeout on the caller');
  assert.deepEqual(outcomes(a.events, silentCommand.requestId), []);
});

test('getActiveSessions and getAllSessions are cluster-wide promises, each session with its nodeId and every 2.2 field', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const onA = await cluster.extension(a);
  const onB = await cluster.extension(b);
  const other = await cluster.extension(b, { apiKey: OTHER_KEY });
  await visibleOn([a, b], onA);
  await visibleOn([a, b], onB);
  await visibleOn([a, b], other);

  const pending = a.gateway.getActiveSessions(GOOD_KEY);
  assert.ok(pending instanceof Promise, 'getActiveSessions returns a promise in cluster mode');
  assert.ok(a.gateway.getAllSessions() instanceof Promise, 'getAllSessions returns a promise in cluster mode');

  const fields = ['sessionId', 'status', 'ready', 'whatsappLoggedIn', 'deviceActive', 'connectedAt', 'lastHeartbeat', 'lastStatusUpdate', 'extensionVersion', 'browser', 'ip', 'userId', 'nodeId'];
  for (const node of [a, b]) {
    const sessions = await node.gateway.getActiveSessions(GOOD_KEY);
    assert.deepEqual(sessions.map((s) => s.sessionId).sort(), [onA.sessionId, onB.sessionId].sort());
    for (const session of sessions) {
      for (const field of fields) assert.ok(field in session, `session lacks ${field}: ${JSON.stringify(session)}`);
      assert.equal(session.nodeId, session.sessionId === onA.sessionId ? 'node-a' : 'node-b');
      assert.equal(session.deviceActive, true);
      assert.equal(session.whatsappLoggedIn, true);
      assert.equal(session.extensionVersion, '1.0.0');
      assert.equal(session.browser, 'Chrome');
      assert.equal(session.userId, `user-${GOOD_KEY.slice(0, 4)}`);
    }
    const all = await node.gateway.getAllSessions();
    const byId = new Map(all.map((s) => [s.sessionId, s]));
    assert.equal(byId.get(onA.sessionId)?.apiKey, GOOD_KEY);
    assert.equal(byId.get(onA.sessionId)?.nodeId, 'node-a');
    assert.equal(byId.get(other.sessionId)?.apiKey, OTHER_KEY);
    assert.equal(byId.get(other.sessionId)?.nodeId, 'node-b');
  }

  // A status change and a departure show on the other process too.
  onA.sendStatus(false);
  await eventually(
    async () => (await b.gateway.getActiveSessions(GOOD_KEY)).some((s) => s.sessionId === onA.sessionId && s.deviceActive === false),
    PROPAGATION_MS,
    'the not-ready status to show on the other process',
  );
  await onB.close();
  await eventually(
    async () => !(await a.gateway.getActiveSessions(GOOD_KEY)).some((s) => s.sessionId === onB.sessionId),
    PROPAGATION_MS,
    'a closed session to leave the other process view',
  );
});

test('getHealth() stays synchronous and adds cluster { nodeId, nodes, redis } and localSessions', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a);
  await visibleOn([a, b], extension);

  const health = a.gateway.getHealth();
  assert.ok(!(health instanceof Promise), 'getHealth is synchronous');
  assert.equal(health.status, 'running');
  assert.equal(health.cluster.nodeId, 'node-a');
  assert.equal(health.cluster.redis, 'connected');
  assert.equal(health.localSessions, 1);
  await eventually(() => a.gateway.getHealth().cluster.nodes === 2, PROPAGATION_MS, 'node-a to count 2 nodes');
  await eventually(() => b.gateway.getHealth().cluster.nodes === 2, PROPAGATION_MS, 'node-b to count 2 nodes');
  await eventually(() => b.gateway.getHealth().activeSessions === 1, PROPAGATION_MS, 'node-b to count the session of node-a');
  const onB = b.gateway.getHealth();
  assert.equal(onB.cluster.nodeId, 'node-b');
  assert.equal(onB.localSessions, 0);
  assert.equal(a.gateway.getHealth().activeSessions, 1);

  await b.gateway.stop();
  await eventually(() => a.gateway.getHealth().cluster.nodes === 1, LEASE_MS + PROPAGATION_MS, 'a stopped process to leave the node count');
});

test('round-robin spreads each caller sends evenly over devices on two processes; random uses both', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const onA = await cluster.extension(a);
  const onB = await cluster.extension(b);
  await visibleOn([a, b], onA);
  await visibleOn([a, b], onB);

  for (let i = 0; i < 10; i++) await a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `from a ${i}` });
  assert.deepEqual([onA.commands.length, onB.commands.length], [5, 5]);
  for (let i = 0; i < 10; i++) await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `from b ${i}` });
  assert.deepEqual([onA.commands.length, onB.commands.length], [10, 10]);

  for (let i = 0; i < 40; i++) {
    await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `random ${i}`, deviceSelectionStrategy: 'random' });
  }
  assert.equal(onA.commands.length + onB.commands.length, 60);
  assert.ok(onA.commands.length > 10 && onB.commands.length > 10, `random picked only one device: ${onA.commands.length}/${onB.commands.length}`);
});

test('maxSessionsPerKey holds across processes: of simultaneous connects on two processes exactly the limit is admitted', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a', maxSessionsPerKey: 2 });
  const b = await cluster.node({ nodeId: 'node-b', maxSessionsPerKey: 2 });
  const extensions = [a, b, a, b, a, b].map((node) => new FakeExtension(node.url));
  for (const extension of extensions) cluster.cleanups.push(() => extension.ws?.terminate());
  await Promise.all(extensions.map((extension) => extension.open()));
  const auths = await Promise.allSettled(extensions.map((extension) => extension.authenticate()));
  const admitted = extensions.filter((_, i) => auths[i].status === 'fulfilled');
  const refusals = auths.filter((r) => r.status === 'rejected').map((r) => r.reason.frame?.code ?? r.reason.message);
  assert.equal(admitted.length, 2, `admitted ${admitted.length}; refusals: ${refusals.join(', ')}`);
  assert.deepEqual(refusals, ['MAX_SESSIONS_EXCEEDED', 'MAX_SESSIONS_EXCEEDED', 'MAX_SESSIONS_EXCEEDED', 'MAX_SESSIONS_EXCEEDED']);
  for (const extension of admitted) extension.sendStatus(true);
  for (const extension of admitted) await visibleOn([a, b], extension);
  assert.equal((await a.gateway.getActiveSessions(GOOD_KEY)).length, 2);

  // A session that leaves frees its place for a connect on either process.
  await admitted[0].close();
  const otherUrl = (admitted[0].url === a.url ? b : a).url;
  await eventually(
    async () => {
      const late = new FakeExtension(otherUrl);
      cluster.cleanups.push(() => late.ws?.terminate());
      await late.open();
      try {
        await late.authenticate();
        return true;
      } catch (error) {
        if (error.frame?.code !== 'MAX_SESSIONS_EXCEEDED') throw error;
        return false;
      }
    },
    PROPAGATION_MS,
    'a freed place to be usable from the other process',
  );
});

test('a SIGKILLed holder: in-flight sends from another process reject REQUEST_TIMEOUT if their timeout ends first, else CONNECTION_LOST, and the dead sessions leave the registry', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const holder = await cluster.nodeProcess({ nodeId: 'doomed' });
  const caller = await cluster.node({ nodeId: 'survivor' });
  const extension = await cluster.extension(holder, { respond: () => null });
  await visibleOn([caller], extension);
  await eventually(() => caller.gateway.getHealth().cluster.nodes === 2, PROPAGATION_MS, 'the caller to count 2 nodes');

  // The timeout is far beyond leaseMs + 1 s: CONNECTION_LOST must come first.
  const sending = caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'to a doomed process', timeout: 30_000 });
  const command = await extension.next((f) => f.type === 'send-message', 10_000);
  // This one's timeout ends before leaseMs + 1 s: its REQUEST_TIMEOUT comes first.
  const shortLived = caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'short timeout', timeout: 1200 });
  const shortCommand = await extension.next((f) => f.type === 'send-message', 10_000);
  const killedAt = Date.now();
  await holder.kill();
  const short = await settle(shortLived, 25_000, 'the short send to a killed process');
  assert.equal(short.error?.code, 'REQUEST_TIMEOUT', short.error?.message ?? 'the short send resolved');
  const outcome = await settle(sending, 25_000, 'the send to a killed process');
  const took = Date.now() - killedAt;
  assert.equal(outcome.ok, false, 'the send resolved although its device died');
  assert.equal(outcome.error.code, 'CONNECTION_LOST', `${outcome.error.code}: ${outcome.error.message} (after ${took} ms)`);
  await eventually(
    () => caller.events.some((e) => e.type === 'send-failed' && e.details?.code === 'CONNECTION_LOST'),
    5000,
    'send-failed on the caller',
  );

  await eventually(
    async () => (await caller.gateway.getActiveSessions(GOOD_KEY)).length === 0,
    LEASE_MS + PROPAGATION_MS,
    'the dead process sessions to leave the registry',
  );
  await eventually(() => caller.gateway.getHealth().cluster.nodes === 1, LEASE_MS + PROPAGATION_MS, 'the dead process to leave the node count');
  const after = await settle(caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'nobody left' }), 10_000, 'a send after the death');
  assert.equal(after.error?.code, 'NO_ACTIVE_DEVICE');
  // Last, so that the rest is checked whatever these say.
  assert.equal(outcome.error.details?.requestId, command.requestId, `CONNECTION_LOST details: ${JSON.stringify(outcome.error.details)}`);
  assert.equal(outcomes(caller.events, command.requestId).length, 1, 'one send-failed on the caller for the lost send');
  assert.equal(short.error.details?.requestId, shortCommand.requestId, `REQUEST_TIMEOUT details: ${JSON.stringify(short.error.details)}`);
  assert.equal(short.error.details?.timeout, 1200, `REQUEST_TIMEOUT details: ${JSON.stringify(short.error.details)}`);
});

test('Redis killed: local sends keep working, remote ones reject CLUSTER_UNAVAILABLE, health says reconnecting; back after a restart', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const onA = await cluster.extension(a, { apiKey: GOOD_KEY });
  const onB = await cluster.extension(b, { apiKey: OTHER_KEY });
  await visibleOn([a, b], onA);
  await visibleOn([a, b], onB);

  await cluster.redis.kill();
  for (const node of [a, b]) {
    await eventually(() => node.gateway.getHealth().cluster.redis === 'reconnecting', PROPAGATION_MS, 'health to say reconnecting');
    assert.equal(node.gateway.getHealth().status, 'running');
  }
  const local = await settle(a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'local while Redis is down' }), 10_000, 'a local send');
  assert.equal(local.ok, true, local.error && `${local.error.code}: ${local.error.message}`);
  assert.equal(onA.commands.length, 1);
  const remote = await settle(a.gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'needs node-b' }), 10_000, 'a remote send');
  assert.equal(remote.error?.code, 'CLUSTER_UNAVAILABLE', remote.error?.message ?? 'the remote send resolved');
  assert.equal(onB.commands.length, 0);
  assert.equal(onA.commands.length, 1);

  // Redis comes back empty: both republish, cross-process sends work again.
  await cluster.redis.restart();
  for (const node of [a, b]) {
    await eventually(() => node.gateway.getHealth().cluster.redis === 'connected', PROPAGATION_MS, 'health to say connected again');
  }
  await visibleOn([b], onA);
  await visibleOn([a], onB);
  const again = await settle(a.gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'after the outage' }), 10_000, 'a remote send after the outage');
  assert.equal(again.ok, true, again.error && `${again.error.code}: ${again.error.message}`);
  assert.equal(onB.commands.length, 1);
});

test('while Redis is unreachable a send with an idempotencyKey rejects CLUSTER_UNAVAILABLE at once, even with a local device', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const alone = await cluster.node({ nodeId: 'alone', url: `redis://127.0.0.1:${await freePort()}` });
  const extension = await cluster.extension(alone);
  await visibleOn([alone], extension);
  const idempotent = await settle(
    alone.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'idempotent', idempotencyKey: 'while-down' }),
    10_000,
    'an idempotent send',
  );
  assert.equal(idempotent.error?.code, 'CLUSTER_UNAVAILABLE', idempotent.error?.message ?? 'the idempotent send resolved');
  assert.equal(extension.commands.length, 0);
  const plain = await settle(alone.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'plain' }), 10_000, 'a plain local send');
  assert.equal(plain.ok, true, plain.error && `${plain.error.code}: ${plain.error.message}`);
});

test('Redis restarted empty: sessions are republished within seconds and a send across the restart settles once', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a, { respond: () => null });
  await visibleOn([a, b], extension);

  const across = b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'across a restart', timeout: 8000 });
  const command = await extension.next((f) => f.type === 'send-message', 10_000);
  await cluster.redis.restart();
  extension.result(command.requestId, { success: true, messageId: 'wamid-across' });
  const outcome = await settle(across, 20_000, 'the send across the restart');
  if (outcome.ok) {
    assert.equal(outcome.value.requestId, command.requestId);
    assert.equal(outcome.value.messageId, 'wamid-across');
  } else {
    assert.ok(['REQUEST_TIMEOUT', 'CONNECTION_LOST'].includes(outcome.error.code), `${outcome.error.code}: ${outcome.error.message}`);
  }
  await eventually(() => outcomes(b.events, command.requestId).length >= 1, 5000, 'the outcome event');
  await sleep(300);
  assert.equal(outcomes(b.events, command.requestId).length, 1, 'one outcome event on the caller');

  await eventually(async () => (await cluster.redis.command('DBSIZE')) > 0, PROPAGATION_MS, 'the processes to republish');
  await visibleOn([b], extension);
  await eventually(() => b.gateway.getHealth().cluster.nodes === 2, PROPAGATION_MS, 'both nodes back in the count');
  extension.respond = (c) => ({ success: true, messageId: `wamid-${c.requestId}` });
  const after = await settle(b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after the restart' }), 10_000, 'a send after the restart');
  assert.equal(after.ok, true, after.error && `${after.error.code}: ${after.error.message}`);
  assert.equal(after.value.messageId, `wamid-${after.value.requestId}`);
});

test('a second live process with the same nodeId cannot start: CLUSTER_UNAVAILABLE naming it', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const first = await cluster.node({ nodeId: 'twin-7' });
  const extension = await cluster.extension(first);
  await visibleOn([first], extension);

  const second = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: () => ({ valid: true }),
    onError: () => {},
    cluster: cluster.clusterOption({ nodeId: 'twin-7' }),
  });
  cluster.cleanups.push(() => second.stop());
  const started = await settle(second.start(), 15_000, 'start() with a duplicate nodeId');
  assert.equal(started.ok, false, 'start() succeeded with a nodeId already live');
  assert.equal(started.error.code, 'CLUSTER_UNAVAILABLE', started.error.message);
  assert.match(started.error.message, /twin-7/);
  assert.equal(second.isRunning, false);

  // The first is undisturbed.
  assert.equal(first.gateway.getHealth().cluster.redis, 'connected');
  assert.equal((await first.gateway.getActiveSessions(GOOD_KEY)).length, 1);
  await first.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'still mine' });

  // Once the first has left, the name is free again.
  await first.gateway.stop();
  await eventually(
    async () => {
      const retry = await settle(second.start(), 10_000, 'start() after the first left');
      if (!retry.ok && retry.error.code !== 'CLUSTER_UNAVAILABLE') throw retry.error;
      return retry.ok;
    },
    LEASE_MS + PROPAGATION_MS,
    'the nodeId to be free after its process stopped',
  );
  assert.equal(second.getHealth().cluster.nodeId, 'twin-7');
});

test('start() with Redis unreachable succeeds serving locally (reconnecting), and joins once Redis appears', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const port = await freePort();
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const late = new TestRedis(port, fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-redis-')));
  cluster.cleanups.push(() => late.dispose());

  const alone = await cluster.node({ nodeId: 'early', url: late.url });
  const health = alone.gateway.getHealth();
  assert.equal(health.status, 'running');
  assert.equal(health.cluster.redis, 'reconnecting');
  const extension = await cluster.extension(alone);
  await visibleOn([alone], extension);
  const local = await settle(alone.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'local only' }), 10_000, 'a local send');
  assert.equal(local.ok, true, local.error && `${local.error.code}: ${local.error.message}`);
  const sessions = await alone.gateway.getActiveSessions(GOOD_KEY);
  assert.equal(sessions[0].nodeId, 'early');

  await late.spawn();
  await eventually(() => alone.gateway.getHealth().cluster.redis === 'connected', PROPAGATION_MS, 'health to say connected');
  const joiner = await cluster.node({ nodeId: 'joiner', url: late.url });
  await visibleOn([joiner], extension);
  const remote = await settle(joiner.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'via Redis now' }), 10_000, 'a remote send');
  assert.equal(remote.ok, true, remote.error && `${remote.error.code}: ${remote.error.message}`);
  assert.equal(extension.commands.length, 2);
});

test('stop() in cluster mode hands the sends still waiting in its pacing queues back to their callers, which choose another device', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const holder = await cluster.node({ nodeId: 'paced-leaving', requestTimeout: 20_000, pacing: { minIntervalMs: 60_000 } });
  const caller = await cluster.node({ nodeId: 'paced-caller', requestTimeout: 20_000 });
  const paced = await cluster.extension(holder, { respond: () => null });
  await visibleOn([holder, caller], paced);

  // The first leaves at once; the other two wait a minute in the holder's queue.
  const sends = [1, 2, 3].map((n) => caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `paced ${n}` }));
  const first = await paced.next((f) => f.type === 'send-message', 10_000);
  // And one called on the holder itself, behind them.
  sends.push(holder.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'paced, called on the holder' }));
  await eventually(() => holder.gateway.getHealth().queuedSends === 3, PROPAGATION_MS, 'three sends waiting in the holder pacing queue');
  const other = await cluster.extension(caller);
  await visibleOn([caller], other);

  const stopping = holder.gateway.stop();
  await eventually(() => other.commands.length === 3, PROPAGATION_MS, 'the waiting sends to reach the device on the other process');
  paced.result(first.requestId, { success: true, messageId: 'wamid-first' });
  const results = await Promise.all(sends.map((send, i) => settle(send, 15_000, `paced send ${i + 1}`)));
  for (const result of results) assert.equal(result.ok, true, result.error && `${result.error.code}: ${result.error.message}`);
  assert.equal(results[0].value.messageId, 'wamid-first');
  assert.deepEqual(
    results.slice(1).map((r) => r.value.deviceInfo.sessionId),
    [other.sessionId, other.sessionId, other.sessionId],
  );
  // Each handed-back send keeps its request id, and nothing was written twice.
  assert.deepEqual(results.slice(1).map((r) => r.value.requestId).sort(), other.commands.map((c) => c.requestId).sort());
  assert.equal(paced.commands.filter((c) => c.type === 'send-message').length, 1);
  await settle(stopping, 10_000, 'stop() after the drain');
});

test('stop() in cluster mode drains: sends already written finish, new sends on it reject GATEWAY_SHUTDOWN, its sessions leave the registry', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const holder = await cluster.node({ nodeId: 'leaving', requestTimeout: 20_000 });
  const caller = await cluster.node({ nodeId: 'staying', requestTimeout: 20_000 });
  const extension = await cluster.extension(holder, { respond: () => null });
  await visibleOn([holder, caller], extension);

  const fromCaller = caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'remote, in flight' });
  const remoteCommand = await extension.next((f) => f.type === 'send-message', 10_000);
  const fromHolder = holder.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'local, in flight' });
  const localCommand = await extension.next((f) => f.type === 'send-message', 10_000);

  let stopped = false;
  const stopping = holder.gateway.stop().then(() => {
    stopped = true;
  });
  const refused = await settle(holder.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'too late' }), 5000, 'a send during the drain');
  assert.equal(refused.error?.code, 'GATEWAY_SHUTDOWN', refused.error?.message ?? 'a send called on a draining process resolved');

  await eventually(
    async () => (await caller.gateway.getActiveSessions(GOOD_KEY)).length === 0,
    PROPAGATION_MS,
    'the draining process sessions to leave the registry',
  );
  // Asserted at the end, so that a failure here does not hide how the drain ends.
  const elsewhere = await settle(caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'no one' }), 5000, 'a send to a draining device');
  await assert.rejects(new FakeExtension(holder.url).open(), 'a draining process accepts no connection');
  assert.equal(stopped, false, 'stop() resolved before its in-flight sends finished');
  assert.equal(extension.closed, null, 'the session closed before its in-flight sends finished');

  extension.result(remoteCommand.requestId, { success: true, messageId: 'wamid-remote' });
  extension.result(localCommand.requestId, { success: true, messageId: 'wamid-local' });
  const [remote, local] = await Promise.all([
    settle(fromCaller, 10_000, 'the remote in-flight send'),
    settle(fromHolder, 10_000, 'the local in-flight send'),
  ]);
  assert.equal(remote.ok, true, remote.error && `${remote.error.code}: ${remote.error.message}`);
  assert.equal(remote.value.requestId, remoteCommand.requestId);
  assert.equal(remote.value.messageId, 'wamid-remote');
  assert.equal(local.ok, true, local.error && `${local.error.code}: ${local.error.message}`);
  assert.equal(local.value.messageId, 'wamid-local');
  await settle(stopping, 10_000, 'stop() after the drain');
  const closed = await settle(extension.whenClosed, 5000, 'the session close');
  assert.equal(closed.value.code, 1001);
  await eventually(() => caller.gateway.getHealth().cluster.nodes === 1, LEASE_MS + PROPAGATION_MS, 'the stopped process to leave the node count');
  assert.equal(
    elsewhere.error?.code,
    'NO_ACTIVE_DEVICE',
    `a new send called on another process once the draining sessions had left its view: ${elsewhere.error ? `${elsewhere.error.code}: ${elsewhere.error.message} ${JSON.stringify(elsewhere.error.details)}` : 'resolved'}`,
  );
});

test('an idempotencyKey is cluster-wide: a duplicate on another process is not sent again and carries the first requestId and messageId', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a);
  await visibleOn([a, b], extension);

  const first = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'once', idempotencyKey: 'order-42' });
  const again = await a.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'once', idempotencyKey: 'order-42' });
  assert.equal(extension.commands.length, 1);
  assert.equal(again.duplicate, true);
  assert.equal(again.requestId, first.requestId);
  assert.equal(again.messageId, first.messageId);
});

test('acknowledgements come back to the caller: waitFor across processes, message-ack fires on the calling process only', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  let extension = null;
  extension = await cluster.extension(a, {
    respond: (command) => {
      setTimeout(() => extension.send({ type: 'message-ack', requestId: command.requestId, ack: 'delivered' }), 50);
      return { success: true, messageId: `wamid-${command.requestId}` };
    },
  });
  await visibleOn([a, b], extension);

  const result = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'wait for it', waitFor: 'delivered', timeout: 10_000 });
  assert.equal(result.ack, 'delivered');
  assert.equal(result.requestId, extension.commands[0].requestId);
  const acks = (events) => events.filter((e) => e.type === 'message-ack' && e.requestId === result.requestId);
  await eventually(() => acks(b.events).length === 1, 5000, 'message-ack on the calling process');
  assert.equal(acks(b.events)[0].ack, 'delivered');
  assert.equal(acks(b.events)[0].messageId, result.messageId);
  assert.deepEqual(acks(a.events), []);
});

test('incoming-message de-duplication is cluster-wide: a retry on another process is acked, not emitted again', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const incoming = (messageId) => ({ messageId, from: '+15550002222', body: 'hi', timestamp: 1700000000000 });
  const received = (events, messageId) => events.filter((e) => e.type === 'message-received' && e.data?.messageId === messageId);

  const first = await cluster.extension(a);
  first.send({ type: 'incoming-message', data: incoming('in-cluster-1') });
  await first.next((f) => f.type === 'incoming-ack' && f.messageId === 'in-cluster-1', 5000);
  assert.equal(received(a.events, 'in-cluster-1').length, 1);
  await first.close();

  // The extension reconnects to another process and retries.
  const again = await cluster.extension(b);
  again.send({ type: 'incoming-message', data: incoming('in-cluster-1') });
  await again.next((f) => f.type === 'incoming-ack' && f.messageId === 'in-cluster-1', 5000);
  again.send({ type: 'incoming-message', data: incoming('in-cluster-2') });
  await again.next((f) => f.type === 'incoming-ack' && f.messageId === 'in-cluster-2', 5000);
  await eventually(() => received(b.events, 'in-cluster-2').length === 1, 5000, 'a new incoming message on the holding process');
  assert.deepEqual(received(b.events, 'in-cluster-1'), [], 'a retry on another process was emitted again');
  assert.equal(received(a.events, 'in-cluster-1').length, 1);
  assert.deepEqual(received(a.events, 'in-cluster-2'), [], 'an incoming message fired on a process that does not hold the session');
});

test('pacing lives on the process holding the device: its config applies to sends from every caller', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const paced = await cluster.node({ nodeId: 'paced', pacing: { minIntervalMs: 60_000 } });
  const unpaced = await cluster.node({ nodeId: 'unpaced' });
  const onPaced = await cluster.extension(paced);
  await visibleOn([paced, unpaced], onPaced);

  // From the unpaced caller to the paced holder: the first leaves, the second waits its turn
  // there and times out unwritten.
  const first = await settle(unpaced.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'p1', timeout: 5000 }), 10_000, 'the first paced send');
  assert.equal(first.ok, true, first.error && `${first.error.code}: ${first.error.message}`);
  const second = await settle(unpaced.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'p2', timeout: 1000 }), 10_000, 'the second paced send');
  assert.equal(second.error?.code, 'REQUEST_TIMEOUT', second.error?.message ?? 'the second send left at once');
  assert.equal(second.error.details.sent, false);
  assert.deepEqual(onPaced.commands.map((c) => c.data.message), ['p1']);

  // From the paced caller to an unpaced holder: nothing waits.
  await onPaced.close();
  const onUnpaced = await cluster.extension(unpaced);
  await visibleOn([paced], onUnpaced);
  for (const message of ['u1', 'u2', 'u3']) {
    const sent = await settle(paced.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message, timeout: 5000 }), 10_000, `send ${message}`);
    assert.equal(sent.ok, true, sent.error && `${sent.error.code}: ${sent.error.message}`);
  }
  assert.deepEqual(onUnpaced.commands.map((c) => c.data.message), ['u1', 'u2', 'u3']);
});

test('getMessageStatus is cluster-wide (a promise in cluster mode)', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a);
  await visibleOn([a, b], extension);
  const { requestId } = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'status?' });
  const onCaller = b.gateway.getMessageStatus(requestId);
  assert.ok(onCaller instanceof Promise, 'getMessageStatus returns a promise in cluster mode');
  assert.equal((await onCaller)?.state, 'sent', `on the caller: ${JSON.stringify(await onCaller)}`);
  await eventually(async () => (await a.gateway.getMessageStatus(requestId))?.state === 'sent', PROPAGATION_MS, 'the status on the holder');
});

test('keyPrefix isolates two clusters sharing one Redis', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const one = await cluster.node({ nodeId: 'same-name', keyPrefix: 'one:' });
  const oneMore = await cluster.node({ nodeId: 'one-more', keyPrefix: 'one:' });
  // The same nodeId in another cluster is no duplicate.
  const two = await cluster.node({ nodeId: 'same-name', keyPrefix: 'two:' });
  const extension = await cluster.extension(one);
  await visibleOn([one, oneMore], extension);
  await eventually(() => oneMore.gateway.getHealth().cluster.nodes === 2, PROPAGATION_MS, 'cluster one to count 2 nodes');

  assert.deepEqual(await two.gateway.getActiveSessions(GOOD_KEY), []);
  assert.equal(two.gateway.getHealth().cluster.nodes, 1);
  const refused = await settle(two.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'wrong cluster' }), 5000, 'a send in the other cluster');
  assert.equal(refused.error?.code, 'NO_ACTIVE_DEVICE', refused.error?.message ?? 'a send crossed clusters');
  await oneMore.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'right cluster' });
  assert.equal(extension.commands.length, 1);
});

test('without cluster nothing touches Redis and sessions stay synchronous arrays', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const connectionsBefore = Number((await cluster.redis.info('stats')).total_connections_received);
  const plain = await startGateway();
  cluster.cleanups.push(() => plain.gateway.stop());
  const extension = new FakeExtension(plain.url);
  cluster.cleanups.push(() => extension.ws?.terminate());
  await extension.connectReady(plain.gateway);
  assert.ok(Array.isArray(plain.gateway.getActiveSessions(GOOD_KEY)));
  assert.ok(Array.isArray(plain.gateway.getAllSessions()));
  assert.equal(plain.gateway.getHealth().cluster, undefined);
  await plain.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'standalone' });
  await plain.gateway.stop();
  // Only this test's own INFO calls connected.
  assert.equal(Number((await cluster.redis.info('stats')).total_connections_received), connectionsBefore + 1);
});

test('the cluster option is checked: a wrong type or a non-positive leaseMs is a TypeError naming it', () => {
  const make = (cluster) => () => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), cluster });
  assert.throws(make({}), (e) => e instanceof TypeError && /redis/.test(e.message));
  assert.throws(make({ redis: 42 }), (e) => e instanceof TypeError && /redis/.test(e.message));
  assert.throws(make({ redis: 'redis://127.0.0.1:6379', leaseMs: 0 }), (e) => e instanceof TypeError && /leaseMs/.test(e.message));
  assert.throws(make({ redis: 'redis://127.0.0.1:6379', leaseMs: Infinity }), (e) => e instanceof TypeError && /leaseMs/.test(e.message));
  assert.throws(make({ redis: 'redis://127.0.0.1:6379', nodeId: 7 }), (e) => e instanceof TypeError && /nodeId/.test(e.message));
  assert.throws(make({ redis: 'redis://127.0.0.1:6379', keyPrefix: {} }), (e) => e instanceof TypeError && /keyPrefix/.test(e.message));
  assert.throws(make('redis://127.0.0.1:6379'), (e) => e instanceof TypeError && /cluster/.test(e.message));
  // Constructing touches nothing: no Redis is needed until start().
  new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), cluster: { redis: 'redis://127.0.0.1:1' } });
});
