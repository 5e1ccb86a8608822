'use strict';
// The native class is reachable from JavaScript (require('…/gateway.node')): every
// method refuses bad arguments with a TypeError, and no call can end the process.
const test = require('node:test');
const assert = require('node:assert/strict');
const { runScript } = require('./child-script');

/**
 * Calls every method of NativeGateway with bad arguments in a child process (an abort
 * would end it) and prints, per call, what it threw.
 */
const SCRIPT = `
const net = require('node:net');
const fs = require('node:fs');
const { NativeGateway, sendCall } = require('./gateway.node');
const { normalizeConfig } = require('./lib/options');
const { native: config } = normalizeConfig({ validateApiKey: () => ({ valid: false }) });
const deliver = () => {};
const gateway = new NativeGateway(config, deliver);
const request = { method: 'GET', url: '/wa-ext-ws', rawHeaders: [], remoteAddress: '127.0.0.1', head: Buffer.alloc(0) };
const file = fs.openSync(__filename === '[eval]' ? 'package.json' : __filename, 'r');
const unix = net.createServer().listen(0);
const cases = {
  'constructor: config not an object': () => new NativeGateway(42, deliver),
  'constructor: config missing fields': () => new NativeGateway({}, deliver),
  'constructor: port out of range': () => new NativeGateway({ ...config, port: 70000 }, deliver),
  'constructor: a duration that is NaN': () => new NativeGateway({ ...config, requestTimeout: NaN }, deliver),
  'constructor: a negative size': () => new NativeGateway({ ...config, maxPayload: -1 }, deliver),
  'constructor: an unknown dialect': () => new NativeGateway({ ...config, dialect: 'v9' }, deliver),
  'constructor: deliver a number': () => new NativeGateway(config, 42),
  'constructor: deliver an object': () => new NativeGateway(config, {}),
  'constructor: deliver missing': () => new NativeGateway(config),
  'adoptSocket: fd -1': () => gateway.adoptSocket(-1, request),
  'adoptSocket: fd -2': () => gateway.adoptSocket(-2, request),
  'adoptSocket: fd a string': () => gateway.adoptSocket('3', request),
  'adoptSocket: fd not open': () => gateway.adoptSocket(1_000_000, request),
  'adoptSocket: fd of a file': () => gateway.adoptSocket(file, request),
  'adoptSocket: fd of a listening socket, bad request': () => gateway.adoptSocket(unix._handle.fd, {}),
  'adoptSocket: request null': () => gateway.adoptSocket(0, null),
  'adoptRelayed: request a string': () => gateway.adoptRelayed('GET /'),
  'adoptRelayed: request without head': () => gateway.adoptRelayed({ ...request, head: undefined }),
  'adoptRelayed: unreadable request': () => gateway.adoptRelayed({ ...request, method: '' }),
  'sendCall: call a string': () => sendCall(gateway.handle, '1', 'message', 'k', '+1234567890', 'x'),
  'sendCall: unknown kind': () => sendCall(gateway.handle, 1, 'sticker', 'k', '+1234567890', 'x'),
  'sendCall: a kind with more after it': () => sendCall(gateway.handle, 1, 'message-and-then-some', 'k', '+1234567890', 'x'),
  'sendCall: a kind with a NUL after it': () => sendCall(gateway.handle, 1, 'message' + String.fromCharCode(0), 'k', '+1234567890', 'x'),
  'sendCall: kind a number': () => sendCall(gateway.handle, 1, 7, 'k', '+1234567890', 'x'),
  'sendCall: apiKey a number': () => sendCall(gateway.handle, 1, 'message', 7, '+1234567890', 'x'),
  'sendCall: options a number': () => sendCall(gateway.handle, 1, 'message', 'k', '+1234567890', 'x', 5),
  'sendCall: options with a bad strategy': () => sendCall(gateway.handle, 1, 'message', 'k', '+1234567890', 'x', { strategy: 'fastest' }),
  'sendCall: options with a throwing getter': () => sendCall(gateway.handle, 1, 'image', 'k', '+1234567890', 'x', { get mediaSource() { throw new Error('boom'); } }),
  'sendCall: a media share a string': () => sendCall(gateway.handle, 1, 'image', 'k', '+1234567890', 'x', { mediaSource: 'data:,', mediaShare: 'x' }),
  'releaseMedia: share a string': () => gateway.releaseMedia('9'),
  'validated: token a string': () => gateway.validated('1', true),
  'validated: valid missing': () => gateway.validated(1),
  'validated: reason a number': () => gateway.validated(1, true, null, 5),
  'validationFailed: problem missing': () => gateway.validationFailed(1),
  'sessions: apiKey an object': () => gateway.sessions({}),
  'messageStatus: id a number': () => gateway.messageStatus(5),
  'joinCluster: token a string': () => gateway.joinCluster('x'),
  'clusterSessions: apiKey missing': () => gateway.clusterSessions(1),
  'clusterAllSessions: token missing': () => gateway.clusterAllSessions(),
  'clusterMessageStatus: id a number': () => gateway.clusterMessageStatus(1, 2),
  'keepAlive: a string': () => gateway.keepAlive('yes'),
  'sendCall: no such gateway': () => sendCall(gateway.handle + 1, 1, 'message', 'k', '+1234567890', 'x'),
  'sendCall: handle a string': () => sendCall(String(gateway.handle), 1, 'message', 'k', '+1234567890', 'x'),
  'sendCall: text a number': () => sendCall(gateway.handle, 1, 'message', 'k', '+1234567890', 7),
};
for (const name of ['takeOnce', 'settleOnce']) {
  if (typeof gateway[name] === 'function') cases[name + ': numbers'] = () => gateway[name](1, 2, 3);
}
const results = {};
for (const [name, call] of Object.entries(cases)) {
  try {
    call();
    results[name] = 'returned';
  } catch (error) {
    results[name] = (error instanceof TypeError ? 'TypeError' : error?.constructor?.name) + ' ' + error?.code + ' ' + error?.message;
  }
}
fs.closeSync(file);
unix.close();
console.log(JSON.stringify(results));
`;

test('every NativeGateway method refuses bad arguments with a TypeError; none ends the process', { timeout: 30_000 }, async () => {
  const run = await runScript(SCRIPT);
  assert.equal(run.killed, false, 'the child ran to its end');
  assert.equal(run.signal, null, `the child was not aborted: ${run.stderr}`);
  assert.equal(run.code, 0, run.stderr);
  const results = JSON.parse(run.stdout.trim().split('\n').pop());
  const wrong = Object.entries(results).filter(([, outcome]) => !outcome.startsWith('TypeError ERR_INVALID_ARG_TYPE NativeGateway: '));
  assert.deepEqual(wrong, [], 'each is a TypeError with code ERR_INVALID_ARG_TYPE');
  assert.match(results['adoptSocket: fd -1'], /non-negative/);
  assert.match(results['constructor: port out of range'], /config\.port/);
  assert.match(results['constructor: a duration that is NaN'], /config\.requestTimeout/);
  assert.match(results['sendCall: options with a throwing getter'], /boom/);
});

test('a NativeGateway refused in a worker thread leaves nothing in its loop: the worker ends cleanly', { timeout: 30_000 }, async () => {
  const run = await runScript(`
    const { Worker } = require('node:worker_threads');
    const worker = new Worker(\`
      const { NativeGateway } = require('./gateway.node');
      const { normalizeConfig } = require('./lib/options');
      const { native: config } = normalizeConfig({ validateApiKey: () => ({ valid: false }) });
      let refused = 0;
      for (let i = 0; i < 200; i++) {
        for (const [c, d] of [[config, 42], [{ ...config, port: -1 }, () => {}], [{ ...config, maxPayload: NaN }, () => {}]]) {
          try { new NativeGateway(c, d); } catch (e) { if (e instanceof TypeError) refused++; }
        }
      }
      // One that works, left to be collected with the worker.
      new NativeGateway(config, () => {});
      require('node:worker_threads').parentPort.postMessage(refused);
    \`, { eval: true });
    worker.on('message', (n) => console.log('refused', n));
    worker.on('exit', (code) => console.log('worker exit', code));
  `);
  assert.equal(run.signal, null, run.stderr);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /refused 600/);
  assert.match(run.stdout, /worker exit 0/);
});
