'use strict';
// Seeing inside (README "Seeing inside", and process warnings): the gateway as an EventEmitter,
// getAllSessions(), metrics() read by a real Prometheus text parser, the debug log
// of NODE_DEBUG=wa-gateway, and process warnings, all against real extensions on
// loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { runScript: runChild } = require('./child-script');
const path = require('node:path');
const parsePrometheus = require('parse-prometheus-text-format');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');

const PHONE = '+1234567890';
const root = path.resolve(__dirname, '..');

function newExtension(t, url, options) {
  const ext = new FakeExtension(url, options);
  t.after(() => (ext.ws ? ext.close() : undefined));
  return ext;
}

/** A gateway on loopback with no callbacks but the validator. */
async function bareGateway(t, extra = {}) {
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: (apiKey) => ({ valid: [GOOD_KEY, OTHER_KEY].includes(apiKey), userId: 'u-1' }),
    ...extra,
  });
  await gateway.start();
  t.after(() => gateway.stop());
  return { gateway, url: `ws://127.0.0.1:${gateway.address().port}/wa-ext-ws` };
}

/** Runs a script with this package, returns { code, stdout, stderr } (bounded). */
function runScript(source, env = {}) {
  return runChild(source, { env: { NODE_DEBUG: '', ...env }, limit: 20_000 });
}

// ---- EventEmitter ----

test('every event is emitted under its type and under "event", without onMessageLog', async (t) => {
  const { gateway, url } = await bareGateway(t);
  const byType = [];
  const all = [];
  gateway.on('session-connected', (e) => byType.push(e));
  gateway.on('message-sent', (e) => byType.push(e));
  gateway.on('session-disconnected', (e) => byType.push(e));
  gateway.on('event', (e) => all.push(e));

  const ext = await newExtension(t, url).connectReady(gateway);
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi' });
  await ext.close();
  await waitFor(() => byType.some((e) => e.type === 'session-disconnected'), 3000, 'session-disconnected');

  assert.deepEqual(byType.map((e) => e.type), ['session-connected', 'message-sent', 'session-disconnected']);
  const sent = byType[1];
  assert.equal(sent.apiKey, GOOD_KEY);
  assert.equal(sent.requestId, result.requestId);
  assert.equal(sent.phoneNumber, PHONE);
  assert.equal(sent.status, 'success');
  assert.equal(byType[0].details.ip, '127.0.0.1');
  // 'event' gets every one of them (and session-status besides), as the same objects.
  for (const event of byType) assert.ok(all.includes(event), event.type);
  assert.ok(all.some((e) => e.type === 'session-status'));
});

test('listeners get the very object onMessageLog gets; errors go to gateway-error, never "error"', async (t) => {
  const logged = [];
  const errors = [];
  const { gateway, url } = await startGateway({ onMessageLog: (e) => logged.push(e), onError: (e) => errors.push(e) });
  t.after(() => gateway.stop());
  const emitted = [];
  const gatewayErrors = [];
  gateway.on('event', (e) => emitted.push(e));
  gateway.on('gateway-error', (e) => gatewayErrors.push(e));
  let plainErrorEvents = 0;
  gateway.emit = new Proxy(gateway.emit, {
    apply(target, self, args) {
      if (args[0] === 'error') plainErrorEvents++;
      return Reflect.apply(target, self, args);
    },
  });

  await newExtension(t, url).connectReady(gateway);
  await waitFor(() => logged.length >= 2 && emitted.length >= 2, 3000, 'events');
  assert.equal(emitted[0], logged[0]);

  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: '123', message: 'x' }), { code: 'VALIDATION_ERROR' });
  const refused = newExtension(t, url, { apiKey: 'wrong-key-0123456789' });
  await refused.open();
  await refused.authenticate().catch(() => {});
  await waitFor(() => gatewayErrors.some((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'auth failure');
  assert.equal(gatewayErrors[0], errors[0]);
  assert.equal(gatewayErrors[0].code, 'VALIDATION_ERROR');
  assert.ok(gatewayErrors.every((e) => e instanceof Error && typeof e.code === 'string'));
  assert.equal(gateway.listenerCount('error'), 0);
  assert.equal(plainErrorEvents, 0);
});

test('a listener that throws is a CALLBACK_ERROR; later listeners still run; the gateway keeps serving', async (t) => {
  const { gateway, url, errors } = await startGateway();
  t.after(() => gateway.stop());
  const after = [];
  gateway.on('message-sent', () => {
    throw new Error('listener bug');
  });
  gateway.on('message-sent', async () => {
    throw new Error('async listener bug');
  });
  gateway.on('message-sent', (e) => after.push(e));
  // A throw in a gateway-error listener is swallowed: no recursion, no crash.
  let gatewayErrorCalls = 0;
  gateway.on('gateway-error', () => {
    gatewayErrorCalls++;
    throw new Error('error listener bug');
  });

  await newExtension(t, url).connectReady(gateway);
  for (const message of ['one', 'two']) {
    const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message });
    assert.equal(result.success, true);
  }
  await waitFor(() => errors.filter((e) => e.code === 'CALLBACK_ERROR').length >= 4, 3000, 'CALLBACK_ERRORs');
  const callbackErrors = errors.filter((e) => e.code === 'CALLBACK_ERROR');
  assert.equal(callbackErrors.length, 4);
  assert.deepEqual(new Set(callbackErrors.map((e) => e.details.error)), new Set(['listener bug', 'async listener bug']));
  assert.match(callbackErrors[0].details.callback, /'message-sent' listener/);
  assert.equal(after.length, 2);
  assert.equal(gatewayErrorCalls, errors.length);
});

// ---- getAllSessions ----

test('getAllSessions lists every session of every key with its full apiKey and its apiKeyDigest', async (t) => {
  const { gateway, url } = await bareGateway(t);
  assert.deepEqual(gateway.getAllSessions(), []);
  const a = await newExtension(t, url, { apiKey: GOOD_KEY }).connectReady(gateway);
  const b = await newExtension(t, url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const c = newExtension(t, url, { apiKey: OTHER_KEY, dialect: 'doc' });
  await c.open();
  await c.authenticate();

  const all = gateway.getAllSessions();
  assert.equal(all.length, 3);
  const byId = Object.fromEntries(all.map((s) => [s.sessionId, s]));
  assert.equal(byId[a.sessionId].apiKey, GOOD_KEY);
  assert.equal(byId[b.sessionId].apiKey, OTHER_KEY);
  assert.equal(byId[c.sessionId].apiKey, OTHER_KEY);
  assert.equal(byId[c.sessionId].deviceActive, false);
  for (const session of all) {
    const { apiKey, apiKeyDigest, ...fields } = session;
    assert.equal(apiKeyDigest, require('node:crypto').createHash('sha256').update(apiKey).digest('hex'));
    const [same] = gateway.getActiveSessions(apiKey).filter((s) => s.sessionId === session.sessionId);
    assert.deepEqual(Object.keys(fields).sort(), Object.keys(same).sort());
  }
  await gateway.stop();
  assert.deepEqual(gateway.getAllSessions(), []);
});

// ---- metrics ----

function family(parsed, name) {
  const found = parsed.find((f) => f.name === name);
  assert.ok(found, `metric family ${name}`);
  return found;
}

function sample(parsed, name, labels = {}) {
  const matches = family(parsed, name).metrics.filter((m) =>
    Object.entries(labels).every(([k, v]) => m.labels?.[k] === v),
  );
  assert.equal(matches.length, 1, `one sample of ${name} ${JSON.stringify(labels)}`);
  return matches[0];
}

/**
 * parse-prometheus-text-format keeps only unlabelled histograms (it flattens by `le`
 * and drops labelled `_sum`/`_count`), so a labelled series is read from its lines.
 */
function labelledHistogram(text, name, labelText) {
  const series = { buckets: {} };
  for (const line of text.split('\n')) {
    const bucket = new RegExp(`^${name}_bucket\\{${labelText},le="([^"]+)"\\} (\\S+)$`).exec(line);
    if (bucket) series.buckets[bucket[1]] = bucket[2];
    const total = new RegExp(`^${name}_(sum|count)\\{${labelText}\\} (\\S+)$`).exec(line);
    if (total) series[total[1]] = total[2];
  }
  return series;
}

test('metrics() is Prometheus text 0.0.4 that a parser reads, with the families the README lists', async (t) => {
  const { gateway, url } = await bareGateway(t, { requestTimeout: 300 });
  const before = parsePrometheus(gateway.metrics());
  const authFailuresBefore = Number(sample(before, 'wa_gateway_auth_failures_total', { reason: 'invalid_key' }).value);
  const bytesBefore = Number(sample(before, 'wa_gateway_bytes_written_total').value);

  const ready = await newExtension(t, url).connectReady(gateway);
  const silent = newExtension(t, url, { apiKey: OTHER_KEY, respond: () => null });
  await silent.connectReady(gateway);
  const idle = newExtension(t, url, { apiKey: OTHER_KEY });
  await idle.open();
  await idle.authenticate();
  const refused = newExtension(t, url, { apiKey: 'not-a-key-0123456789' });
  await refused.open();
  await refused.authenticate().catch(() => {});

  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'one' });
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'two' });
  await assert.rejects(gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'lost', timeout: 200 }), {
    code: 'REQUEST_TIMEOUT',
  });
  await assert.rejects(gateway.sendMessage('nobody-0123456789', { phoneNumber: PHONE, message: 'x' }), {
    code: 'NO_ACTIVE_DEVICE',
  });
  await assert.rejects(gateway.sendImage(GOOD_KEY, { phoneNumber: 'nope', dataUrl: 'x' }), { code: 'VALIDATION_ERROR' });
  const pending = gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'waiting', timeout: 5000 });
  await waitFor(() => silent.commands.length === 2, 3000, 'second command');

  const text = gateway.metrics();
  assert.equal(typeof text, 'string');
  // Every line is a comment or a sample `name{labels} value`; every family is typed first.
  const typed = new Set();
  for (const line of text.trimEnd().split('\n')) {
    const typeLine = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line);
    if (typeLine) typed.add(typeLine[1]);
    else if (!line.startsWith('# HELP ')) {
      const m = /^(\w+?)(_bucket|_sum|_count)?(\{[^}]*\})? (\S+)$/.exec(line);
      assert.ok(m, `sample line: ${line}`);
      assert.ok(typed.has(m[1]) || typed.has(m[1] + (m[2] ?? '')), `typed before use: ${line}`);
    }
  }
  const parsed = parsePrometheus(text);
  assert.equal(family(parsed, 'wa_gateway_sessions').type, 'GAUGE');
  assert.equal(sample(parsed, 'wa_gateway_sessions', { state: 'ready' }).value, '2');
  assert.equal(sample(parsed, 'wa_gateway_sessions', { state: 'not_ready' }).value, '1');
  // The refused one has been closed.
  assert.equal(sample(parsed, 'wa_gateway_connections').value, '3');
  assert.equal(sample(parsed, 'wa_gateway_pending_sends').value, '1');
  assert.equal(sample(parsed, 'wa_gateway_queued_sends').value, '0');
  assert.equal(family(parsed, 'wa_gateway_sends_total').type, 'COUNTER');
  assert.equal(sample(parsed, 'wa_gateway_sends_total', { kind: 'message', outcome: 'success' }).value, '2');
  assert.equal(sample(parsed, 'wa_gateway_sends_total', { kind: 'message', outcome: 'REQUEST_TIMEOUT' }).value, '1');
  assert.equal(sample(parsed, 'wa_gateway_sends_total', { kind: 'message', outcome: 'NO_ACTIVE_DEVICE' }).value, '1');
  assert.equal(sample(parsed, 'wa_gateway_sends_total', { kind: 'image', outcome: 'VALIDATION_ERROR' }).value, '1');
  assert.equal(family(parsed, 'wa_gateway_send_duration_seconds').type, 'HISTOGRAM');
  const durations = labelledHistogram(text, 'wa_gateway_send_duration_seconds', 'kind="message"');
  assert.equal(durations.count, '4');
  assert.equal(durations.buckets['+Inf'], '4');
  assert.ok(Number(durations.sum) >= 0.2, 'the timed-out send waited its 200 ms');
  assert.ok(Number(durations.buckets['0.1']) <= Number(durations.buckets['0.25']), 'buckets are cumulative');
  assert.equal(
    Number(sample(parsed, 'wa_gateway_auth_failures_total', { reason: 'invalid_key' }).value) - authFailuresBefore,
    1,
  );
  for (const reason of ['validator_error', 'auth_timeout', 'max_sessions', 'origin', 'pre_auth_limit']) {
    sample(parsed, 'wa_gateway_auth_failures_total', { reason });
  }
  assert.ok(Number(sample(parsed, 'wa_gateway_bytes_written_total').value) - bytesBefore > 100);
  assert.equal(family(parsed, 'wa_gateway_media_fetch_duration_seconds').type, 'HISTOGRAM');

  // Works while stopped; counters are kept.
  silent.result(silent.commands[1].requestId, { success: true });
  await pending;
  await gateway.stop();
  const stopped = parsePrometheus(gateway.metrics());
  assert.equal(sample(stopped, 'wa_gateway_sends_total', { kind: 'message', outcome: 'success' }).value, '3');
  assert.equal(sample(stopped, 'wa_gateway_sessions', { state: 'ready' }).value, '0');
  assert.equal(sample(stopped, 'wa_gateway_pending_sends').value, '0');
  assert.ok(ready.sessionId);
});

test('every settled send is counted in both wa_gateway_sends_total and the duration histogram, validation failures included', async (t) => {
  const { gateway, url } = await bareGateway(t);
  await newExtension(t, url).connectReady(gateway);
  const failing = newExtension(t, url, { apiKey: OTHER_KEY, respond: () => ({ success: false, error: 'no chat' }) });
  await failing.connectReady(gateway);

  const calls = [
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'one' }),
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'two' }),
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'three' }),
    gateway.sendMessage(GOOD_KEY, { phoneNumber: '12345', message: 'bad number' }),
    gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: '' }),
    gateway.sendMessage(GOOD_KEY, null),
    gateway.sendMessage('', { phoneNumber: PHONE, message: 'no key' }),
    gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'refused' }),
    gateway.sendMessage('nobody-0123456789', { phoneNumber: PHONE, message: 'nobody' }),
    gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, caption: 'no media' }),
    gateway.sendDocument(GOOD_KEY, { phoneNumber: PHONE, documentUrl: '/not/a/url.pdf' }),
    gateway.sendVideo(GOOD_KEY, { phoneNumber: PHONE, videoUrl: 'file:///outside/the/roots.mp4' }),
    gateway.request(GOOD_KEY, 'not a command type', {}),
  ];
  const outcomes = (await Promise.allSettled(calls)).map((r) => (r.status === 'fulfilled' ? 'success' : r.reason.code));
  assert.deepEqual(outcomes, [
    'success', 'success', 'success',
    'VALIDATION_ERROR', 'VALIDATION_ERROR', 'VALIDATION_ERROR', 'VALIDATION_ERROR',
    'EXTENSION_ERROR', 'NO_ACTIVE_DEVICE',
    'VALIDATION_ERROR', 'VALIDATION_ERROR', 'MEDIA_NOT_ALLOWED',
    'VALIDATION_ERROR',
  ]);

  const text = gateway.metrics();
  const parsed = parsePrometheus(text);
  const counted = {};
  for (const m of family(parsed, 'wa_gateway_sends_total').metrics) {
    counted[m.labels.kind] = (counted[m.labels.kind] ?? 0) + Number(m.value);
  }
  assert.deepEqual(counted, { message: 9, image: 1, document: 1, video: 1, command: 1 });
  assert.equal(sample(parsed, 'wa_gateway_sends_total', { kind: 'message', outcome: 'VALIDATION_ERROR' }).value, '4');
  for (const [kind, count] of Object.entries(counted)) {
    const histogram = labelledHistogram(text, 'wa_gateway_send_duration_seconds', `kind="${kind}"`);
    assert.equal(histogram.count, String(count), `${kind}: the histogram's _count is the counter's total`);
    assert.equal(histogram.buckets['+Inf'], String(count), kind);
    // A call refused before it was made (request()'s checks) is timed too: a sum, not NaN.
    assert.ok(Number.isFinite(Number(histogram.sum)) && Number(histogram.sum) >= 0, `${kind}: sum ${histogram.sum}`);
  }
});

test('auth failures are counted by reason: origin, auth_timeout, max_sessions, pre_auth_limit', async (t) => {
  const origin = 'chrome-extension://allowed';
  const { gateway, url } = await bareGateway(t, { allowedOrigins: [origin], authTimeout: 300, maxSessionsPerKey: 1 });
  const count = (reason) =>
    Number(sample(parsePrometheus(gateway.metrics()), 'wa_gateway_auth_failures_total', { reason }).value);
  const before = Object.fromEntries(['origin', 'auth_timeout', 'max_sessions', 'pre_auth_limit'].map((r) => [r, count(r)]));

  await assert.rejects(newExtension(t, url, { origin: 'https://evil.example' }).open(), /403/);
  const silent = newExtension(t, url, { origin });
  await silent.open();
  assert.equal((await silent.whenClosed).code, 1008);
  await newExtension(t, url, { origin }).connectReady(gateway);
  const second = newExtension(t, url, { origin });
  await second.open();
  await assert.rejects(second.authenticate(), (e) => e.frame?.code === 'MAX_SESSIONS_EXCEEDED');

  assert.equal(count('origin') - before.origin, 1);
  assert.equal(count('auth_timeout') - before.auth_timeout, 1);
  assert.equal(count('max_sessions') - before.max_sessions, 1);

  // A frame over maxPreAuthPayload (16 KiB by default) before auth.
  const big = newExtension(t, url, { origin });
  await big.open();
  big.send({ type: 'auth', apiKey: 'x'.repeat(20_000) });
  assert.equal((await big.whenClosed).code, 1009);
  assert.equal(count('pre_auth_limit') - before.pre_auth_limit, 1);
});

test('metrics() can be served after another exposition (prom-client style) and still parses', async (t) => {
  const { gateway } = await bareGateway(t);
  const other = '# HELP process_cpu_seconds_total CPU time.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n';
  const parsed = parsePrometheus(`${other}\n${gateway.metrics()}`);
  assert.equal(sample(parsed, 'process_cpu_seconds_total').value, '1.5');
  sample(parsed, 'wa_gateway_up');
  assert.equal(new Set(parsed.map((f) => f.name)).size, parsed.length, 'no family twice');
});

// ---- a failing validator ----

test('a failing validator tells the extension the service is unavailable, not that its key is invalid', async (t) => {
  const errors = [];
  const { gateway, url } = await bareGateway(t, {
    validateApiKey: () => Promise.reject(new Error('db down')),
    onError: (e) => errors.push(e),
  });
  const before = Number(sample(parsePrometheus(gateway.metrics()), 'wa_gateway_auth_failures_total', { reason: 'validator_error' }).value);
  const ext = newExtension(t, url);
  await ext.open();
  const failure = await ext.authenticate().catch((e) => e);
  assert.equal(failure.frame.code, 'AUTHENTICATION_FAILED');
  assert.match(failure.frame.message, /unavailable/i);
  assert.match(failure.frame.message, /try again later/);
  assert.doesNotMatch(failure.frame.message, /Invalid API key/);
  const closed = await ext.whenClosed;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, 'Authentication unavailable');
  const callbackError = await waitFor(() => errors.find((e) => e.code === 'CALLBACK_ERROR'), 3000, 'CALLBACK_ERROR');
  assert.match(callbackError.message, /db down/);
  const authError = await waitFor(() => errors.find((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'auth error');
  assert.equal(authError.details.reason, 'validator_error');
  const after = Number(sample(parsePrometheus(gateway.metrics()), 'wa_gateway_auth_failures_total', { reason: 'validator_error' }).value);
  assert.equal(after - before, 1);
});

// ---- debug log ----

const SCRIPT_PRELUDE = `
  const { WhatsAppGateway } = require(${JSON.stringify(root)});
  const WebSocket = require(${JSON.stringify(require.resolve('ws'))});
  const KEY = 'secret-key-0123456789';
  function connect(url, apiKey, onFrame) {
    const ws = new WebSocket(url);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', apiKey, data: { extensionVersion: '9.9', browser: 'Test' } })));
    ws.on('message', (raw) => onFrame(ws, JSON.parse(raw)));
    return new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  }
`;

test('NODE_DEBUG=wa-gateway logs connections, auth results, closes and errors with masked keys', async () => {
  const script = `${SCRIPT_PRELUDE}
    (async () => {
      const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', authTimeout: 300,
        validateApiKey: (k) => k === KEY ? { valid: true } : { valid: false, reason: 'revoked' } });
      await gateway.start();
      const url = 'ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws';
      await connect(url, 'wrong-key-0123456789', () => {});
      const silent = new WebSocket(url);
      await new Promise((resolve) => silent.on('close', resolve));
      await connect(url, KEY, (ws, f) => { if (f.type === 'auth-success') ws.close(4000, 'bye'); });
      await gateway.stop();
    })();`;
  const { code, stderr } = await runScript(script, { NODE_DEBUG: 'wa-gateway' });
  assert.equal(code, 0, stderr);
  const lines = stderr.trim().split('\n');
  assert.ok(lines.every((l) => /^WA-GATEWAY \d+: /.test(l)), stderr);
  assert.match(stderr, /listening on port \d+/);
  assert.match(stderr, /connection from 127\.0\.0\.1\n/);
  assert.match(stderr, /connection from 127\.0\.0\.1 closed before a session: code 1008, Authentication failed/);
  assert.match(stderr, /connection from 127\.0\.0\.1 closed before a session: code 1008, Authentication timeout/);
  assert.match(stderr, /auth refused from 127\.0\.0\.1 \(key wrong-ke\*\*\*\): .*revoked/);
  assert.match(stderr, /session [0-9a-f-]{36} \(key secret-k\*\*\*\) authenticated from 127\.0\.0\.1/);
  assert.match(stderr, /closed: code 4000, bye/);
  assert.match(stderr, /stopped/);
  assert.doesNotMatch(stderr, /secret-key-0123456789|wrong-key-0123456789/);

  const quiet = await runScript(script);
  assert.equal(quiet.code, 0);
  assert.equal(quiet.stderr, '', 'nothing is printed without NODE_DEBUG');
});

test('NODE_DEBUG=wa-gateway logs refused upgrades (status, path without its query, address), standalone and attached', async () => {
  const script = `${SCRIPT_PRELUDE}
    const http = require('node:http');
    /** Resolves with the HTTP status the upgrade got. */
    function upgrade(url, origin) {
      const ws = new WebSocket(url, { origin });
      return new Promise((resolve) => {
        ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode); ws.terminate(); });
        ws.on('error', () => {});
      });
    }
    (async () => {
      const options = { host: '127.0.0.1', allowedOrigins: ['chrome-extension://good'], validateApiKey: () => ({ valid: true }) };
      const standalone = new WhatsAppGateway({ ...options, port: '0' });
      await standalone.start();
      const base = 'ws://127.0.0.1:' + standalone.address().port;
      const seen = [
        await upgrade(base + '/wrong-path?token=secret-in-query', 'chrome-extension://good'),
        await upgrade(base + '/wa-ext-ws', 'https://evil.example'),
      ];
      await standalone.stop();

      const server = http.createServer();
      const attached = new WhatsAppGateway({ ...options, server });
      await attached.start();
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      const attachedBase = 'ws://127.0.0.1:' + server.address().port;
      seen.push(
        await upgrade(attachedBase + '/attached-wrong?token=secret-in-query', 'chrome-extension://good'),
        await upgrade(attachedBase + '/wa-ext-ws', 'https://evil.example'),
      );
      await attached.stop();
      server.close();
      console.log(JSON.stringify(seen));
    })();`;
  const { code, stdout, stderr } = await runScript(script, { NODE_DEBUG: 'wa-gateway' });
  assert.equal(code, 0, stderr);
  assert.deepEqual(JSON.parse(stdout), [404, 403, 404, 403]);
  const refused = stderr.split('\n').filter((line) => line.includes('upgrade refused'));
  assert.equal(refused.length, 4, stderr);
  assert.match(refused[0], /^WA-GATEWAY \d+: upgrade refused with HTTP 404 \(path \/wrong-path, from 127\.0\.0\.1\)$/);
  assert.match(refused[1], /^WA-GATEWAY \d+: upgrade refused with HTTP 403 \(path \/wa-ext-ws, from 127\.0\.0\.1\)$/);
  assert.match(refused[2], /^WA-GATEWAY \d+: upgrade refused with HTTP 404 \(path \/attached-wrong, from 127\.0\.0\.1\)$/);
  assert.match(refused[3], /^WA-GATEWAY \d+: upgrade refused with HTTP 403 \(path \/wa-ext-ws, from 127\.0\.0\.1\)$/);
  assert.doesNotMatch(stderr, /secret-in-query/);
});

// ---- process warnings (README "Errors") ----

const COLLECT_WARNINGS = `
  const warnings = [];
  process.removeAllListeners('warning');
  process.on('warning', (w) => warnings.push({ code: w.code, name: w.name, message: w.message }));
`;

test('an unknown option is a process warning once per name, naming a close known option', async () => {
  const { code, stdout, stderr } = await runScript(`${SCRIPT_PRELUDE}${COLLECT_WARNINGS}
    const validateApiKey = () => ({ valid: true });
    new WhatsAppGateway({ validateApiKey, requestTimout: 5000, hearbeatInterval: 100, colour: 'red' });
    new WhatsAppGateway({ validateApiKey, requestTimout: 5000 });
    new WhatsAppGateway({ validateApiKey, requestTimeout: 5000, dialect: 'compat' });
    setImmediate(() => console.log(JSON.stringify(warnings)));`);
  assert.equal(code, 0, stderr);
  const warnings = JSON.parse(stdout);
  assert.equal(warnings.length, 3);
  assert.ok(warnings.every((w) => w.code === 'WA_GATEWAY_UNKNOWN_OPTION' && w.name === 'WhatsAppGatewayWarning'));
  assert.match(warnings[0].message, /'requestTimout'; did you mean 'requestTimeout'\?/);
  assert.match(warnings[1].message, /'hearbeatInterval'; did you mean 'heartbeatInterval'\?/);
  assert.match(warnings[2].message, /'colour'; it is ignored/);
});

test('unknown keys inside pacing, cluster, cluster.tls and a send call are warned about like top-level ones', async () => {
  const { code, stdout, stderr } = await runScript(`${SCRIPT_PRELUDE}${COLLECT_WARNINGS}
    const validateApiKey = () => ({ valid: true });
    new WhatsAppGateway({ validateApiKey, pacing: { minInterval: 4000, jiter: 5 } });
    new WhatsAppGateway({ validateApiKey, pacing: { minInterval: 10, minIntervalMs: 10, jitter: 5 } });
    // Rejected for its redis URL, after which nothing else is looked at.
    try { new WhatsAppGateway({ validateApiKey, cluster: { redis: 'nope', nodeID: 'x' } }); } catch {}
    new WhatsAppGateway({ validateApiKey, cluster: { redis: 'redis://127.0.0.1:1', nodeID: 'a', leaseMS: 1000,
      tls: { ca: 'PEM', servrname: 'redis.internal', rejectUnauthorized: false } } });
    (async () => {
      const gateway = new WhatsAppGateway({ validateApiKey });
      const calls = [
        gateway.sendMessage('key-0123456789', { phoneNumber: '+1234567890', message: 'hi', timout: 5000 }),
        gateway.sendMessage('key-0123456789', { phoneNumber: '+1234567890', message: 'hi', timout: 5000 }),
        // Misspelt required fields: the warning names the fix along with the VALIDATION_ERROR.
        gateway.sendImage('key-0123456789', { phoneNumber: '+1234567890', imageURL: 'https://example.com/a.png', caption: 'c' }),
        gateway.sendDocument('key-0123456789', { phonenumber: '+1234567890', documentUrl: 'https://example.com/a.pdf', colour: 1 }),
        // Known everywhere: no warning.
        gateway.sendVideo('key-0123456789', { phoneNumber: '+1234567890', videoUrl: 'https://example.com/a.mp4',
          caption: 'c', timeout: 5, deviceSelectionStrategy: 'random', waitForDevice: 0, waitFor: 'sent', idempotencyKey: 'k' }),
      ];
      const codes = (await Promise.allSettled(calls)).map((r) => r.reason?.code);
      setImmediate(() => console.log(JSON.stringify({ warnings, codes })));
    })();`);
  assert.equal(code, 0, stderr);
  const { warnings, codes } = JSON.parse(stdout);
  assert.deepEqual(codes, ['NO_ACTIVE_DEVICE', 'NO_ACTIVE_DEVICE', 'VALIDATION_ERROR', 'VALIDATION_ERROR', 'NO_ACTIVE_DEVICE']);
  assert.ok(warnings.every((w) => w.code === 'WA_GATEWAY_UNKNOWN_OPTION' && w.name === 'WhatsAppGatewayWarning'));
  assert.deepEqual(
    warnings.map((w) => w.message),
    [
      "WhatsAppGateway config: unknown option 'pacing.minInterval'; did you mean 'pacing.minIntervalMs'?",
      // Farther than 2 edits from any option.
      "WhatsAppGateway config: unknown option 'pacing.jiter'; it is ignored",
      "WhatsAppGateway config: unknown option 'pacing.jitter'; did you mean 'pacing.jitterMs'?",
      "WhatsAppGateway config: unknown option 'cluster.nodeID'; did you mean 'cluster.nodeId'?",
      "WhatsAppGateway config: unknown option 'cluster.leaseMS'; did you mean 'cluster.leaseMs'?",
      "WhatsAppGateway config: unknown option 'cluster.tls.servrname'; did you mean 'cluster.tls.servername'?",
      "sendMessage: unknown option 'timout'; did you mean 'timeout'?",
      "sendImage: unknown option 'imageURL'; did you mean 'imageUrl'?",
      "sendDocument: unknown option 'phonenumber'; did you mean 'phoneNumber'?",
      "sendDocument: unknown option 'colour'; it is ignored",
    ],
  );
});

test("unknown send fields from a client's request body: bounded in number, shown cut and without control characters", async () => {
  const { code, stdout, stderr } = await runScript(`${SCRIPT_PRELUDE}${COLLECT_WARNINGS}
    (async () => {
      const gateway = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }) });
      const body = { phoneNumber: '+1234567890', message: 'hi', ['evil\\nWARNING: forged line' + 'x'.repeat(500)]: 1 };
      for (let i = 0; i < 5000; i++) body['field' + i] = i;
      await gateway.sendMessage('key-0123456789', body).catch(() => {});
      await gateway.sendMessage('key-0123456789', { phoneNumber: '+1234567890', message: 'hi', another: 1 }).catch(() => {});
      // The config's typos are still reported.
      new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), requestTimout: 1 });
      setImmediate(() => console.log(JSON.stringify(warnings)));
    })();`);
  assert.equal(code, 0, stderr);
  const warnings = JSON.parse(stdout);
  assert.ok(warnings.length >= 10 && warnings.length <= 201, String(warnings.length));
  assert.ok(!warnings.some((w) => w.message.includes("'another'")), 'past the bound');
  assert.match(warnings.at(-1).message, /'requestTimout'; did you mean 'requestTimeout'\?/);
  assert.match(warnings[0].message, /^sendMessage: unknown option 'evil\?WARNING: forged linex+\.\.\.'; it is ignored$/);
  assert.ok(warnings[0].message.length < 150, warnings[0].message);
  assert.ok(warnings.every((w) => !w.message.includes('\n')));
});

test('without onError a failing validator is a process warning, at most once a minute per code; with a gateway-error listener none', async () => {
  const { code, stdout, stderr } = await runScript(`${SCRIPT_PRELUDE}${COLLECT_WARNINGS}
    (async () => {
      const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', authTimeout: 200,
        validateApiKey: (k) => { if (k === KEY) throw new Error('db down'); return new Promise(() => {}); } });
      await gateway.start();
      const url = 'ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws';
      await connect(url, KEY, () => {});
      await connect(url, KEY, () => {});
      await connect(url, 'never-answered-key-01', () => {});
      await new Promise((r) => setTimeout(r, 50));
      const unhandled = warnings.length;
      await gateway.stop();

      const listened = new WhatsAppGateway({ port: '0', host: '127.0.0.1',
        validateApiKey: () => { throw new Error('db down again'); } });
      const seen = [];
      listened.on('gateway-error', (e) => seen.push(e.code));
      await listened.start();
      await connect('ws://127.0.0.1:' + listened.address().port + '/wa-ext-ws', KEY, () => {});
      await new Promise((r) => setTimeout(r, 50));
      await listened.stop();
      console.log(JSON.stringify({ unhandled, warnings, seen }));
    })();`);
  assert.equal(code, 0, stderr);
  const { unhandled, warnings, seen } = JSON.parse(stdout);
  assert.equal(unhandled, 1, JSON.stringify(warnings));
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].code, 'WA_GATEWAY_CALLBACK_ERROR');
  assert.match(warnings[0].message, /validateApiKey failed: db down/);
  assert.match(warnings[0].message, /onError/);
  assert.doesNotMatch(warnings[0].message, /secret-key-0123456789/);
  assert.ok(seen.includes('CALLBACK_ERROR'));
});
