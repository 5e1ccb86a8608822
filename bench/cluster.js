'use strict';
// The cluster cases: a send called on the process that holds the device
// (local) against one called on another process, routed through Redis to the holder
// and back (remote), with 1 to 4 gateway processes sharing a throwaway redis-server.
//
//   node bench/cluster.js [--runs 3] [--quick] [--only REGEX] [--out DIR]
//
// The parent starts redis-server on a free loopback port (no persistence), N gateway
// processes (this file again, first argument `node`, driven over IPC) and the Rust
// fleet, whose devices connect to process 0 only. Sends are called and timed inside
// the gateway processes; each reports its own CPU time and Redis reports its command
// counts. bench/run.js runs these cases after its own when redis-server is installed.
const { execFileSync, fork, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
// The cluster tests' throwaway Redis (REDIS_SERVER_PATH or redis-server on PATH).
const { startRedis, redisVersion } = require('../__test__/redis');
const { fmt, summary } = require('./stats');

const root = path.resolve(__dirname, '..');
const KEY = 'bench-key-000001';
const PHONE = '+1234567890';
const DEVICES = 1;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// A gateway process (child): our gateway in cluster mode, answering the parent.

async function gatewayNode(settings) {
  const { WhatsAppGateway } = require('..');
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    heartbeatInterval: 30000,
    requestTimeout: 30000,
    maxSessionsPerKey: 64,
    validateApiKey: async () => ({ valid: true, userId: 'bench' }),
    onMessageLog: () => {},
    onError: (error) => process.send({ id: -1, ok: false, error: `onError: ${error.code ?? ''} ${error.message}` }),
    ...(settings.redis ? { cluster: { redis: settings.redis, nodeId: settings.nodeId } } : {}),
  });
  const ops = {
    devices: async () => (await gateway.getActiveSessions(KEY)).filter((s) => s.deviceActive).length,
    cpuUs: () => {
      const { user, system } = process.cpuUsage();
      return user + system;
    },
    sends: (args) => sends(gateway, args),
    stop: () => gateway.stop(),
  };
  process.on('message', async ({ id, op, args }) => {
    try {
      process.send({ id, ok: true, value: await ops[op](args) });
    } catch (error) {
      process.send({ id, ok: false, error: `${error.code ?? ''} ${error.message}` });
    }
  });
  // The parent gone (or done with us): nothing else would end this process.
  process.on('disconnect', () => process.exit(0));
  try {
    await gateway.start();
    process.send({ id: 0, ok: true, value: gateway.address().port });
  } catch (error) {
    process.send({ id: 0, ok: false, error: `${error.code ?? ''} ${error.message}` });
    process.exit(1);
  }
}

/** `concurrency` loops of sendMessage for `ms` (at most `maxCalls` calls started). */
async function sends(gateway, { concurrency, ms, maxCalls, record }) {
  const latencies = [];
  let started = 0;
  let failures = 0;
  let firstError;
  const until = Date.now() + ms;
  const worker = async () => {
    while (Date.now() < until && started < maxCalls) {
      started++;
      const t = process.hrtime.bigint();
      try {
        await gateway.sendMessage(KEY, { phoneNumber: PHONE, message: 'benchmark message' });
        if (record) latencies.push(Number(process.hrtime.bigint() - t) / 1000);
      } catch (error) {
        failures++;
        firstError ??= `${error.code ?? ''} ${error.message}`;
      }
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  return { calls: started - failures, failures, firstError, wallS, latencies: Float64Array.from(latencies) };
}

// ---------------------------------------------------------------------------
// The parent: Redis, gateway processes, fleet.

/** Every child process still running, killed if the parent leaves early. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function track(child) {
  running.add(child);
  child.on('exit', () => running.delete(child));
  return child;
}

function stopChild(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

/** Redis's CPU time so far and its command counts. */
async function redisStats(redis) {
  const cpu = await redis.info('cpu');
  const seconds = (field) => Number(cpu[field] ?? 0);
  return { cpuUs: (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6, commands: await redis.commandCounts() };
}

/** Gateway process `n<index>`, once it has started; `ask` runs one of its ops. */
function startNode(index, redisUrl) {
  const nodeId = `n${index}`;
  const child = track(
    fork(__filename, ['node', JSON.stringify({ redis: redisUrl, nodeId })], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  const waiting = new Map();
  let nextId = 0;
  const errors = [];
  const settle = (id, ok, value) => {
    const entry = waiting.get(id);
    if (!entry) return;
    waiting.delete(id);
    clearTimeout(entry.timer);
    if (ok) entry.resolve(value);
    else entry.reject(new Error(`${nodeId}: ${value}`));
  };
  const expect = (id, ms, what) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => settle(id, false, `no answer to ${what} within ${ms} ms`), ms);
      waiting.set(id, { resolve, reject, timer });
    });
  child.on('message', ({ id, ok, value, error }) => {
    if (id === -1) errors.push(error);
    else settle(id, ok, ok ? value : error);
  });
  child.on('exit', (code, signal) => {
    for (const id of [...waiting.keys()]) settle(id, false, `exited (${signal ?? code})`);
  });
  const started = expect(0, 30_000, 'start');
  const node = {
    nodeId,
    errors,
    port: null,
    ask(op, args, ms = 30_000) {
      if (!child.connected) return Promise.reject(new Error(`${nodeId}: gone before ${op}`));
      const id = ++nextId;
      const answer = expect(id, ms, op);
      child.send({ id, op, args });
      return answer;
    },
    async stop() {
      if (child.connected) await node.ask('stop').catch(() => {});
      if (child.connected) child.disconnect();
      await stopChild(child);
    },
  };
  return started.then((port) => Object.assign(node, { port }));
}

/** The Rust fleet (see bench/fleet/src/fleet.rs): `devices` extensions on one gateway. */
async function startFleet(bin, port, devices) {
  const args = ['--url', `ws://127.0.0.1:${port}/wa-ext-ws`, '--key', KEY, '--devices', `${devices}`];
  const child = track(spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] }));
  const lines = readline.createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (line) => waiting.shift()?.(JSON.parse(line.slice(line.indexOf(' ') + 1))));
  const nextLine = () => new Promise((resolve) => waiting.push(resolve));
  let timer;
  const exited = new Promise((resolve) => child.once('exit', () => resolve(null)));
  const late = new Promise((resolve) => (timer = setTimeout(resolve, 30_000, null)));
  const ready = await Promise.race([nextLine(), exited, late]).finally(() => clearTimeout(timer));
  if (!ready || ready.sessions < devices) throw new Error(`fleet: ${ready?.sessions ?? 0} of ${devices} devices connected`);
  return {
    async stop() {
      if (child.exitCode === null) child.stdin.end('exit\n');
      await stopChild(child, 'SIGTERM');
    },
  };
}

async function waitFor(check, ms, what) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `total` in-flight calls split as evenly as they go over `parts` callers. */
function split(total, parts) {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

/** CPU of every gateway process and of Redis, and Redis's command counts, now. */
async function snapshot(nodes, server) {
  const [cpus, redis] = await Promise.all([Promise.all(nodes.map((n) => n.ask('cpuUs'))), redisStats(server)]);
  return { gatewayCpuUs: cpus.reduce((a, b) => a + b, 0), redis };
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : 0;
}

/** Sends called on `callers` (C split over them), timed; the cluster's cost per call. */
async function measure(nodes, callers, redis, { concurrency, seconds, maxCalls }) {
  const shares = split(concurrency, callers.length);
  const active = callers.map((node, i) => [node, shares[i]]).filter(([, share]) => share > 0);
  const round = (ms, record) =>
    Promise.all(active.map(([node, share]) => node.ask('sends', { concurrency: share, ms, maxCalls, record }, ms + 60_000)));
  const warmUp = await round(300, false);
  const before = await snapshot(nodes, redis);
  const outcomes = await round(seconds * 1000, true);
  const after = await snapshot(nodes, redis);

  const calls = outcomes.reduce((sum, o) => sum + o.calls, 0);
  const failures = [...warmUp, ...outcomes].reduce((sum, o) => sum + o.failures, 0);
  const firstError = [...warmUp, ...outcomes].find((o) => o.firstError)?.firstError;
  const latencies = new Float64Array(outcomes.reduce((sum, o) => sum + o.latencies.length, 0));
  let at = 0;
  for (const o of outcomes) {
    latencies.set(o.latencies, at);
    at += o.latencies.length;
  }
  latencies.sort();
  // The INFO asking for the counts is ours, not the gateway's.
  const redisCommands = {};
  let redisCommandCount = 0;
  for (const [name, count] of Object.entries(after.redis.commands)) {
    const delta = count - (before.redis.commands[name] ?? 0);
    if (name === 'info' || delta <= 0) continue;
    redisCommands[name] = delta / calls;
    redisCommandCount += delta;
  }
  if (!calls) return { calls, failures, firstError };
  return {
    calls,
    failures,
    ...(firstError ? { firstError } : {}),
    callsPerSec: outcomes.reduce((sum, o) => sum + o.calls / o.wallS, 0),
    p50Us: percentile(latencies, 0.5),
    p99Us: percentile(latencies, 0.99),
    cpuUsPerCall: (after.gatewayCpuUs - before.gatewayCpuUs) / calls,
    redisCpuUsPerCall: (after.redis.cpuUs - before.redis.cpuUs) / calls,
    redisCommandsPerSend: redisCommandCount / calls,
    redisCommands,
  };
}

/**
 * The cases: one per (processes, concurrency); C is the total in flight. N=0 is one
 * process without `cluster`: what the same sends cost before cluster mode.
 */
function clusterCases({ quick, only }) {
  const seconds = quick ? 0.5 : 3;
  const maxCalls = quick ? 20_000 : 500_000;
  const shapes = quick
    ? [[2, 4]]
    : [
        [0, 1],
        [0, 64],
        [1, 1],
        [1, 64],
        [2, 1],
        [2, 64],
        [3, 64],
        [4, 64],
      ];
  return shapes
    .map(([nodes, concurrency]) => {
      const name = nodes ? `cluster N=${nodes} C=${concurrency}` : `no cluster C=${concurrency}`;
      return { name, nodes, concurrency, seconds, maxCalls };
    })
    .filter(({ name }) => !only || only.test(name));
}

/**
 * One run of every case with `nodeCount` processes (0: one without `cluster`, Redis
 * running unused): one Redis, one set of processes.
 */
async function runGroup(nodeCount, group, { fleetBin, log }) {
  const redis = await startRedis();
  track(redis.child);
  const nodes = [];
  let fleet;
  const results = [];
  try {
    const started = Array.from({ length: Math.max(1, nodeCount) }, (_, i) => startNode(i, nodeCount ? redis.url : null));
    // Every process that did start is stopped below, also when another one did not.
    const outcomes = await Promise.allSettled(started);
    nodes.push(...outcomes.filter((o) => o.status === 'fulfilled').map((o) => o.value));
    const failed = outcomes.find((o) => o.status === 'rejected');
    if (failed) throw failed.reason;
    fleet = await startFleet(fleetBin, nodes[0].port, DEVICES);
    for (const node of nodes) await waitFor(async () => (await node.ask('devices')) >= DEVICES, 30_000, `${node.nodeId} to see the devices`);
    for (const spec of group) {
      const local = await measure(nodes, [nodes[0]], redis, spec);
      const remote = nodeCount > 1 ? await measure(nodes, nodes.slice(1), redis, spec) : undefined;
      results.push({ spec, local, remote });
    }
    const errors = nodes.flatMap((n) => n.errors.map((e) => `${n.nodeId}: ${e}`));
    if (errors.length) log(`gateway errors (onError): ${errors.slice(0, 5).join('; ')}`);
  } finally {
    await fleet?.stop();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.dispose();
  }
  return results;
}

/** Which commands a send costs, per send, averaged over the runs, most first. */
function commandMix(results) {
  const done = results.filter((r) => r?.redisCommands);
  if (!done.length) return { text: '–' };
  const sums = {};
  for (const r of done) for (const [name, n] of Object.entries(r.redisCommands)) sums[name] = (sums[name] ?? 0) + n / done.length;
  const mix = Object.entries(sums)
    .filter(([, n]) => n >= 0.005)
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name} ${n.toFixed(2)}`);
  return { text: mix.length ? mix.join(', ') : 'none' };
}

const METRICS = ['callsPerSec', 'p50Us', 'p99Us', 'cpuUsPerCall', 'redisCpuUsPerCall', 'redisCommandsPerSend', 'redisCommands'];
/** A local send uses Redis hardly at all: a ratio to almost nothing says nothing. */
const COMPARED = new Set(['callsPerSec', 'p50Us', 'p99Us', 'cpuUsPerCall']);

function tableLines(cases, results, runs) {
  const lines = [
    `Cluster mode, ${runs} run(s), median [min–max]: N gateway processes and one redis-server ` +
      `(${DEVICES} device, connected to process 0). local: sends called on process 0; remote: called on ` +
      'processes 1..N-1 (C in flight in all, split evenly), routed through Redis to process 0 and back; ' +
      '"no cluster": one process without the `cluster` option. cpuUsPerCall: all gateway processes together; ' +
      'redisCommands: per send.',
    '',
    '| case | metric | local | remote | remote/local |',
    '|---|---|---|---|---|',
  ];
  for (const spec of cases) {
    const of = (side) => (results.get(spec.name) ?? []).map((r) => r[side] ?? (r.error ? { error: r.error } : undefined));
    for (const metric of METRICS) {
      const [local, remote] = ['local', 'remote'].map((side) => {
        const rs = of(side);
        if (metric === 'redisCommands') return commandMix(rs);
        return summary(
          rs.map((r) => r?.[metric]),
          rs.some((r) => r?.error),
        );
      });
      const ratio = COMPARED.has(metric) && local.median && remote.median !== undefined ? fmt(remote.median / local.median) : '–';
      lines.push(`| ${spec.name} | ${metric} | ${local.text} | ${remote.text} | ${ratio} |`);
    }
  }
  return lines;
}

/**
 * Runs the cluster cases `runs` times; returns the table's lines and how many cases
 * failed (did not finish, or had a failed send). `record` gets every raw result.
 */
async function runClusterCases({ runs, quick, only, fleet, log, record = () => {} }) {
  const cases = clusterCases({ quick, only });
  const results = new Map();
  let failures = 0;
  const byNodes = new Map();
  for (const spec of cases) byNodes.set(spec.nodes, [...(byNodes.get(spec.nodes) ?? []), spec]);
  for (let run = 1; run <= runs; run++) {
    for (const [nodeCount, group] of byNodes) {
      let outcomes;
      try {
        outcomes = await runGroup(nodeCount, group, { fleetBin: fleet, log });
      } catch (error) {
        outcomes = group.map((spec) => ({ spec, error: error.message }));
      }
      for (const { spec, local, remote, error } of outcomes) {
        const result = error ? { error } : { local, remote };
        record({ name: spec.name, run, ...spec, result });
        const failed = error || local.failures || remote?.failures;
        if (failed) failures++;
        const brief = (side) => (side ? `${fmt(side.callsPerSec)} calls/s, ${side.failures} failed${side.firstError ? ` (${side.firstError})` : ''}` : '–');
        log(`run ${run}/${runs}  ${spec.name}: ${error ?? `local ${brief(local)}; remote ${brief(remote)}`}`);
        results.set(spec.name, [...(results.get(spec.name) ?? []), result]);
      }
    }
  }
  return { lines: cases.length ? tableLines(cases, results, runs) : [], failures };
}

// ---------------------------------------------------------------------------
// `npm run bench:cluster`: these cases alone.

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : process.argv[at + 1];
}

function log(message) {
  process.stderr.write(`${message}\n`);
}

function buildFleet() {
  log('building the Rust fleet (release)...');
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  execFileSync('cargo', ['build', '--release', '--locked', '-p', 'gateway-bench', '--bin', 'fleet'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  });
  return path.join(targetDir, 'release', 'fleet');
}

async function standalone() {
  const quick = process.argv.includes('--quick');
  const runs = Number(option('--runs', quick ? 1 : 3));
  const only = option('--only') ? new RegExp(option('--only')) : null;
  const outDir = path.resolve(option('--out', path.join(root, 'bench/results')));
  const versionLine = redisVersion();
  if (!versionLine) throw new Error('redis-server not found (install it, or set REDIS_SERVER_PATH)');
  const fleet = buildFleet();
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const rawPath = path.join(outDir, `cluster-${stamp}.jsonl`);
  const record = (entry) => fs.appendFileSync(rawPath, `${JSON.stringify(entry)}\n`);
  const { lines, failures } = await runClusterCases({ runs, quick, only, fleet, log, record });
  const version = versionLine.match(/v=(\S+)/)?.[1] ?? '?';
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}, Redis ${version}`;
  const table = [`Machine: ${machine}. Command: \`npm run bench:cluster -- ${process.argv.slice(2).join(' ')}\`.`, '', ...lines].join('\n');
  const mdPath = path.join(outDir, `cluster-${stamp}.md`);
  fs.writeFileSync(mdPath, `${table}\n`);
  console.log(table);
  log(`\nraw results: ${rawPath}\ntable: ${mdPath}`);
  if (failures) {
    log(`${failures} cluster case(s) failed or had failed sends`);
    process.exit(1);
  }
}

if (require.main === module) {
  const role = process.argv[2] === 'node' ? gatewayNode(JSON.parse(process.argv[3])) : standalone();
  role.catch((error) => {
    log(error.stack);
    process.exit(1);
  });
}

module.exports = { redisVersion, runClusterCases };
