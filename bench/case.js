'use strict';
// One benchmark case in a fresh process: starts a gateway (ours, v1 from --baseline,
// or the uWebSockets.js peer), loads it with the Rust fleet, measures, and writes one JSON result
// to file descriptor 3. Run by bench/run.js; see there for the cases.
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const spec = JSON.parse(process.argv[2]);
const KEY = 'bench-key-000001';
const PHONE = '+1234567890';

function loadGateway() {
  if (spec.impl === 'v1') return require(path.join(spec.baseline, 'src/index.js')).WhatsAppGateway;
  if (spec.impl === 'peer') return require(path.join(spec.peer, 'index.js')).WhatsAppGateway;
  // spec.oursRoot: another build of ours (bench/ab.js compares builds side by side).
  return require(spec.oursRoot ?? '..').WhatsAppGateway;
}

function gc() {
  if (global.gc) for (let i = 0; i < 3; i++) global.gc();
}

function procStatus(field) {
  const match = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return match ? Number(match[1]) * 1024 : 0;
}

/** Context switches so far (voluntary and not) of thread `tid` of process `pid`. */
function switchesOf(pid, tid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const count = (field) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+)`, 'm'))?.[1] ?? 0);
    return count('voluntary_ctxt_switches') + count('nonvoluntary_ctxt_switches');
  } catch {
    return 0; // the thread ended meanwhile
  }
}

/** Context switches so far of every thread of process `pid` (the fleet's). */
function processSwitches(pid) {
  let switches = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) switches += switchesOf(pid, tid);
  return switches;
}

/**
 * CPU ms so far by thread: the JavaScript thread (the process's first), the gateway
 * runtime's workers ('wa-gateway'), and the rest (V8's GC and compiler helpers, libuv);
 * and their context switches (each a sleep and a wake-up, or a preemption), which
 * on a shared core cost the other threads too.
 */
function threadCpuMs() {
  const split = { js: 0, runtime: 0, other: 0, jsSwitches: 0, runtimeSwitches: 0, otherSwitches: 0 };
  const tick = 1000 / 100; // USER_HZ
  for (const tid of fs.readdirSync('/proc/self/task')) {
    let stat;
    try {
      stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ms = (Number(fields[11]) + Number(fields[12])) * tick;
    const switches = switchesOf('self', tid);
    const part = Number(tid) === process.pid ? 'js' : name.startsWith('wa-gateway') ? 'runtime' : 'other';
    split[part] += ms;
    split[`${part}Switches`] += switches;
  }
  return split;
}

function cpuMs() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(predicate, ms, what) {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** v1's start() resolves before it listens. */
async function waitListening(port) {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s.end() && true));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(5);
  }
  throw new Error('gateway never listened');
}

/** The fleet process and its line protocol (see bench/fleet/src/fleet.rs). */
function startFleet(port, devices, idle) {
  const args = ['--url', `ws://127.0.0.1:${port}/wa-ext-ws`, '--key', KEY, '--devices', `${devices}`, '--idle', `${idle}`];
  const child = spawn(spec.fleet, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (line) => {
    const space = line.indexOf(' ');
    const next = waiting.shift();
    if (next) next([line.slice(0, space), JSON.parse(line.slice(space + 1))]);
  });
  const nextLine = () => new Promise((resolve) => waiting.push(resolve));
  return {
    pid: child.pid,
    ready: nextLine(),
    async command(cmd) {
      const reply = nextLine();
      child.stdin.write(`${cmd}\n`);
      return (await reply)[1];
    },
    /** The fleet's CPU time so far, ms. */
    async cpu() {
      const { cpuUserMs, cpuSysMs } = await this.command('cpu');
      return cpuUserMs + cpuSysMs;
    },
    async stats() {
      const reply = nextLine();
      child.stdin.end('exit\n');
      const [, stats] = await reply;
      return stats;
    },
  };
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : 0;
}

async function roundTrips(gateway, fleet) {
  const { concurrency, seconds } = spec;
  const latencies = [];
  let failures = 0;
  // With spec.idempotency every call carries a fresh key: the cost of the key store.
  let nextKey = 0;
  const data = () =>
    spec.idempotency
      ? { phoneNumber: PHONE, message: 'benchmark message', idempotencyKey: `k${nextKey++}` }
      : { phoneNumber: PHONE, message: 'benchmark message' };
  const run = async (until, record) => {
    const worker = async () => {
      while (Date.now() < until) {
        const t = process.hrtime.bigint();
        try {
          await gateway.sendMessage(KEY, data());
          if (record) latencies.push(Number(process.hrtime.bigint() - t) / 1000);
        } catch {
          failures++;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  await run(Date.now() + 300, false);
  gc();
  const fleetCpu0 = await fleet.cpu();
  const cpu0 = cpuMs();
  const threads0 = threadCpuMs();
  const fleetSwitches0 = processSwitches(fleet.pid);
  const t0 = process.hrtime.bigint();
  await run(Date.now() + seconds * 1000, true);
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuMs() - cpu0;
  const threads1 = threadCpuMs();
  const fleetSwitches = processSwitches(fleet.pid) - fleetSwitches0;
  const perCall = (ms) => (ms * 1000) / latencies.length;
  const fleetCpu = (await fleet.cpu()) - fleetCpu0;
  latencies.sort((a, b) => a - b);
  return {
    calls: latencies.length,
    failures,
    callsPerSec: latencies.length / wallS,
    p50Us: percentile(latencies, 0.5),
    p99Us: percentile(latencies, 0.99),
    cpuUsPerCall: (cpu * 1000) / latencies.length,
    fleetCpuUsPerCall: (fleetCpu * 1000) / latencies.length,
    // Where the gateway's CPU went (10 ms ticks): what runs off the JavaScript thread
    // can use other cores.
    jsThreadCpuUsPerCall: perCall(threads1.js - threads0.js),
    runtimeCpuUsPerCall: perCall(threads1.runtime - threads0.runtime),
    otherThreadsCpuUsPerCall: perCall(threads1.other - threads0.other),
    // Context switches per call, by thread (the same split) and of the fleet.
    jsSwitchesPerCall: (threads1.jsSwitches - threads0.jsSwitches) / latencies.length,
    runtimeSwitchesPerCall: (threads1.runtimeSwitches - threads0.runtimeSwitches) / latencies.length,
    otherSwitchesPerCall: (threads1.otherSwitches - threads0.otherSwitches) / latencies.length,
    fleetSwitchesPerCall: fleetSwitches / latencies.length,
  };
}

async function media(gateway) {
  const imageBytes = spec.imageBytes;
  // One image sent to every recipient, or (spec.distinct) one per sender.
  const images = Array.from({ length: spec.distinct ? spec.concurrency : 1 }, () =>
    `data:image/png;base64,${crypto.randomBytes(imageBytes).toString('base64')}`,
  );
  // Before any media went through: freed memory the allocator keeps from the warm-up
  // sends below can hide what the sends in flight hold (peakRssGrowthMB).
  gc();
  fs.writeFileSync('/proc/self/clear_refs', '5');
  const cold = procStatus('VmRSS');
  for (const image of images) await gateway.sendImage(KEY, { phoneNumber: PHONE, imageDataUrl: image });
  gc();
  fs.writeFileSync('/proc/self/clear_refs', '5');
  const baseline = procStatus('VmRSS');
  const sends = 50;
  let next = 0;
  let failures = 0;
  const t0 = process.hrtime.bigint();
  const worker = async (_, i) => {
    const image = images[i % images.length];
    while (next < sends) {
      next++;
      await gateway.sendImage(KEY, { phoneNumber: PHONE, imageDataUrl: image }).catch(() => failures++);
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  return {
    sends,
    failures,
    mbPerSec: (sends * imageBytes) / wallS / 1e6,
    peakRssGrowthMB: (procStatus('VmHWM') - baseline) / 1e6,
    // The same peak over the RSS before the warm-up: what the allocator kept of it counts.
    peakRssOverColdMB: (Math.max(procStatus('VmHWM'), baseline) - cold) / 1e6,
  };
}

/**
 * Delivery (README): `spec.queued` sends to one paced device whose interval is a minute, so
 * all but the first wait in its queue: what each waiting send costs, then stop().
 */
async function queued(gateway) {
  gc();
  const before = { rss: procStatus('VmRSS'), heap: process.memoryUsage().heapUsed };
  const t0 = process.hrtime.bigint();
  const sends = [];
  for (let i = 0; i < spec.queued; i++) {
    sends.push(gateway.sendMessage(KEY, { phoneNumber: PHONE, message: `queued message ${i}` }).catch((e) => e.code));
  }
  const enqueueMs = Number(process.hrtime.bigint() - t0) / 1e6;
  await sleep(200);
  gc();
  const after = { rss: procStatus('VmRSS'), heap: process.memoryUsage().heapUsed };
  const queuedNow = sends.length - 1;
  const t1 = Date.now();
  await gateway.stop();
  const codes = await Promise.all(sends);
  return {
    queued: queuedNow,
    // The first left at once and was answered; every other one was still queued.
    failures: codes.slice(1).filter((c) => c !== 'GATEWAY_SHUTDOWN').length,
    rssPerQueuedSendB: (after.rss - before.rss) / queuedNow,
    heapPerQueuedSendB: (after.heap - before.heap) / queuedNow,
    enqueueUsPerSend: (enqueueMs * 1000) / spec.queued,
    stopMs: Date.now() - t1,
  };
}

async function idle(gateway, port) {
  const before = { rss: procStatus('VmRSS'), heap: process.memoryUsage().heapUsed };
  const fleet = startFleet(port, 0, spec.idle);
  const [, ready] = await fleet.ready;
  await waitFor(() => gateway.getHealth().activeSessions >= ready.sessions, 60_000, 'sessions');
  gc();
  await sleep(200);
  gc();
  const sessions = ready.sessions;
  const after = { rss: procStatus('VmRSS'), heap: process.memoryUsage().heapUsed };
  const cpu0 = cpuMs();
  await sleep(spec.idleSeconds * 1000);
  const idleCpuMsPerSec = (cpuMs() - cpu0) / spec.idleSeconds;
  const rssAfterIdle = procStatus('VmRSS');
  const t0 = Date.now();
  await fleet.command('close');
  await waitFor(() => gateway.getHealth().activeSessions === 0, 60_000, 'teardown');
  const teardownMs = Date.now() - t0;
  const stats = await fleet.stats();
  return {
    sessions,
    failures: spec.idle - sessions,
    rssPerSessionKB: (after.rss - before.rss) / sessions / 1024,
    rssPerSessionAfterIdleKB: (rssAfterIdle - before.rss) / sessions / 1024,
    heapPerSessionKB: (after.heap - before.heap) / sessions / 1024,
    connectPerSec: sessions / (ready.connectMs / 1000),
    idleCpuMsPerSec,
    teardownMs,
    fleetCpuMs: stats.cpuUserMs + stats.cpuSysMs,
  };
}

async function main() {
  const Gateway = loadGateway();
  const config = {
    port: spec.port,
    heartbeatInterval: spec.heartbeatInterval ?? 30000,
    requestTimeout: 30000,
    maxSessionsPerKey: 64,
    validateApiKey: async () => ({ valid: true, userId: 'bench' }),
    onMessageLog: process.env.NO_LOG ? undefined : () => {},
    onError: () => {},
  };
  if (spec.impl === 'ours') {
    config.host = '127.0.0.1';
    if (spec.dialect) config.dialect = spec.dialect;
    config.maxPayload = 16 << 20;
    // maxQueuedBytes stays at its default: eight 4 MiB images in the compat dialect (two
    // copies each) pass it, and wait for room rather than fail.
    Object.assign(config, spec.options);
    // Durable mode: a fresh store file, removed when the case ends.
    if (spec.store) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-bench-store-'));
      config.store = path.join(dir, 'bench.db');
      process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    }
  }
  const gateway = new Gateway(config);
  await gateway.start();
  await waitListening(spec.port);

  let result;
  if (spec.scenario === 'idle') {
    result = await idle(gateway, spec.port);
  } else {
    const fleet = startFleet(spec.port, spec.devices, spec.idle ?? 0);
    await fleet.ready;
    await waitFor(() => gateway.getActiveSessions(KEY).filter((s) => s.deviceActive).length >= spec.devices, 60_000, 'devices');
    if (spec.scenario === 'queued') {
      result = await queued(gateway);
      await fleet.stats();
      fs.writeSync(3, `${JSON.stringify(result)}\n`);
      process.exit(0);
    }
    result = spec.scenario === 'media' ? await media(gateway) : await roundTrips(gateway, fleet);
    await fleet.stats();
  }
  fs.writeSync(3, `${JSON.stringify(result)}\n`);
  await gateway.stop();
  process.exit(0);
}

main().catch((error) => {
  fs.writeSync(3, `${JSON.stringify({ error: error.message })}\n`);
  process.exit(1);
});
