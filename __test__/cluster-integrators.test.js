'use strict';
// The integrators' API in cluster mode (README: "Cluster mode"): a call's `target`, custom
// commands (request(), listings carry each session's commands) and failure codes work
// whichever process holds the session; chats reach it by chatId. Gateways share a real
// redis-server; each is one process of the cluster.
const test = require('node:test');
const assert = require('node:assert/strict');
const { GOOD_KEY } = require('./helpers');
const { PROPAGATION_MS, PHONE, CLUSTER_TEST, eventually, settle, setUp, visibleOn, sessionsOn } = require('./cluster-harness');

const CHECK = 'check-number';

test('target: a session on another process is used, and only it', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const far = await cluster.extension(a);
  const near = await cluster.extension(b);
  await visibleOn([b], far);
  await visibleOn([b], near);

  for (let i = 0; i < 4; i++) {
    const result = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `far ${i}`, target: far.sessionId });
    assert.equal(result.deviceInfo.sessionId, far.sessionId);
  }
  assert.equal(far.commands.length, 4);
  assert.equal(near.commands.length, 0, 'the local session got nothing');
  const sent = b.events.filter((e) => e.type === 'message-sent');
  assert.equal(sent.length, 4, '*-sent fires on the calling process');

  const missing = await b.gateway
    .sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x', target: '00000000-0000-4000-8000-000000000000' })
    .catch((e) => e);
  assert.equal(missing.code, 'NO_ACTIVE_DEVICE');
  assert.equal(missing.details.reason, 'target-unavailable');
  assert.equal(far.commands.length + near.commands.length, 4);
});

test('target with waitForDevice waits for a session on another process to become active', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const near = await cluster.extension(b);
  const later = await cluster.extension(a);
  later.sendStatus(false);
  await visibleOn([b], near);
  await eventually(
    async () => (await sessionsOn(b, GOOD_KEY)).some((s) => s.sessionId === later.sessionId && !s.deviceActive),
    PROPAGATION_MS,
    'the idle session to be listed',
  );

  const sending = b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'when ready', target: later.sessionId, waitForDevice: 15_000 });
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(near.commands.length, 0);
  later.sendStatus(true);
  const result = await settle(sending, 20_000, 'the targeted send');
  assert.equal(result.ok, true, result.error?.message);
  assert.equal(result.value.deviceInfo.sessionId, later.sessionId);
  assert.equal(later.commands.length, 1);
  assert.equal(near.commands.length, 0);

  const gone = await b.gateway
    .sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'never', target: '00000000-0000-4000-8000-000000000000', waitForDevice: 400 })
    .catch((e) => e);
  assert.equal(gone.code, 'NO_ACTIVE_DEVICE');
  assert.equal(gone.details.reason, 'target-unavailable');
  assert.equal(gone.details.sent, false);
});

test('request() across processes: only sessions that listed the type, anywhere; UNSUPPORTED_COMMAND when none does', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const plain = await cluster.extension(b);
  await visibleOn([a, b], plain);
  const refused = await a.gateway.request(GOOD_KEY, CHECK, {}).catch((e) => e);
  assert.equal(refused.code, 'UNSUPPORTED_COMMAND', 'a session elsewhere is active, none handles it');
  assert.equal(refused.details.sent, false);

  const handling = await cluster.extension(a, {
    commands: [CHECK],
    respond: (command) => ({ success: true, data: { on: command.data.phoneNumber === PHONE } }),
  });
  await visibleOn([a, b], handling);
  const listed = (await sessionsOn(b, GOOD_KEY)).find((s) => s.sessionId === handling.sessionId);
  assert.deepEqual(listed.commands, [CHECK], 'listings carry the commands');
  assert.deepEqual((await sessionsOn(b, GOOD_KEY)).find((s) => s.sessionId === plain.sessionId).commands, []);

  for (let i = 0; i < 4; i++) {
    const result = await b.gateway.request(GOOD_KEY, CHECK, { phoneNumber: PHONE }, { metadata: { i } });
    assert.equal(result.deviceInfo.sessionId, handling.sessionId);
    assert.deepEqual(result.data, { on: true });
  }
  assert.equal(plain.commands.length, 0);
  const events = b.events.filter((e) => e.type === 'command-result');
  assert.equal(events.length, 4, 'command-result fires on the calling process');
  assert.deepEqual(events[3].metadata, { i: 3 });
  assert.equal(a.events.filter((e) => e.type === 'command-result').length, 0);

  // A target elsewhere that does not handle it.
  const targeted = await a.gateway.request(GOOD_KEY, CHECK, {}, { target: plain.sessionId }).catch((e) => e);
  assert.equal(targeted.code, 'UNSUPPORTED_COMMAND');
  assert.equal(plain.commands.length, 0);
});

test('across processes: failure codes, chats, and an idempotent request answered once with its data', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const c = await cluster.node({ nodeId: 'node-c' });
  const extension = await cluster.extension(a, {
    commands: [CHECK],
    respond: (command) => {
      if (command.type === CHECK) return { success: true, data: { id: command.requestId } };
      if (command.data.message === 'fail') return { success: false, error: 'slow down', code: 'RATE_LIMITED' };
      return { success: true, messageId: `wa-${command.requestId}` };
    },
  });
  await visibleOn([a, b, c], extension);

  const failed = await b.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'fail' }).catch((e) => e);
  assert.equal(failed.code, 'EXTENSION_ERROR');
  assert.equal(failed.details.extensionCode, 'RATE_LIMITED');
  assert.equal(failed.details.retryable, true);
  const failedEvent = b.events.find((e) => e.type === 'send-failed');
  assert.equal(failedEvent.details.extensionCode, 'RATE_LIMITED');

  const group = '120363025246125486@g.us';
  const toGroup = await b.gateway.sendMessage(GOOD_KEY, { chatId: group, message: 'hi group' });
  assert.deepEqual(extension.commands.at(-1).data, { chatId: group, message: 'hi group' });
  const sent = b.events.find((e) => e.type === 'message-sent' && e.requestId === toGroup.requestId);
  assert.equal(sent.chatId, group);
  assert.equal('phoneNumber' in sent, false);

  const options = { idempotencyKey: 'lookup-1' };
  const first = await b.gateway.request(GOOD_KEY, CHECK, { phoneNumber: PHONE }, options);
  const again = await settle(c.gateway.request(GOOD_KEY, CHECK, { phoneNumber: PHONE }, options), 15_000, 'the retry elsewhere');
  assert.equal(again.ok, true, again.error?.message);
  assert.equal(again.value.duplicate, true);
  assert.equal(again.value.requestId, first.requestId);
  assert.deepEqual(again.value.data, first.data);
  assert.equal(extension.commands.filter((cmd) => cmd.type === CHECK).length, 1, 'sent once');
  const reused = await c.gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+15550002222' }, options).catch((e) => e);
  assert.equal(reused.code, 'IDEMPOTENCY_KEY_REUSED');
});

test('across processes: a late command-result reaches the calling process as a late command-result event', CLUSTER_TEST, async (t) => {
  const cluster = await setUp(t);
  const a = await cluster.node({ nodeId: 'node-a' });
  const b = await cluster.node({ nodeId: 'node-b' });
  const extension = await cluster.extension(a, { commands: [CHECK], respond: () => null });
  await visibleOn([a, b], extension);
  const timedOut = await settle(b.gateway.request(GOOD_KEY, CHECK, {}, { timeout: 500 }), 10_000, 'the call');
  assert.equal(timedOut.error?.code, 'REQUEST_TIMEOUT');
  const { requestId } = timedOut.error.details;
  extension.commandResult(requestId, { success: true, data: { slow: true } });
  const late = await eventually(
    () => b.events.find((e) => e.type === 'command-result' && e.requestId === requestId && e.status === 'success'),
    PROPAGATION_MS,
    'the late command-result on the caller',
  );
  assert.equal(late.late, true);
  assert.equal(late.command, CHECK);
  assert.equal((await b.gateway.getMessageStatus(requestId)).state, 'sent');
});
