'use strict';
// Lifecycle of the gateway as a user sees it: start/stop, ports, shutdown of pending
// sends, what keeps the Node process alive, user callbacks that misbehave, and the
// constructor's config checks (README "API").
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { runScript } = require('./child-script');
const { WhatsAppGateway, ERROR_CODES } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const ROOT = path.resolve(__dirname, '..');
const PHONE = '+1234567890';
const validateApiKey = (apiKey) => ({ valid: apiKey === GOOD_KEY || apiKey === OTHER_KEY, userId: 'user-x' });

/** Resolves with a listening net.Server on `port` (0: any) and `host`; rejects on error. */
function listen(port = 0, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function close(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port that was free a moment ago. */
async function freePort() {
  const server = await listen(0);
  const { port } = server.address();
  await close(server);
  return port;
}

/** The promise's rejection reason; fails if it resolves. */
function rejection(promise) {
  return promise.then(
    (value) => assert.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (error) => error,
  );
}

const tick = (ms = 50) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// 1. start / getHealth / stop

test('start() resolves, getHealth() reports running then stopped (sync and awaited)', async (t) => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  t.after(() => gateway.stop());

  const before = gateway.getHealth();
  assert.equal(before.status, 'stopped');

  assert.equal(await gateway.start(), undefined);
  const health = gateway.getHealth();
  assert.equal(health.status, 'running');
  assert.equal(health.activeSessions, 0);
  assert.equal(typeof health.uptime, 'number');
  assert.ok(health.uptime >= 0);
  assert.equal(typeof health.timestamp, 'number');
  assert.ok(Math.abs(health.timestamp - Date.now()) < 5000, 'timestamp is ms since the epoch');

  const { port } = gateway.address();
  const ext = await new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`).connectReady(gateway);
  assert.equal(gateway.getHealth().activeSessions, 1);
  const awaited = await gateway.getHealth();
  assert.equal(awaited.status, 'running');
  assert.equal(awaited.activeSessions, 1);

  await gateway.stop();
  assert.equal(gateway.getHealth().status, 'stopped');
  assert.equal((await gateway.getHealth()).status, 'stopped');
  assert.equal(gateway.getHealth().activeSessions, 0);
  await ext.whenClosed;
});

// ---------------------------------------------------------------------------
// 2. start() failures

test('start() on a taken port rejects with code EADDRINUSE', async (t) => {
  const blocker = await listen(0, '127.0.0.1');
  t.after(() => close(blocker));
  const { port } = blocker.address();

  const gateway = new WhatsAppGateway({ port, host: '127.0.0.1', validateApiKey });
  t.after(() => gateway.stop());
  const error = await rejection(gateway.start());
  assert.ok(error instanceof Error);
  assert.equal(error.code, 'EADDRINUSE');
  assert.equal(gateway.getHealth().status, 'stopped');
  await gateway.stop();

  // Without a host the gateway binds every interface, which includes 127.0.0.1:port.
  const anyHost = new WhatsAppGateway({ port, validateApiKey });
  t.after(() => anyHost.stop());
  const error2 = await rejection(anyHost.start());
  assert.ok(error2 instanceof Error);
  assert.equal(error2.code, 'EADDRINUSE');
  assert.equal(anyHost.getHealth().status, 'stopped');

  // Once the port is free again, the same gateway starts on it.
  await close(blocker);
  await gateway.start();
  assert.equal(gateway.getHealth().status, 'running');
  assert.equal(gateway.address().port, port);
  const ext = await new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`).connectReady(gateway);
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after EADDRINUSE' });
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
});

test('start() twice rejects as already running and the first server keeps working', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const { port } = gateway.address();

  const error = await rejection(gateway.start());
  assert.ok(error instanceof Error);
  assert.match(error.message, /already running/i);
  assert.equal(error.code, 'ALREADY_RUNNING');
  assert.equal(ERROR_CODES[error.code], error.code, 'every code the API shows is in ERROR_CODES');
  assert.equal(gateway.getHealth().status, 'running');
  assert.equal(gateway.address().port, port);

  const ext = await new FakeExtension(url).connectReady(gateway);
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'still here' });
  assert.equal(result.success, true);
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
});

// ---------------------------------------------------------------------------
// 3. stop(): idempotent, frees the port, restartable

test('stop() is idempotent, also on a gateway that was never started', async () => {
  const never = new WhatsAppGateway({ port: '0', validateApiKey });
  assert.equal(await never.stop(), undefined);
  assert.equal(await never.stop(), undefined);
  assert.equal(never.getHealth().status, 'stopped');

  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  await gateway.start();
  // Concurrent and sequential calls all resolve.
  await Promise.all([gateway.stop(), gateway.stop()]);
  await gateway.stop();
  assert.equal(gateway.getHealth().status, 'stopped');
});

test('stop() frees the port before it resolves; start() after stop() on the same port works', async (t) => {
  const port = await freePort();
  const gateway = new WhatsAppGateway({ port, host: '127.0.0.1', validateApiKey });
  t.after(() => gateway.stop());
  await gateway.start();
  assert.equal(gateway.address().port, port);
  const url = `ws://127.0.0.1:${port}/wa-ext-ws`;
  const first = await new FakeExtension(url).connectReady(gateway);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'before' });

  await gateway.stop();
  // The port is free at once: another server can listen on it.
  const squatter = await listen(port, '127.0.0.1');
  await close(squatter);
  assert.equal((await first.whenClosed).code, 1001);

  await gateway.start();
  assert.equal(gateway.getHealth().status, 'running');
  assert.equal(gateway.address().port, port);
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), [], 'sessions of the previous run are gone');
  const second = await new FakeExtension(url).connectReady(gateway);
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after' });
  assert.equal(result.deviceInfo.sessionId, second.sessionId);
  assert.notEqual(second.sessionId, first.sessionId);

  await gateway.stop();
  const again = await listen(port, '127.0.0.1');
  await close(again);
});

// ---------------------------------------------------------------------------
// 4. stop() with sends in flight

test('stop() rejects every pending send with GATEWAY_SHUTDOWN and closes sessions with 1001', async (t) => {
  const { gateway, url, events, errors } = await startGateway({ requestTimeout: 60000 });
  t.after(() => gateway.stop());
  const silent = () => null;
  const extA = await new FakeExtension(url, { respond: silent }).connectReady(gateway);
  const extB = await new FakeExtension(url, { respond: silent, dialect: 'guide' }).connectReady(gateway);

  const settlements = [];
  const sends = [];
  for (let i = 0; i < 6; i++) {
    const record = { resolved: 0, rejected: 0, error: null };
    settlements.push(record);
    const promise =
      i % 2 === 0
        ? gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `m${i}` })
        : gateway.sendImage(GOOD_KEY, {
            phoneNumber: PHONE,
            dataUrl: 'data:image/png;base64,iVBORw0KGgo=',
            caption: `c${i}`,
          });
    sends.push(
      promise.then(
        () => {
          record.resolved++;
        },
        (error) => {
          record.rejected++;
          record.error = error;
        },
      ),
    );
  }
  await waitFor(() => extA.commands.length + extB.commands.length === 6, 3000, 'all commands delivered');
  assert.equal(gateway.getHealth().pendingRequests, 6);

  await gateway.stop();
  await Promise.all(sends);
  await tick(100);

  const commands = new Map([...extA.commands, ...extB.commands].map((c) => [c.requestId, c]));
  const sessionOf = new Map([
    ...extA.commands.map((c) => [c.requestId, extA.sessionId]),
    ...extB.commands.map((c) => [c.requestId, extB.sessionId]),
  ]);
  for (const record of settlements) {
    assert.equal(record.resolved, 0);
    assert.equal(record.rejected, 1, 'settled exactly once');
    assert.ok(record.error instanceof Error);
    assert.equal(record.error.code, 'GATEWAY_SHUTDOWN');
    assert.ok(commands.has(record.error.details.requestId), 'details name the request');
    assert.equal(record.error.details.sessionId, sessionOf.get(record.error.details.requestId));
  }
  assert.equal(new Set(settlements.map((r) => r.error.details.requestId)).size, 6);

  for (const ext of [extA, extB]) {
    const closed = await ext.whenClosed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, 'Server shutting down');
  }
  const gone = await waitFor(
    () => {
      const list = events.filter((e) => e.type === 'session-disconnected');
      return list.length >= 2 && list;
    },
    3000,
    'session-disconnected events',
  );
  assert.deepEqual(new Set(gone.map((e) => e.sessionId)), new Set([extA.sessionId, extB.sessionId]));
  for (const event of gone) {
    assert.equal(event.apiKey, GOOD_KEY);
    assert.equal(typeof event.details.reason, 'string');
    assert.equal(typeof event.details.code, 'number');
  }

  const shutdownErrors = errors.filter((e) => e.code === 'GATEWAY_SHUTDOWN');
  assert.equal(shutdownErrors.length, 6);
  for (const record of settlements) assert.ok(errors.includes(record.error), 'onError got the same error');

  const failed = events.filter((e) => e.type === 'send-failed');
  assert.equal(failed.length, 6);
  for (const event of failed) {
    assert.equal(event.status, 'failure');
    assert.equal(event.details.code, 'GATEWAY_SHUTDOWN');
    assert.equal(event.phoneNumber, PHONE);
    assert.ok(commands.has(event.requestId));
  }

  // Still exactly once after things have settled down.
  await tick(100);
  assert.equal(settlements.reduce((n, r) => n + r.resolved + r.rejected, 0), 6);
  assert.equal(gateway.getHealth().pendingRequests, 0);
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
});

// ---------------------------------------------------------------------------
// 5. What keeps the process alive

const PRELUDE = `
const { WhatsAppGateway } = require(${JSON.stringify(ROOT)});
const WebSocket = require(${JSON.stringify(path.join(ROOT, 'node_modules', 'ws'))});
const validateApiKey = (apiKey) => ({ valid: apiKey === 'child-key-0123456789', userId: 'child' });
const fail = (e) => { console.error(e && e.stack || e); process.exit(2); };
`;

/** The child ended on its own (not killed by runScript's time limit), with code 0. */
function assertExitedByItself(run) {
  assert.equal(run.killed, false, `the process did not exit by itself; stdout: ${run.stdout} stderr: ${run.stderr}`);
  assert.equal(run.code, 0, run.stderr);
}

test('a process that started, used and stopped a gateway exits by itself with code 0', async () => {
  const script = `${PRELUDE}
(async () => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  await gateway.start();
  const ws = new WebSocket('ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws');
  const frames = [];
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString());
    frames.push(frame);
    if (frame.type === 'send-message') {
      ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: 'child-msg' }));
    }
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ type: 'auth', apiKey: 'child-key-0123456789', data: { extensionVersion: '1.0.0', browser: 'Chrome' } }));
  const until = async (predicate) => {
    for (let i = 0; i < 300 && !predicate(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!predicate()) throw new Error('condition not reached');
  };
  await until(() => frames.some((f) => f.type === 'auth-success'));
  ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
  await until(() => gateway.getActiveSessions('child-key-0123456789').some((s) => s.deviceActive));
  const result = await gateway.sendMessage('child-key-0123456789', { phoneNumber: '+1234567890', message: 'hi' });
  console.log('SENT ' + result.messageId);
  const closed = new Promise((r) => ws.once('close', r));
  ws.close();
  await closed;
  await gateway.stop();
  console.log('STOPPED');
})().catch(fail);
`;
  const run = await runScript(script);
  assertExitedByItself(run);
  assert.match(run.stdout, /SENT child-msg/);
  assert.match(run.stdout, /STOPPED/);
});

test('a process that only constructs a gateway exits by itself', async () => {
  const script = `${PRELUDE}
const gateway = new WhatsAppGateway({ port: '0', validateApiKey });
console.log('CONSTRUCTED ' + gateway.getHealth().status);
`;
  const run = await runScript(script);
  assertExitedByItself(run);
  assert.match(run.stdout, /CONSTRUCTED stopped/);
});

test('a process that starts and stops a gateway without clients exits by itself', async () => {
  const script = `${PRELUDE}
(async () => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  await gateway.start();
  await gateway.stop();
  console.log('STOPPED ' + gateway.getHealth().status);
})().catch(fail);
`;
  const run = await runScript(script);
  assertExitedByItself(run);
  assert.match(run.stdout, /STOPPED stopped/);
});

test('a process with a running gateway stays alive, like a listening net.Server', async () => {
  const script = `${PRELUDE}
(async () => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  await gateway.start();
  console.log('LISTENING ' + gateway.address().port);
})().catch(fail);
`;
  let aliveAfterWait = null;
  let listening = false;
  const run = await runScript(script, {
    limit: 15000,
    whenRunning: (stdout, child) => {
      if (listening || !/LISTENING \d+/.test(stdout)) return;
      listening = true;
      setTimeout(() => {
        aliveAfterWait = child.exitCode === null && child.signalCode === null;
        child.kill('SIGKILL');
      }, 1500);
    },
  });
  assert.equal(listening, true, `the gateway did not start; stderr: ${run.stderr}`);
  assert.equal(aliveAfterWait, true, 'the process exited by itself while the gateway was running');
  assert.equal(run.signal, 'SIGKILL');
  assert.equal(run.killed, false, 'killed by the test, not by the 15 s limit');
});

// ---------------------------------------------------------------------------
// 6. User callbacks that misbehave

/** Records uncaught exceptions and unhandled rejections for the rest of the test. */
function watchProcess(t) {
  const seen = [];
  const onException = (error) => seen.push(['uncaughtException', error]);
  const onRejection = (reason) => seen.push(['unhandledRejection', reason]);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  t.after(() => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  });
  return seen;
}

/** Connects an extension, sends twice, and checks sends and events keep working. */
async function exerciseGateway(gateway, url, events) {
  const ext = await new FakeExtension(url).connectReady(gateway);
  for (const message of ['one', 'two']) {
    const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message });
    assert.equal(result.success, true);
  }
  if (events) {
    await waitFor(() => events.filter((e) => e.type === 'message-sent').length === 2, 3000, 'message-sent events');
    assert.ok(events.some((e) => e.type === 'session-connected' && e.sessionId === ext.sessionId));
  }
  return ext;
}

for (const [label, makeLog] of [
  [
    'throws',
    (events) => (event) => {
      events.push(event);
      throw new Error('log boom');
    },
  ],
  [
    'returns a rejected promise',
    (events) => async (event) => {
      events.push(event);
      throw new Error('log boom');
    },
  ],
]) {
  test(`an onMessageLog that ${label} is reported as CALLBACK_ERROR and breaks nothing`, async (t) => {
    const seen = watchProcess(t);
    const events = [];
    const { gateway, url, errors } = await startGateway({ onMessageLog: makeLog(events) });
    t.after(() => gateway.stop());

    await exerciseGateway(gateway, url, events);
    await waitFor(() => errors.filter((e) => e.code === 'CALLBACK_ERROR').length >= events.length, 3000, 'CALLBACK_ERRORs');
    const callbackErrors = errors.filter((e) => e.code === 'CALLBACK_ERROR');
    assert.ok(callbackErrors.length >= 4, 'one per event (connected, status, 2 x sent)');
    for (const error of callbackErrors) {
      assert.ok(error instanceof Error);
      assert.equal(error.details.callback, 'onMessageLog');
      assert.match(error.message, /log boom/);
    }
    // Still serving after all those failures.
    const again = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'three' });
    assert.equal(again.success, true);
    await tick();
    assert.deepEqual(seen, []);
  });
}

test('an onError that throws (or rejects) is swallowed and breaks nothing', async (t) => {
  const seen = watchProcess(t);
  for (const mode of ['throw', 'reject']) {
    const errors = [];
    const events = [];
    const { gateway, url } = await startGateway({
      onMessageLog: (event) => {
        events.push(event);
        throw new Error('log boom'); // every event makes a CALLBACK_ERROR for onError
      },
      onError:
        mode === 'throw'
          ? (error) => {
              errors.push(error);
              throw new Error('onError boom');
            }
          : async (error) => {
              errors.push(error);
              throw new Error('onError boom');
            },
    });
    t.after(() => gateway.stop());

    await exerciseGateway(gateway, url, events);
    // Errors thrown to callers still reach the caller, and onError.
    const invalid = await rejection(gateway.sendMessage(GOOD_KEY, { phoneNumber: 'nope', message: 'x' }));
    assert.equal(invalid.code, 'VALIDATION_ERROR');
    const none = await rejection(gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'x' }));
    assert.equal(none.code, 'NO_ACTIVE_DEVICE');
    assert.ok(errors.includes(invalid) && errors.includes(none));
    assert.ok(errors.some((e) => e.code === 'CALLBACK_ERROR'));
    assert.ok(!errors.some((e) => /onError boom/.test(e.message)), 'onError is never called with its own failure');
    const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after' });
    assert.equal(result.success, true);
    await gateway.stop();
  }
  await tick(100);
  assert.deepEqual(seen, []);
});

test('a gateway without onMessageLog and onError works', async (t) => {
  const seen = watchProcess(t);
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey });
  t.after(() => gateway.stop());
  await gateway.start();
  const url = `ws://127.0.0.1:${gateway.address().port}/wa-ext-ws`;
  await exerciseGateway(gateway, url, null);
  const invalid = await rejection(gateway.sendMessage(GOOD_KEY, { phoneNumber: 'nope', message: 'x' }));
  assert.equal(invalid.code, 'VALIDATION_ERROR');
  const none = await rejection(gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'x' }));
  assert.equal(none.code, 'NO_ACTIVE_DEVICE');
  const refused = new FakeExtension(url, { apiKey: 'bad-key-0123456789' });
  await refused.open();
  await assert.rejects(refused.authenticate(), /./);
  assert.equal((await refused.whenClosed).code, 1008);
  await gateway.stop();
  await tick();
  assert.deepEqual(seen, []);
});

// ---------------------------------------------------------------------------
// 7. Config checks

test('bad config throws a TypeError naming the option', () => {
  const fn = () => ({ valid: true });
  const cases = [
    [undefined, 'validateApiKey'],
    [null, 'validateApiKey'],
    [{}, 'validateApiKey'],
    [{ validateApiKey: 'yes' }, 'validateApiKey'],
    [{ validateApiKey: fn, onMessageLog: 'log' }, 'onMessageLog'],
    [{ validateApiKey: fn, onError: {} }, 'onError'],
    [{ validateApiKey: fn, port: 'abc' }, 'port'],
    [{ validateApiKey: fn, port: 70000 }, 'port'],
    [{ validateApiKey: fn, heartbeatInterval: -1 }, 'heartbeatInterval'],
    [{ validateApiKey: fn, heartbeatInterval: '30000' }, 'heartbeatInterval'],
    // 0 is v1's "unset" (README "new WhatsAppGateway(config)"): see first-hour.test.js.
    [{ validateApiKey: fn, maxSessionsPerKey: -1 }, 'maxSessionsPerKey'],
    [{ validateApiKey: fn, maxSessionsPerKey: 2.5 }, 'maxSessionsPerKey'],
    [{ validateApiKey: fn, deviceSelectionStrategy: 'fastest' }, 'deviceSelectionStrategy'],
    [{ validateApiKey: fn, allowedOrigins: 'x' }, 'allowedOrigins'],
    [{ validateApiKey: fn, mediaFileRoots: [1] }, 'mediaFileRoots'],
    [{ validateApiKey: fn, mediaAllowPrivateHosts: 'yes' }, 'mediaAllowPrivateHosts'],
    [{ validateApiKey: fn, path: 'no-slash' }, 'path'],
  ];
  for (const [config, option] of cases) {
    assert.throws(
      () => new WhatsAppGateway(config),
      (error) => {
        assert.ok(error instanceof TypeError, `${option}: ${error}`);
        assert.ok(error.message.includes(option), `message names ${option}: ${error.message}`);
        return true;
      },
      `config ${JSON.stringify(config)} must throw`,
    );
  }
});

test("port as a numeric string (process.env.PORT) is accepted and used", async (t) => {
  const port = await freePort();
  const gateway = new WhatsAppGateway({ port: String(port), host: '127.0.0.1', validateApiKey });
  t.after(() => gateway.stop());
  await gateway.start();
  assert.equal(gateway.address().port, port);
  const ext = await new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`).connectReady(gateway);
  assert.equal(gateway.getActiveSessions(GOOD_KEY)[0].sessionId, ext.sessionId);
});

test('omitted (or undefined) options take their defaults: all interfaces, path /wa-ext-ws', async (t) => {
  // The default port 3000 itself is exercised by guide.test.js ("Basic Setup"); binding it
  // here too could collide with that file when test files run in parallel.
  assert.doesNotThrow(() => new WhatsAppGateway({ validateApiKey }));
  const undefinedOptions = Object.fromEntries(
    ['host', 'path', 'heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'maxSessionsPerKey',
      'deviceSelectionStrategy', 'authTimeout', 'maxPayload', 'maxMediaBytes', 'allowedOrigins',
      'mediaFileRoots', 'mediaAllowPrivateHosts', 'mediaFetchTimeout', 'onMessageLog', 'onError'].map((k) => [k, undefined]),
  );
  const gateway = new WhatsAppGateway({ validateApiKey, port: '0', ...undefinedOptions });
  t.after(() => gateway.stop());
  await gateway.start();
  const { port } = gateway.address();
  assert.ok(port > 0);
  // Reachable over IPv4 and (where the machine has it) IPv6 loopback, on the default path.
  const v4 = await new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`).connectReady(gateway);
  const v6 = await new FakeExtension(`ws://[::1]:${port}/wa-ext-ws`).connectReady(gateway);
  const used = new Set();
  for (let i = 0; i < 4; i++) {
    used.add((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `d${i}` })).deviceInfo.sessionId);
  }
  assert.deepEqual(used, new Set([v4.sessionId, v6.sessionId]), 'default round-robin uses both devices');
  const wrongPath = new FakeExtension(`ws://127.0.0.1:${port}/other`);
  await assert.rejects(wrongPath.open(), /upgrade refused|Unexpected server response|socket hang up/);
});

// ---------------------------------------------------------------------------
// 8. getActiveSessions edge cases

test('getActiveSessions of a key without sessions, or of a non-string, is []', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
  await new FakeExtension(url).connectReady(gateway);
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
  assert.deepEqual(gateway.getActiveSessions(OTHER_KEY), []);
  assert.deepEqual(gateway.getActiveSessions('never-seen-key'), []);
  for (const key of [undefined, null, 123, {}, [GOOD_KEY], Symbol('k')]) {
    assert.deepEqual(gateway.getActiveSessions(key), [], String(typeof key));
  }
  assert.deepEqual(await gateway.getActiveSessions(OTHER_KEY), []);
  assert.equal((await gateway.getActiveSessions(GOOD_KEY)).length, 1);
});

test('reusePort: two gateways serve one port, each keeps serving when the other stops; without it the second is EADDRINUSE', async (t) => {
  const port = await freePort();
  const make = (reusePort) => new WhatsAppGateway({ port, host: '127.0.0.1', reusePort, validateApiKey });
  const first = make(true);
  const second = make(true);
  t.after(() => Promise.all([first.stop(), second.stop()]));
  await first.start();
  await second.start();

  const lone = make(false);
  t.after(() => lone.stop());
  assert.equal((await rejection(lone.start())).code, 'EADDRINUSE');

  // The kernel picks a gateway per connection: each extension's sends go through the one that took it.
  const url = `ws://127.0.0.1:${port}/wa-ext-ws`;
  const holderOf = async (ext) => {
    await waitFor(() => [first, second].some((g) => g.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive)));
    return [first, second].find((g) => g.getActiveSessions(GOOD_KEY).some((s) => s.sessionId === ext.sessionId));
  };
  const ext = new FakeExtension(url);
  await ext.open();
  await ext.authenticate();
  ext.sendStatus(true);
  const holder = await holderOf(ext);
  assert.ok(holder, 'one of the two gateways holds the session');
  const other = holder === first ? second : first;
  await other.stop();
  const result = await holder.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'one port, two gateways' });
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
  ext.close();
});

test('reusePort must be a boolean', () => {
  assert.throws(() => new WhatsAppGateway({ validateApiKey, reusePort: 'yes' }), /reusePort/);
});

test('every config TypeError shows a bad value the same way: never a function\'s source, never a whole object', () => {
  const fn = () => ({ valid: true });
  const secretFn = function pacing() {
    return 'hunter2-token';
  };
  const cases = [
    [{ validateApiKey: fn, pacing: secretFn }, 'pacing', 'a function'],
    [{ validateApiKey: fn, maxQueuedSends: { limit: 'hunter2-token' } }, 'maxQueuedSends', 'an object (Object)'],
    [{ validateApiKey: fn, maxMessageStatuses: [1, 2] }, 'maxMessageStatuses', 'an array'],
    [{ validateApiKey: fn, pacing: { minIntervalMs: 'x'.repeat(100) } }, 'pacing.minIntervalMs', `"${'x'.repeat(60)}..."`],
    [{ validateApiKey: fn, heartbeatInterval: secretFn }, 'heartbeatInterval', 'a function'],
  ];
  for (const [config, option, shown] of cases) {
    assert.throws(
      () => new WhatsAppGateway(config),
      (error) => {
        assert.ok(error instanceof TypeError, `${option}: ${error}`);
        assert.ok(error.message.startsWith(`WhatsAppGateway config: '${option}' must be `), error.message);
        assert.ok(error.message.includes(`got ${shown}`), `${option} shows ${shown}: ${error.message}`);
        assert.ok(!error.message.includes('hunter2'), error.message);
        return true;
      },
    );
  }
});
