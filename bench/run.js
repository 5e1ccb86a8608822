'use strict';
// `npm run bench`: our gateway against v1, case by case in one run, each case in a
// fresh Node process, repeated, reported as median [min-max] and ours/v1.
//
//   node bench/run.js [--runs 3] [--baseline PATH] [--only REGEX] [--quick] [--out DIR]
//
// v1 comes from ../shared/baseline-v1 (or --baseline), installed once into a temp
// dir; without it, ours runs alone. The load is the Rust fleet in bench/fleet, built
// here. --quick is the CI smoke: ours only, tiny counts, fails unless every send
// succeeded.
const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

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

/** v1 installed into a temp dir (npm ci from its lockfile), reused across runs. */
function prepareBaseline() {
  const given = option('--baseline');
  const source = given ? path.resolve(given) : path.resolve(root, '../shared/baseline-v1');
  if (quick || !fs.existsSync(path.join(source, 'package.json'))) return null;
  const lock = fs.readFileSync(path.join(source, 'package-lock.json'));
  const dir = path.join(os.tmpdir(), `wa-gateway-v1-${crypto.createHash('sha1').update(lock).digest('hex').slice(0, 10)}`);
  if (!fs.existsSync(path.join(dir, 'node_modules'))) {
    log(`installing v1 from ${source} into ${dir}...`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(source, dir, { recursive: true });
    fs.chmodSync(dir, 0o755);
    execFileSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return dir;
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
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
        list.push([name, spec, ['callsPerSec', 'p50Us', 'p99Us', 'cpuUsPerCall', 'fleetCpuUsPerCall'], ['ours', 'v1', 'core']]);
      }
    }
  }
  const idleMetrics = ['rssPerSessionKB', 'rssPerSessionAfterIdleKB', 'heapPerSessionKB', 'connectPerSec', 'idleCpuMsPerSec', 'teardownMs'];
  for (const idle of quick ? [200] : [1000, 10_000, maxSessions]) {
    // Pings every 5 s: each sweep over 10k sessions lands inside the idle window twice.
    const spec = { scenario: 'idle', idle, heartbeatInterval: 5000, idleSeconds: quick ? 1 : 10 };
    list.push([`idle sessions ${idle}`, spec, idleMetrics, ['ours', 'v1']]);
  }
  for (const concurrency of quick ? [2] : [1, 8]) {
    const spec = { scenario: 'media', devices: 1, concurrency, imageBytes: 4 << 20 };
    list.push([`media 4 MiB C=${concurrency}`, { ...spec, dialect: 'v1' }, ['mbPerSec', 'peakRssGrowthMB'], ['ours', 'v1']]);
    if (!quick) list.push([`media 4 MiB C=${concurrency} (compat dialect)`, spec, ['mbPerSec', 'peakRssGrowthMB'], ['ours']]);
  }
  return list.filter(([name]) => !only || only.test(name));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function fmt(x) {
  if (x === undefined || Number.isNaN(x)) return '–';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(Math.abs(x) >= 10 ? 1 : 2);
}

function summary(values, errors) {
  const xs = values.filter((v) => typeof v === 'number');
  if (!xs.length) return { text: errors ? 'did not finish' : '–' };
  const m = median(xs);
  return { median: m, text: xs.length > 1 ? `${fmt(m)} [${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}]` : fmt(m) };
}

async function main() {
  const tools = buildTools();
  const baseline = prepareBaseline();
  if (!baseline) log(quick ? 'quick smoke: ours only' : 'no v1 baseline found: benchmarking ours alone');
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
        if (impl === 'core' && quick) continue;
        const spec = { ...base, impl, baseline, fleet: tools.fleet, coreDriver: tools.coreDriver, port: await freePort() };
        const result = await runCase(spec);
        fs.appendFileSync(rawPath, `${JSON.stringify({ name, run, ...spec, result })}\n`);
        // v1 not finishing a case is a result; ours not finishing is a failure.
        if (impl !== 'v1' && (result.error || result.failures)) failures++;
        log(`run ${run}/${runs}  ${name}  ${impl}: ${result.error ?? JSON.stringify(result)}`);
        const key = `${name}\u0000${impl}`;
        results.set(key, [...(results.get(key) ?? []), result]);
      }
    }
  }

  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
  const lines = [
    `Machine: ${machine}. Command: \`npm run bench\` (${runs} runs, median [min–max]; ratio = ours/v1 of the medians).`,
    '',
    '| case | metric | ours | v1 | ours/v1 | Rust-driven core | JS/core |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const [name, , metrics] of list) {
    for (const metric of metrics) {
      const of = (impl) => {
        const rs = results.get(`${name}\u0000${impl}`) ?? [];
        return summary(rs.map((r) => r[metric]), rs.some((r) => r.error));
      };
      const [ours, v1, core] = [of('ours'), of('v1'), of('core')];
      const ratio = ours.median !== undefined && v1.median ? fmt(ours.median / v1.median) : '–';
      const jsCore = metric === 'callsPerSec' && ours.median && core.median ? fmt(ours.median / core.median) : '–';
      lines.push(`| ${name} | ${metric} | ${ours.text} | ${v1.text} | ${ratio} | ${core.text} | ${jsCore} |`);
    }
  }
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
