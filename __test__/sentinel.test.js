'use strict';
// Redis Sentinel as deployed (README "Deploying"): Debian's redis-server as a master and
// a replica, and Debian's redis-sentinel watching them, all on loopback. Two gateway
// processes find the master through Sentinel; the master is killed; once Sentinel has
// promoted the replica, sends through Redis work again within seconds.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { FakeExtension, GOOD_KEY, eventually } = require('./helpers');

/** Polled every 100 ms: each try of a send is a round trip through a failing-over Redis. */
const waitUntil = (check, ms, what) => eventually(check, ms, what, 100);
const { startRedis, redisSkipReason, command, sleep } = require('./redis');
const { freePort } = require('./free-port');
const { startNodeProcess } = require('./cluster-node');
const { toolSkip } = require('./tools');

const skip = redisSkipReason() || toolSkip('redis-sentinel', 'apt-get install redis-sentinel');

/** Starts redis-sentinel watching `master` as 'mymaster'; killed after test `t`. */
async function startSentinel(t, masterPort) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'wa-gw-sentinel-'));
  const config = path.join(dir, 'sentinel.conf');
  fs.writeFileSync(
    config,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      'daemonize no',
      'logfile ""',
      `sentinel monitor mymaster 127.0.0.1 ${masterPort} 1`,
      'sentinel down-after-milliseconds mymaster 1000',
      'sentinel failover-timeout mymaster 5000',
      'sentinel parallel-syncs mymaster 1',
      '',
    ].join('\n'),
  );
  const child = spawn('redis-sentinel', [config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (c) => (log = (log + c).slice(-4000)));
  child.stderr.on('data', (c) => (log = (log + c).slice(-4000)));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.after(async () => {
    child.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const until = Date.now() + 5000;
  for (;;) {
    try {
      if ((await command(port, ['PING'], 500)) === 'PONG') break;
    } catch {
      // Not up yet.
    }
    if (Date.now() > until) throw new Error(`redis-sentinel did not start: ${log}`);
    await sleep(50);
  }
  return { port, log: () => log, master: () => command(port, ['SENTINEL', 'get-master-addr-by-name', 'mymaster']) };
}

test('Sentinel: the master is found through Sentinel, and after the master is killed sends through Redis work again within seconds of the promotion', { timeout: 90_000, skip }, async (t) => {
  const master = await startRedis(t);
  const replica = await startRedis(t, { args: ['--replicaof', '127.0.0.1', String(master.port)] });
  await waitUntil(async () => (await replica.info('replication')).master_link_status === 'up', 10_000, 'the replica to sync');
  const sentinel = await startSentinel(t, master.port);
  await waitUntil(async () => {
    const replicas = await command(sentinel.port, ['SENTINEL', 'replicas', 'mymaster']);
    return replicas.length === 1;
  }, 15_000, 'Sentinel to see the replica');

  const cluster = { redis: { sentinels: [`127.0.0.1:${sentinel.port}`], name: 'mymaster' }, leaseMs: 1000 };
  const holder = await startNodeProcess(t, { cluster });
  const caller = await startNodeProcess(t, { cluster });
  const extension = new FakeExtension(`ws://127.0.0.1:${holder.port}/wa-ext-ws`, { apiKey: GOOD_KEY });
  t.after(() => extension.ws?.terminate());
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  const data = (n) => ({ phoneNumber: '+15550001111', message: `through Redis ${n}` });
  const first = await waitUntil(() => caller.send('message', GOOD_KEY, data(0)).catch(() => null), 10_000, 'a first send through Redis');
  assert.equal(first.success, true);
  assert.deepEqual(await sentinel.master(), ['127.0.0.1', String(master.port)]);

  await master.kill();
  const killedAt = Date.now();
  await waitUntil(async () => {
    const [, port] = await sentinel.master();
    return port === String(replica.port);
  }, 30_000, 'Sentinel to promote the replica');
  const promotedAt = Date.now();

  // Every send settles; the first ones may fail while the processes find the new master.
  let n = 0;
  const working = await waitUntil(async () => {
    n += 1;
    const result = await caller.send('message', GOOD_KEY, data(n)).catch((error) => ({ error }));
    return result.success ? result : null;
  }, 15_000, 'a send through Redis after the promotion');
  const recoveredAt = Date.now();
  assert.equal(working.success, true);
  assert.ok(recoveredAt - promotedAt < 10_000, `sends worked again ${recoveredAt - promotedAt} ms after the promotion`);
  t.diagnostic(`failover: promoted ${promotedAt - killedAt} ms after the kill, sends through Redis again ${recoveredAt - promotedAt} ms later`);

  for (let i = 0; i < 5; i++) {
    const result = await caller.send('message', GOOD_KEY, data(100 + i));
    assert.equal(result.success, true);
  }
  const health = await caller.request('health');
  assert.equal(health.cluster.redis, 'connected');
  assert.equal(health.cluster.nodes, 2);
});
