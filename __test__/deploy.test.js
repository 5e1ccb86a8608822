'use strict';
// What orchestrators and operators see (README "Deploying"): getHealth().ready and
// .live for /readyz and /healthz, the `logger` option with pino and console-like
// loggers, the checks of the deployment options, and metrics() as Prometheus' own
// promtool reads it.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { Writable } = require('node:stream');
const pino = require('pino');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');
const { unreachableRedisUrl } = require('./redis');
const { toolSkip } = require('./tools');

test('getHealth(): live and ready while running; not ready once stopped; with cluster, not ready while Redis is unreachable', { timeout: 30_000 }, async () => {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }) });
  let health = gateway.getHealth();
  assert.equal(health.ready, false);
  assert.equal(health.live, true, 'a stopped gateway still answers');
  await gateway.start();
  health = gateway.getHealth();
  assert.equal(health.ready, true);
  assert.equal(health.live, true);
  await gateway.stop();
  assert.equal(gateway.getHealth().ready, false);

  const clustered = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: () => ({ valid: true }),
    onError: () => {},
    cluster: { redis: await unreachableRedisUrl(), leaseMs: 1000 },
  });
  await clustered.start();
  try {
    health = clustered.getHealth();
    assert.equal(health.cluster.redis, 'reconnecting');
    assert.equal(health.ready, false, 'Redis away: not ready');
    assert.equal(health.live, true);
  } finally {
    await clustered.stop();
  }
});

/** A pino logger at debug level writing JSON lines into `lines`. */
function pinoInto(lines) {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return pino({ level: 'debug' }, sink);
}

test('logger: a pino logger gets start/stop (info), session connects and closes (debug), refusals (warn), with API keys masked', { timeout: 30_000 }, async () => {
  const lines = [];
  const node = await startGateway({ logger: pinoInto(lines) });
  const extension = new FakeExtension(node.url);
  await extension.connectReady(node.gateway);
  const refused = new FakeExtension(node.url, { apiKey: 'wrong-key-0123456789' });
  await refused.open();
  await refused.authenticate().catch(() => {});
  await extension.close();
  await waitFor(() => lines.some((l) => l.msg === 'session closed'), 5000, 'the close to be logged');
  const failed = await node.gateway.sendMessage('nobody-key-0123456789', { phoneNumber: '+15550001111', message: 'hi' }).catch((e) => e);
  assert.equal(failed.code, 'NO_ACTIVE_DEVICE');
  await node.gateway.stop();
  await waitFor(() => lines.some((l) => l.msg === 'gateway stopped'), 5000, 'the stop to be logged');

  const level = { debug: 20, info: 30, warn: 40, error: 50 };
  const started = lines.find((l) => l.msg === 'gateway started');
  assert.equal(started.level, level.info);
  assert.equal(started.port, node.port);
  const connected = lines.find((l) => l.msg === 'session connected');
  assert.equal(connected.level, level.debug);
  assert.equal(connected.sessionId, extension.sessionId);
  assert.equal(connected.apiKey, 'test-key***', 'masked as in errors');
  assert.equal(lines.find((l) => l.msg === 'session closed').level, level.debug);
  const refusal = lines.find((l) => l.code === 'AUTHENTICATION_FAILED');
  assert.equal(refusal.level, level.warn);
  assert.match(refusal.msg, /refused/);
  const sendFailed = lines.find((l) => l.code === 'NO_ACTIVE_DEVICE');
  assert.equal(sendFailed.level, level.warn);
  for (const line of lines) {
    const text = JSON.stringify(line);
    assert.doesNotMatch(text, new RegExp(GOOD_KEY), `a key in clear: ${text}`);
    assert.doesNotMatch(text, /wrong-key-0123456789|nobody-key-0123456789/, `a key in clear: ${text}`);
  }
});

test('logger: any object with debug/info/warn/error is called (fields, message); Redis up/down is logged; a logger that throws breaks nothing', { timeout: 30_000 }, async () => {
  const calls = [];
  const logger = Object.fromEntries(
    ['debug', 'info', 'warn', 'error'].map((level) => [
      level,
      (fields, message) => {
        calls.push({ level, fields, message });
        if (level === 'debug') throw new Error('a logger bug');
      },
    ]),
  );
  const node = await startGateway({ logger, cluster: { redis: await unreachableRedisUrl(), leaseMs: 1000 } });
  const extension = new FakeExtension(node.url);
  await extension.open();
  await extension.authenticate();
  await waitFor(() => calls.some((c) => c.message === 'session connected'), 5000, 'the connect to be logged');
  extension.ws.terminate();
  await waitFor(() => calls.some((c) => /Redis/.test(c.message) && c.level === 'warn'), 5000, 'Redis down to be logged');
  await node.gateway.stop();
  for (const call of calls) {
    assert.equal(typeof call.fields, 'object');
    assert.equal(typeof call.message, 'string');
  }
  assert.ok(calls.some((c) => c.level === 'info' && c.message === 'gateway started'));
});

test('the deployment options are checked: logger, cluster.redis for Sentinel, cluster.tls, cluster.secret', () => {
  const make = (extra) => () => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), ...extra });
  const typeError = (pattern) => (e) => e instanceof TypeError && pattern.test(e.message);
  assert.throws(make({ logger: {} }), typeError(/'logger'/));
  assert.throws(make({ logger: { info() {}, warn() {}, error() {} } }), typeError(/missing: debug/));
  assert.doesNotThrow(make({ logger: console }));
  const cluster = (c) => make({ cluster: c });
  assert.throws(cluster({ redis: { name: 'mymaster' } }), typeError(/cluster\.redis\.sentinels/));
  assert.throws(cluster({ redis: { sentinels: ['no-port'], name: 'm' } }), typeError(/sentinels/));
  assert.throws(cluster({ redis: { sentinels: ['127.0.0.1:26379'] } }), typeError(/cluster\.redis\.name/));
  assert.throws(cluster({ redis: { sentinels: ['127.0.0.1:26379'], name: 'm', password: 42 } }), typeError(/cluster\.redis\.password/));
  assert.throws(cluster({ redis: { sentinels: ['127.0.0.1:26379'], name: 'm', db: -1 } }), typeError(/cluster\.redis\.db/));
  assert.doesNotThrow(cluster({ redis: { sentinels: ['127.0.0.1:26379', '[::1]:26380'], name: 'm', password: 'p', db: 1 } }));
  assert.throws(cluster({ redis: 'rediss://127.0.0.1:6380', tls: { ca: 42 } }), typeError(/cluster\.tls\.ca/));
  assert.throws(cluster({ redis: 'rediss://127.0.0.1:6380', tls: { cert: 'x' } }), typeError(/both cert and key/));
  assert.throws(cluster({ redis: 'rediss://127.0.0.1:6380', tls: { ca: 'not a certificate' } }), (e) => /cluster\.tls\.ca/.test(e.message));
  assert.throws(cluster({ redis: 'rediss://127.0.0.1:6380', tls: { rejectUnauthorized: 'no' } }), typeError(/rejectUnauthorized/));
  assert.throws(cluster({ redis: 'redis://127.0.0.1:6379', secret: '' }), typeError(/cluster\.secret/));
  // Secrets are never echoed.
  const withPassword = () => new WhatsAppGateway({ validateApiKey: () => ({}), cluster: { redis: 'http://user:hunter2-secret@host' } });
  assert.throws(withPassword, (e) => !/hunter2/.test(e.message));
});

test('promtool check metrics accepts metrics() of a gateway with sessions and sends', { timeout: 30_000, skip: toolSkip('promtool', 'apt-get install prometheus') }, async () => {
  const node = await startGateway();
  try {
    const extension = new FakeExtension(node.url);
    await extension.connectReady(node.gateway);
    await node.gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550001111', message: 'hi' });
    await node.gateway.sendMessage('nobody-key-0123456789', { phoneNumber: '+15550001111', message: 'hi' }).catch(() => {});
    const text = node.gateway.metrics();
    const out = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
    assert.equal(out.status, 0, `${out.stdout}${out.stderr}`);
    assert.equal(`${out.stdout}${out.stderr}`.trim(), '', 'no lint finding');
    extension.ws.terminate();
  } finally {
    await node.gateway.stop();
  }
});
