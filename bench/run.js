'use strict';
// `npm run bench`: our gateway against v1, case by case in one run, each case in a
// fresh Node process, repeated, reported as median [min-max] and ours/v1.
//
//   node bench/run.js [--runs 3] [--baseline PATH] [--peer PATH] [--only REGEX] [--quick] [--out DIR]
//
// v1 comes from --baseline or WA_BENCH_V1, the uWebSockets.js peer from --peer or
// WA_BENCH_PEER (bench/anchors.js), each installed once into a temp dir; without
// them, ours runs alone. The load is the Rust fleet in bench/fleet, built
// here. --quick is the CI smoke: ours only, tiny counts, fails unless every send
// succeeded. With redis-server installed, the cluster cases of bench/cluster.js follow
// (their own table, appended).
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../__test__/free-port');
const cluster = require('./cluster');
const { anchorDir, anchorSource } = require('./anchors');
const { fmt, summary } = require('./stats');

const root = path.resolve(__dirname, '..');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : process.argv[at + 1];
}
const quick = process.argv.includes('--quick');
const runs = Number(option('--runs', quick ? 1 : 3));
const only = option('--only') ? new RegExp(option('--only')) : null;
const outDir = path.resolve(option('--out', path.join(root, 'bench/results')));

function log(message) {
  process.stderr.write(`${message}\n`);
}

function buildTools() {
  log('building the Rust fleet and core driver (release)...');
  // A member of the workspace: it shares the addon's target directory and dependencies.
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  execFileSync('cargo', ['build', '--release', '--locked', '-p', 'gateway-bench'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  });
  const bin = path.join(targetDir, 'release');
  return { fleet: path.join(bin, 'fleet'), coreDriver: path.join(bin, 'core-driver') };
}

/**
 * An anchor implementation (v1, or the uWebSockets.js peer) installed into a temp dir
 * with npm ci from its lockfile, reused across runs; null when it is not there.
 */
function prepareAnchor(name, given) {
  const source = given ? path.resolve(given) : anchorSource(name);
  if (quick || !source || !fs.existsSync(path.join(source, 'package.json'))) return null;
  const dir = anchorDir(name, source);
  if (!fs.existsSync(path.join(dir, 'node_modules'))) {
    log(`installing ${name} from ${source} into ${dir}...`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(source, dir, { recursive: true });
    fs.chmodSync(dir, 0o755);
    execFileSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return dir;
}

function hardFdLimit() {
  try {
    return Number(execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()) || 1024;
  } catch {
    return 1024;
  }
}

/** Runs one case in a fresh process with the soft fd limit raised to the hard one. */
function runCase(spec) {
  const raiseLimit = 'ulimit -n $(ulimit -Hn) && exec "$@"';
  const core = spec.impl === 'core';
  const command = core
    ? [spec.coreDriver, '--fleet', spec.fleet, '--devices', `${spec.devices}`, '--concurrency', `${spec.concurrency}`,
        '--calls', `${spec.calls}`, '--idle', `${spec.idle ?? 0}`]
    : [process.execPath, '--expose-gc', path.join(__dirname, 'case.js'), JSON.stringify(spec)];
  return new Promise((resolve) => {
    // The core driver prints its result on stdout; a Node case writes it to fd 3, so
    // that whatever the gateway prints (v1 logs every connection) stays out of it.
    const stdio = core ? ['ignore', 'pipe', 'inherit'] : ['ignore', 'ignore', 'inherit', 'pipe'];
    const child = spawn('sh', ['-c', raiseLimit, 'case', ...command], { stdio });
    let out = '';
    (core ? child.stdout : child.stdio[3]).on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        resolve({ error: `no result (${out.trim().slice(0, 200)})` });
      }
    });
  });
}

/** The cases: [name, spec, metrics to report (first one is the headline)]. */
function cases(maxSessions) {
  const list = [];
  const seconds = quick ? 0.5 : 3;
  for (const idle of quick ? [0] : [0, 10_000]) {
    for (const devices of quick ? [2] : [1, 16]) {
      for (const concurrency of quick ? [16] : [1, 64, 1024]) {
        if (idle && concurrency === 1) continue;
        const name = `round trips D=${devices} C=${concurrency}${idle ? ' +10k idle' : ''}`;
        const spec = { scenario: 'roundtrip', devices, concurrency, idle, seconds, calls: 200_000 };
        list.push([name, spec, ['callsPerSec', 'p50Us', 'p99Us', 'cpuUsPerCall', 'jsThreadCpuUsPerCall', 'fleetCpuUsPerCall'], ['ours', 'v1', 'peer', 'core']]);
      }
    }
  }
  const idleMetrics = ['rssPerSessionKB', 'rssPerSessionAfterIdleKB', 'heapPerSessionKB', 'connectPerSec', 'idleCpuMsPerSec', 'teardownMs'];
  for (const idle of quick ? [200] : [1000, 10_000, maxSessions]) {
    // Pings every 5 s: each sweep over 10k sessions lands inside the idle window twice.
    const spec = { scenario: 'idle', idle, heartbeatInterval: 5000, idleSeconds: quick ? 1 : 10 };
    list.push([`idle sessions ${idle}`, spec, idleMetrics, ['ours', 'v1', 'peer']]);
  }
  // Delivery (README): the cost of pacing (interval 0: every send through a device
  // queue) and of idempotency keys when they are on; then 10k sends queued on one device.
  const deliveryMetrics = ['callsPerSec', 'p50Us', 'p99Us', 'cpuUsPerCall'];
  for (const [label, extra] of [
    ['pacing on', { options: { pacing: { minIntervalMs: 0 }, maxQueuedSends: 100_000 } }],
    ['idempotency keys', { idempotency: true }],
  ]) {
    const spec = { scenario: 'roundtrip', devices: 1, concurrency: quick ? 16 : 64, idle: 0, seconds, calls: 200_000, ...extra };
    list.push([`round trips D=1 C=${spec.concurrency} (${label})`, spec, deliveryMetrics, ['ours']]);
  }
  // Durable mode: text round trips with and without a store, one at a time and 64 in
  // flight (README "Durable mode": its measured cost).
  for (const concurrency of quick ? [16] : [1, 64]) {
    for (const store of [false, true]) {
      const spec = { scenario: 'roundtrip', devices: 1, concurrency, idle: 0, seconds, calls: 200_000, store };
      list.push([`round trips D=1 C=${concurrency} (store ${store ? 'on' : 'off'})`, spec, deliveryMetrics, ['ours']]);
    }
  }
  const queuedSpec = { scenario: 'queued', devices: 1, queued: quick ? 500 : 10_000, options: { pacing: { minIntervalMs: 60_000 }, maxQueuedSends: 100_000 } };
  list.push([`${queuedSpec.queued} sends queued on one paced device`, queuedSpec, ['rssPerQueuedSendB', 'heapPerQueuedSendB', 'enqueueUsPerSend', 'stopMs'], ['ours']]);
  for (const concurrency of quick ? [2] : [1, 8]) {
    const spec = { scenario: 'media', devices: 1, concurrency, imageBytes: 4 << 20 };
    list.push([`media 4 MiB C=${concurrency}`, { ...spec, dialect: 'v1' }, ['mbPerSec', 'peakRssGrowthMB'], ['ours', 'v1', 'peer']]);
    if (!quick) list.push([`media 4 MiB C=${concurrency} (compat dialect)`, spec, ['mbPerSec', 'peakRssGrowthMB'], ['ours']]);
  }
  return list.filter(([name]) => !only || only.test(name));
}

/**
 * The performance issue's targets, judged on the medians: each names the cases, the
 * metric, and the check on ours against v1 and the peer.
 */
const TARGETS = [
  ['C=1 calls/s ≥ 1.2× v1 and ≥ 1.0× peer', ['round trips D=1 C=1', 'round trips D=16 C=1'], 'callsPerSec', (m) => m.ours / m.v1 >= 1.2 && m.ours / m.peer >= 1.0],
  ['C=1 gateway CPU per call ≤ 1.0× v1 and ≤ 1.3× peer', ['round trips D=1 C=1', 'round trips D=16 C=1'], 'cpuUsPerCall', (m) => m.ours / m.v1 <= 1.0 && m.ours / m.peer <= 1.3],
  ['C=64 calls/s ≥ 2× v1 and ≥ 1.0× peer', ['round trips D=1 C=64', 'round trips D=16 C=64'], 'callsPerSec', (m) => m.ours / m.v1 >= 2 && m.ours / m.peer >= 1.0],
  ['C=64 p99 ≤ 0.5× v1', ['round trips D=1 C=64', 'round trips D=16 C=64'], 'p99Us', (m) => m.ours / m.v1 <= 0.5],
  ['C≥64 gateway CPU per call ≤ 1.0× peer', ['round trips D=1 C=64', 'round trips D=16 C=64', 'round trips D=1 C=1024', 'round trips D=16 C=1024'], 'cpuUsPerCall', (m) => m.ours / m.peer <= 1.0],
  ['C=1024 calls/s ≥ 1.0× peer', ['round trips D=1 C=1024', 'round trips D=16 C=1024'], 'callsPerSec', (m) => m.ours / m.peer >= 1.0],
  ['idle RSS per session at 10k ≤ 2.2 KB', ['idle sessions 10000'], 'rssPerSessionKB', (m) => m.ours <= 2.2],
  ['connect+auth storm at 10k ≥ 1.0× peer', ['idle sessions 10000'], 'connectPerSec', (m) => m.ours / m.peer >= 1.0],
  // A failed send of ours fails the whole run (below), so MET here is about memory alone.
  ['media 8 at a time: peak RSS growth ≤ 2× peer', ['media 4 MiB C=8'], 'peakRssGrowthMB', (m) => m.ours / m.peer <= 2],
];

function targetLines(medians) {
  const lines = ['| target | case | ours/v1 | ours/peer | |', '|---|---|---|---|---|'];
  for (const [label, names, metric, check] of TARGETS) {
    for (const name of names) {
      const m = medians.get(`${name}\u0000${metric}`);
      if (!m || m.ours === undefined) continue;
      const known = m.v1 !== undefined && m.peer !== undefined;
      const verdict = known || label.includes('KB') ? (check(m) ? 'MET' : 'MISS') : 'n/a';
      const ratio = (other) => (other ? fmt(m.ours / other) : '–');
      lines.push(`| ${label} | ${name} | ${ratio(m.v1)} | ${ratio(m.peer)} | ${verdict} |`);
    }
  }
  return lines;
}

async function main() {
  const tools = buildTools();
  const baseline = prepareAnchor('v1', option('--baseline'));
  const peer = prepareAnchor('uws-peer', option('--peer'));
  if (!baseline) log(quick ? 'quick smoke: ours only' : 'no v1 baseline found: benchmarking ours alone');
  if (!peer && !quick) log('no uWebSockets.js peer found: benchmarking without it');
  const maxSessions = Math.max(1000, hardFdLimit() - 200);
  const list = cases(maxSessions);
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const rawPath = path.join(outDir, `bench-${stamp}.jsonl`);
  const results = new Map();
  let failures = 0;

  for (let run = 1; run <= runs; run++) {
    for (const [name, base, , impls] of list) {
      for (const impl of impls) {
        if (impl === 'v1' && !baseline) continue;
        if (impl === 'peer' && !peer) continue;
        if (impl === 'core' && quick) continue;
        const spec = { ...base, impl, baseline, peer, fleet: tools.fleet, coreDriver: tools.coreDriver, port: await freePort() };
        const result = await runCase(spec);
        fs.appendFileSync(rawPath, `${JSON.stringify({ name, run, ...spec, result })}\n`);
        // An anchor not finishing a case is a result; ours not finishing is a failure.
        if ((impl === 'ours' || impl === 'core') && (result.error || result.failures)) failures++;
        log(`run ${run}/${runs}  ${name}  ${impl}: ${result.error ?? JSON.stringify(result)}`);
        const key = `${name}\u0000${impl}`;
        results.set(key, [...(results.get(key) ?? []), result]);
      }
    }
  }

  // Cluster mode: processes sharing one Redis, when redis-server is installed.
  let clusterLines = [];
  if (!cluster.redisVersion()) {
    log('redis-server not found: skipping the cluster cases');
  } else {
    const record = (entry) => fs.appendFileSync(rawPath, `${JSON.stringify(entry)}\n`);
    const clusterRun = await cluster.runClusterCases({ runs, quick, only, fleet: tools.fleet, log, record });
    clusterLines = clusterRun.lines;
    failures += clusterRun.failures;
  }

  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
  const lines = [
    `Machine: ${machine}. Command: \`npm run bench\` (${runs} runs, median [min–max]; ratios of the medians).`,
    '',
    '| case | metric | ours | v1 | ours/v1 | uWS peer | ours/peer | Rust-driven core | JS/core |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const medians = new Map();
  for (const [name, , metrics] of list) {
    for (const metric of metrics) {
      const of = (impl) => {
        const rs = results.get(`${name}\u0000${impl}`) ?? [];
        return summary(rs.map((r) => r[metric]), rs.some((r) => r.error));
      };
      const [ours, v1, peerResult, core] = [of('ours'), of('v1'), of('peer'), of('core')];
      const ratio = (other) => (ours.median !== undefined && other.median ? fmt(ours.median / other.median) : '–');
      const jsCore = metric === 'callsPerSec' && ours.median && core.median ? fmt(ours.median / core.median) : '–';
      medians.set(`${name}\u0000${metric}`, { ours: ours.median, v1: v1.median, peer: peerResult.median });
      lines.push(
        `| ${name} | ${metric} | ${ours.text} | ${v1.text} | ${ratio(v1)} | ${peerResult.text} | ${ratio(peerResult)} | ${core.text} | ${jsCore} |`,
      );
    }
  }
  lines.push('', ...targetLines(medians));
  if (clusterLines.length) lines.push('', ...clusterLines);
  const table = lines.join('\n');
  const mdPath = path.join(outDir, `bench-${stamp}.md`);
  fs.writeFileSync(mdPath, `${table}\n`);
  console.log(table);
  log(`\nraw results: ${rawPath}\ntable: ${mdPath}`);
  if (failures) {
    log(`${failures} case(s) failed or had failed sends`);
    process.exit(1);
  }
}

main().catch((error) => {
  log(error.stack);
  process.exit(1);
});
