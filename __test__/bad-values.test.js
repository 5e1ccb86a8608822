'use strict';
// One bad value fails one delivery (README "Delivery"): whatever an extension puts in a frame,
// only the call it answers is affected; every other call and key check still settles.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const PHONE = '+1234567890';

/**
 * How each worker's script starts: the first extension (GOOD_KEY) gets ready and reports
 * its command frames, and the code of any error frame it is sent.
 */
const FIRST_EXTENSION = `
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require(workerData.ws);
const { url, goodKey, otherKey } = workerData;
const first = new WebSocket(url);
first.on('message', (data) => {
  const frame = JSON.parse(data.toString());
  if (frame.type === 'auth-success') first.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
  if (frame.type === 'send-message') parentPort.postMessage({ command: frame });
  if (frame.type === 'error') parentPort.postMessage({ refused: frame.code });
});
first.on('open', () => first.send(JSON.stringify({ type: 'auth', apiKey: goodKey })));
`;

/**
 * Extensions in a worker thread, so that they keep talking while this thread is blocked:
 * FIRST_EXTENSION, then `script`; stopped after the test. `onMessage` gets what they post.
 */
function runExtensions(t, script, url, onMessage) {
  const worker = new Worker(FIRST_EXTENSION + script, {
    eval: true,
    workerData: { url, goodKey: GOOD_KEY, otherKey: OTHER_KEY, ws: require.resolve('ws') },
  });
  t.after(() => worker.terminate());
  worker.on('message', onMessage);
  return worker;
}

/** `value` inside `depth` arrays. */
function nestedIn(value, depth) {
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/**
 * After FIRST_EXTENSION: on 'go' the first answers two commands in one go (the first with
 * `badFrame`) while a second extension connects and sends its auth frame, whose key check
 * then waits beside those results.
 */
const EXTENSIONS = `
const second = new WebSocket(url);
second.on('open', () => parentPort.postMessage({ open: true }));
second.on('message', (data) => {
  const frame = JSON.parse(data.toString());
  parentPort.postMessage({ second: frame.type });
  if (frame.type === 'auth-success') second.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
  if (frame.type === 'send-message') {
    second.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: 'second' }));
  }
});
parentPort.on('message', ({ badFrame, goodId }) => {
  first.send(badFrame);
  first.send(JSON.stringify({ type: 'message-result', requestId: goodId, success: true, messageId: 'fine' }));
  second.send(JSON.stringify({ type: 'auth', apiKey: otherKey }));
});
`;

/** Blocks this thread, so that everything the gateway delivers meanwhile reaches JavaScript in one batch. */
function busy(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until);
}

/** ['ok', messageId] or ['error', code], or 'pending' after `ms`. */
function outcome(promise, ms) {
  return Promise.race([
    promise.then(
      (r) => ['ok', r.messageId],
      (e) => ['error', e.code],
    ),
    new Promise((resolve) => setTimeout(() => resolve('pending'), ms)),
  ]);
}

const zeros = `[${new Array(1_000_000).fill('0').join(',')}]`;
const nested = (depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
const BAD = [
  ['a messageId of a million zeros', 'messageId', zeros],
  ['an error of a million zeros', 'error', zeros],
  ['a messageId nested past any depth', 'messageId', nested(100_000)],
  ['a messageId nested as deep as JSON parses', 'messageId', nested(127)],
  ['an error nested as deep as JSON parses', 'error', nested(127)],
];

for (const [name, field, value] of BAD) {
  test(`${name}: only the call it answers is affected; another result and a key check in the same batch settle`, { timeout: 30_000 }, async (t) => {
    const { gateway, url, errors } = await startGateway({ maxPayload: 4 * 1024 * 1024, requestTimeout: 20_000 });
    t.after(() => gateway.stop());
    const commands = [];
    const second = [];
    const refused = [];
    let secondOpen = false;
    const worker = runExtensions(t, EXTENSIONS, url, (m) => {
      if (m.command) commands.push(m.command);
      if (m.refused) refused.push(m.refused);
      if (m.second) second.push(m.second);
      if (m.open) secondOpen = true;
    });
    await waitFor(() => secondOpen && gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 5000, 'extensions');
    // The bad value answers a call with its own short timeout; the other call waits long.
    const bad = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'bad', timeout: 3000 }).then(
      () => 'resolved',
      (e) => e.code,
    );
    const good = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'good' });
    await waitFor(() => commands.length === 2, 5000, 'both commands');
    const id = (message) => commands.find((c) => c.data.message === message).requestId;
    const success = field === 'messageId';
    const badFrame = `{"type":"message-result","requestId":"${id('bad')}","success":${success},"${field}":${value}}`;
    worker.postMessage({ badFrame, goodId: id('good') });
    busy(1500);

    assert.deepEqual(await outcome(good, 5000), ['ok', 'fine'], 'the other call settles');
    await waitFor(() => second.includes('auth-success') || second.includes('error'), 5000, 'the key check');
    assert.ok(second.includes('auth-success'), `the key check settles: ${second}`);
    // The frame is refused as a whole: its call learns nothing from it, and times out
    // (the command was written: whether it went out is unknown).
    const answered = await Promise.race([bad, new Promise((resolve) => setTimeout(() => resolve('pending'), 6000))]);
    assert.equal(answered, 'REQUEST_TIMEOUT', 'the call the bad frame answers times out');
    assert.deepEqual(refused, ['INVALID_MESSAGE'], 'the extension is told its frame was refused');
    assert.deepEqual(
      errors.filter((e) => e.code === 'SERVER_ERROR').map((e) => e.message),
      [],
      'nothing is reported as a server error',
    );
    // Both extensions keep being served.
    await waitFor(() => gateway.getActiveSessions(OTHER_KEY).some((s) => s.deviceActive), 5000, 'the second extension ready');
    assert.deepEqual(await outcome(gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'after' }), 5000), ['ok', 'second']);
  });
}

/**
 * After FIRST_EXTENSION: on 'go' a second extension connects with OTHER_KEY, and once it
 * is let in, the first answers `goodId`.
 */
const LET_IN_THEN_ANSWER = `
parentPort.on('message', ({ goodId }) => {
  const second = new WebSocket(url);
  second.on('open', () => second.send(JSON.stringify({ type: 'auth', apiKey: otherKey })));
  second.on('message', (data) => {
    if (JSON.parse(data.toString()).type !== 'auth-success') return;
    first.send(JSON.stringify({ type: 'message-result', requestId: goodId, success: true, messageId: 'fine' }));
    parentPort.postMessage({ letIn: true });
  });
});
`;

test("a userId that JavaScript can take but not inside an event costs only that event's form, not the batch it is in", { timeout: 30_000 }, async (t) => {
  // 128 levels: as deep as napi takes from JavaScript, one level too deep inside an event.
  const deep = nestedIn('bottom', 128);
  const { gateway, url, events } = await startGateway({
    requestTimeout: 20_000,
    validateApiKey: (apiKey) => {
      if (apiKey !== OTHER_KEY) return { valid: apiKey === GOOD_KEY };
      // JavaScript stays busy while the session is let in and the other call answered.
      setImmediate(() => busy(1500));
      return { valid: true, userId: deep };
    },
  });
  t.after(() => gateway.stop());
  const commands = [];
  let letIn = false;
  const worker = runExtensions(t, LET_IN_THEN_ANSWER, url, (m) => {
    if (m.command) commands.push(m.command);
    if (m.letIn) letIn = true;
  });
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 5000, 'the first extension');
  const good = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'good' });
  await waitFor(() => commands.length === 1, 5000, 'the command');
  worker.postMessage({ goodId: commands[0].requestId });
  assert.deepEqual(await outcome(good, 8000), ['ok', 'fine'], 'the call answered beside the event settles');
  await waitFor(() => letIn, 5000, 'the second extension let in');
  const connected = await waitFor(
    () => events.find((e) => e.type === 'session-connected' && e.apiKey?.startsWith(OTHER_KEY.slice(0, 4))),
    5000,
    'the session-connected event',
  );
  assert.deepEqual(connected.userId, deep, 'the event still carries the userId');
});

test('a userId deeper than the gateway can keep fails that key check, not the process', async (t) => {
  const deep = nestedIn('bottom', 200);
  const { gateway, url, errors } = await startGateway({
    validateApiKey: (apiKey) => (apiKey === OTHER_KEY ? { valid: true, userId: deep } : { valid: apiKey === GOOD_KEY }),
  });
  t.after(() => gateway.stop());
  const refused = new FakeExtension(url, { apiKey: OTHER_KEY });
  await refused.open();
  await assert.rejects(refused.authenticate(), (e) => e.frame.code === 'AUTHENTICATION_FAILED');
  assert.ok(errors.some((e) => e.code === 'CALLBACK_ERROR' && /validateApiKey/.test(e.message)));
  // Other keys are still let in.
  const ext = new FakeExtension(url);
  await ext.connectReady(gateway);
  ext.close();
});
