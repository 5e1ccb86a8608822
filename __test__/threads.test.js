'use strict';
// The gateway on threads other than the main one, and gateways that are collected:
// deliveries reach JavaScript through a handle on the event loop of the thread that
// made the gateway, which must close cleanly however that thread or object ends.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { runScript } = require('./child-script');
const { FakeExtension, waitFor } = require('./helpers');

const ROOT = path.join(__dirname, '..');

/** A worker running a gateway on loopback: it posts its port, then sends when told. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { WhatsAppGateway } = require(${JSON.stringify(ROOT)});
const gateway = new WhatsAppGateway({
  port: '0',
  host: '127.0.0.1',
  validateApiKey: async (key) => ({ valid: key === 'worker-key-0123456789' }),
});
gateway.start().then(() => parentPort.postMessage({ port: gateway.address().port }));
parentPort.on('message', async (message) => {
  if (message === 'send') {
    const sent = gateway.sendMessage('worker-key-0123456789', { phoneNumber: '+15551234567', message: 'from a worker', waitForDevice: 5000 });
    parentPort.postMessage(await sent.then((r) => ({ messageId: r.messageId }), (e) => ({ messageId: e.code })));
  } else if (message === 'stop') {
    await gateway.stop();
    parentPort.close();
  }
});
`;

function startWorker(t) {
  const worker = new Worker(WORKER_SOURCE, { eval: true });
  t.after(() => worker.terminate());
  const messages = [];
  worker.on('message', (m) => messages.push(m));
  const errors = [];
  worker.on('error', (e) => errors.push(e));
  return { worker, messages, errors };
}

test('a gateway in a worker thread resolves sends there, and terminating the worker mid-session leaves the process serving', async (t) => {
  const { worker, messages, errors } = startWorker(t);
  const { port } = await waitFor(() => messages.find((m) => m.port), 10_000, 'the worker gateway to listen');
  const extension = new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`, { apiKey: 'worker-key-0123456789' });
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  worker.postMessage('send');
  const sent = await waitFor(() => messages.find((m) => m.messageId), 10_000, 'the send in the worker to resolve');
  assert.match(sent.messageId, /^msg-/);

  // Torn down with the gateway running and a session connected.
  assert.equal(await worker.terminate(), 1);
  assert.deepEqual(errors, []);
  await waitFor(() => extension.closed, 5000, 'the worker session to close');

  // A second worker on the same process still works.
  const again = startWorker(t);
  const next = await waitFor(() => again.messages.find((m) => m.port), 10_000, 'a second worker gateway to listen');
  const second = new FakeExtension(`ws://127.0.0.1:${next.port}/wa-ext-ws`, { apiKey: 'worker-key-0123456789' });
  await second.open();
  await second.authenticate();
  second.sendStatus(true);
  again.worker.postMessage('send');
  await waitFor(() => again.messages.find((m) => m.messageId), 10_000, 'the send in the second worker to resolve');
  second.close();
  again.worker.postMessage('stop');
  const [code] = await new Promise((resolve) => again.worker.once('exit', (...a) => resolve(a)));
  assert.equal(code, 0, 'a worker whose gateway stopped ends by itself');
});

test('gateways dropped unused, or after stop(), are collected, and the process still exits by itself', async () => {
  const source = `
    const { WhatsAppGateway } = require('.');
    let collected = 0;
    const registry = new FinalizationRegistry(() => collected++);
    const make = () => new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: async () => ({ valid: true }) });
    (async () => {
      for (let i = 0; i < 20; i++) registry.register(make(), i);
      // In a function of its own: a suspended async function may keep its locals.
      const cycle = async (i) => { const g = make(); await g.start(); await g.stop(); registry.register(g, i); };
      for (let i = 0; i < 5; i++) await cycle(i);
      for (let round = 0; round < 50 && collected < 25; round++) {
        global.gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      const last = make();
      await last.start();
      await last.stop();
      console.log(collected);
    })();
  `;
  const { code, killed, stdout, stderr } = await runScript(source, { flags: ['--expose-gc'], limit: 20_000 });
  assert.equal(killed, false, `the child was killed (hung?): ${stdout}${stderr}`);
  assert.equal(code, 0, stderr);
  assert.equal(stdout.trim(), '25', 'every dropped gateway is collected');
});

/** The scheduling policy of each of the gateway's runtime threads, in a fresh process. */
async function runtimePolicies(env) {
  const source = `
const fs = require('node:fs');
const { WhatsAppGateway } = require('.');
const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: async () => ({ valid: true }) });
gateway.start().then(async () => {
  const policies = [];
  for (const tid of fs.readdirSync('/proc/self/task')) {
    const stat = fs.readFileSync('/proc/self/task/' + tid + '/stat', 'utf8');
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    // Field 41 of proc(5)'s stat, the policy; the split starts at field 3.
    if (name.startsWith('wa-gateway')) policies.push(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]));
  }
  await gateway.stop();
  console.log(JSON.stringify(policies));
});`;
  const { code, killed, stdout, stderr } = await runScript(source, { env, limit: 15_000 });
  assert.equal(killed, false, `the child was killed (hung?): ${stdout}${stderr}`);
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout.trim());
}

test('with WA_GATEWAY_THREADS=0 the runtime has no thread of its own on the main thread (the default below 4 cores), and as many as it says otherwise', { skip: process.platform !== 'linux' }, async () => {
  assert.deepEqual(await runtimePolicies({ WA_GATEWAY_SCHED: '', WA_GATEWAY_THREADS: '0' }), []);
  assert.equal((await runtimePolicies({ WA_GATEWAY_SCHED: '', WA_GATEWAY_THREADS: '2' })).length, 2);
});

test("the runtime's threads are scheduled as usual, or as batch work with WA_GATEWAY_SCHED=batch", { skip: process.platform !== 'linux' }, async () => {
  const SCHED_OTHER = 0;
  const SCHED_BATCH = 3;
  const normal = await runtimePolicies({ WA_GATEWAY_SCHED: '', WA_GATEWAY_THREADS: '1' });
  assert.ok(normal.length >= 1, 'the runtime has a thread');
  assert.deepEqual(normal, normal.map(() => SCHED_OTHER));
  const batch = await runtimePolicies({ WA_GATEWAY_SCHED: 'batch' });
  assert.ok(batch.length >= 1);
  assert.deepEqual(batch, batch.map(() => SCHED_BATCH));
});
