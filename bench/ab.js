'use strict';
// Builds of ours side by side (and v1), round trips only, alternating build by build
// within each run so that drift on a shared machine hits all of them alike.
//
//   node bench/ab.js [--runs 3] [--cases 'D=1 C=1,D=1 C=64,D=1 C=1024'] LABEL=PATH ... [v1]
//
// A case is `D=<devices> C=<in flight>` (round trips), with ` +10k` for 10k idle sessions
// connected beside them and ` store` for durable mode (a build that has it); `media C=<n>`
// (4 MiB images, v1 dialect; `media C=<n> compat` in the default dialect, two copies of
// each; ` distinct`: each of the n senders its own image, rather than one image for all);
// `idle <sessions>`.
//
// PATH is a checkout of this package with its gateway.node built; `v1` adds the v1
// package from WA_BENCH_V1 and `peer` the uWebSockets.js peer from WA_BENCH_PEER
// (bench/anchors.js; each installed by `npm run bench` into a temp dir).
//
// `--syscalls` runs each case under `perf stat --no-inherit` (Debian's linux-perf) and adds
// the JavaScript thread's system calls per call to the table (`recvfromPerCall`...): how
// many reads, writes and epoll waits a call costs, and so how large the batches are.
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../__test__/free-port');
const { ANCHOR_SOURCES, anchorDir, anchorSource } = require('./anchors');
const { median } = require('./stats');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
function option(name, fallback) {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const [value] = args.splice(at, 2).slice(1);
  return value;
}
const runs = Number(option('--runs', 3));
const seconds = Number(option('--seconds', 3));
const caseNames = option('--cases', 'D=1 C=1,D=1 C=64,D=1 C=1024').split(',');
const syscallsAt = args.indexOf('--syscalls');
const syscalls = syscallsAt !== -1 && Boolean(args.splice(syscallsAt, 1));
/** The system calls `--syscalls` counts: a socket's reads and writes, and the waits for them. */
const SYSCALLS = ['recvfrom', 'sendto', 'epoll_wait', 'epoll_pwait', 'read', 'write', 'futex'];
/** An anchor `npm run bench` installed (bench/anchors.js). */
function installed(name) {
  const source = anchorSource(name);
  if (!source) throw new Error(`${name}: set ${ANCHOR_SOURCES[name]} to its package (bench/anchors.js)`);
  const dir = anchorDir(name, source);
  if (!fs.existsSync(path.join(dir, 'node_modules'))) throw new Error(`run npm run bench once first: ${dir} is missing`);
  return dir;
}

const builds = args.map((arg) => {
  if (arg === 'v1') return { label: 'v1', impl: 'v1', baseline: installed('v1') };
  if (arg === 'peer') return { label: 'peer', impl: 'peer', peer: installed('uws-peer') };
  const [label, dir] = arg.split('=');
  return { label, impl: 'ours', oursRoot: path.resolve(dir) };
});

const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
const fleet = path.join(targetDir, 'release', 'fleet');
if (!fs.existsSync(fleet)) {
  execFileSync('cargo', ['build', '--release', '--locked', '-p', 'gateway-bench'], { cwd: root, stdio: 'inherit' });
}

function runCase(spec) {
  let command = [process.execPath, '--expose-gc', path.join(__dirname, 'case.js'), JSON.stringify(spec)];
  const counts = syscalls && path.join(os.tmpdir(), `wa-gateway-ab-syscalls-${process.pid}.csv`);
  if (counts) {
    const events = SYSCALLS.map((name) => `syscalls:sys_enter_${name}`).join(',');
    // --no-inherit: the process's first thread only, the one that runs JavaScript.
    command = ['perf', 'stat', '--no-inherit', '-x', ',', '-o', counts, '-e', events, '--', ...command];
  }
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', 'ulimit -n $(ulimit -Hn) && exec "$@"', 'case', ...command], {
      stdio: ['ignore', 'ignore', 'inherit', 'pipe'],
    });
    let out = '';
    child.stdio[3].on('data', (d) => (out += d));
    child.on('close', () => {
      let result;
      try {
        result = JSON.parse(out.trim().split('\n').pop());
      } catch {
        return resolve({ error: 'no result' });
      }
      if (counts) Object.assign(result, syscallsPerCall(counts, result.calls));
      resolve(result);
    });
  });
}

/** `perf stat -x,` lines (`count,unit,event,...`) as `<syscall>PerCall` fields. */
function syscallsPerCall(file, calls) {
  const fields = {};
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
    fs.rmSync(file);
  } catch {
    return { error: 'perf stat wrote nothing (is linux-perf installed, and are tracepoints readable?)' };
  }
  for (const line of text.split('\n')) {
    const [count, , event] = line.split(',');
    const name = event?.match(/^syscalls:sys_enter_(\w+)$/)?.[1];
    if (name && calls > 0) fields[`${name}PerCall`] = Number(count) / calls;
  }
  return fields;
}

function caseSpec(name) {
  const media = name.match(/^media C=(\d+)( compat)?( distinct)?/);
  if (media) {
    const dialect = media[2] ? 'compat' : 'v1';
    return { scenario: 'media', devices: 1, concurrency: Number(media[1]), imageBytes: 4 << 20, dialect, distinct: Boolean(media[3]) };
  }
  const idle = name.match(/^idle (\d+)/);
  if (idle) return { scenario: 'idle', idle: Number(idle[1]), heartbeatInterval: 5000, idleSeconds: 10 };
  const [, devices, concurrency] = name.match(/D=(\d+) C=(\d+)/).map(Number);
  // ` store`: durable mode (README "Durable mode"), a fresh store file per run.
  return { scenario: 'roundtrip', devices, concurrency, idle: name.includes('+10k') ? 10_000 : 0, seconds, calls: 200_000, store: / store\b/.test(name) };
}


async function main() {
  const results = new Map();
  for (let run = 1; run <= runs; run++) {
    for (const name of caseNames) {
      for (const build of builds) {
        const spec = { ...caseSpec(name), fleet, port: await freePort(), ...build };
        const result = await runCase(spec);
        process.stderr.write(`run ${run} ${name} ${build.label}: ${JSON.stringify(result)}\n`);
        const key = `${name}\u0000${build.label}`;
        results.set(key, [...(results.get(key) ?? []), result]);
      }
    }
  }
  const lines = [];
  for (const name of caseNames) {
    const first = results.get(`${name}\u0000${builds[0].label}`).find((r) => !r.error) ?? {};
    const keys = Object.keys(first).filter((k) => typeof first[k] === 'number' && !['calls', 'failures', 'sessions', 'sends'].includes(k));
    lines.push('', `| ${name} | ${keys.join(' | ')} |`, `|---|${keys.map(() => '---|').join('')}`);
    for (const { label } of builds) {
      const rs = results.get(`${name}\u0000${label}`).filter((r) => !r.error);
      const m = (k) => (rs.length ? median(rs.map((r) => r[k])) : NaN);
      // Per-call counts far below one (system calls under load) keep two figures.
      const show = (x) => (Math.abs(x) >= 100 ? String(Math.round(x)) : Math.abs(x) >= 0.1 || x === 0 ? x.toFixed(2) : x.toPrecision(2));
      lines.push(`| ${label} | ${keys.map((k) => show(m(k))).join(' | ')} |`);
    }
  }
  console.log(lines.join('\n'));
}

main();
