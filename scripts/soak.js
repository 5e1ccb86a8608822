'use strict';
// A soak run: many idle sessions answering heartbeats, a few devices receiving a
// trickle of sends, for a long while; the gateway's RSS, open file descriptors and CPU
// are sampled and must stay flat.
//
//   node --expose-gc scripts/soak.js [--sessions 10000] [--devices 10] [--minutes 30] [--rate 10]
//                        [--heartbeat 5000] [--every 10]
//
// The sessions come from the benchmark's Rust fleet (bench/fleet, built here into
// target/bench-tools like `npm run bench` does), so that the load costs little next to
// what it measures. Prints one line per sample (the curve) and a verdict; exits 1 when
// a session was lost, a send failed, or RSS or descriptors kept growing.
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { WhatsAppGateway } = require('..');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return Number(at === -1 ? fallback : process.argv[at + 1]);
}
const sessions = option('--sessions', 10000);
const devices = option('--devices', 10);
const minutes = option('--minutes', 30);
const rate = option('--rate', 10);
const heartbeat = option('--heartbeat', 5000);
const everySeconds = option('--every', 10);
const KEY = 'soak-device-key-0001';

const root = path.resolve(__dirname, '..');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function buildFleet() {
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target', 'bench-tools');
  execFileSync('cargo', ['build', '--release', '--locked', '--bin', 'fleet', '--manifest-path', path.join(root, 'bench/fleet/Cargo.toml')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  });
  return path.join(targetDir, 'release', 'fleet');
}

/** The fleet and its line protocol (bench/fleet/src/fleet.rs). */
function startFleet(bin, port) {
  const args = ['--url', `ws://127.0.0.1:${port}/wa-ext-ws`, '--key', KEY, '--devices', `${devices}`, '--idle', `${sessions}`];
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (line) => waiting.shift()?.(line));
  const nextLine = () => new Promise((resolve) => waiting.push(resolve));
  return { child, ready: nextLine(), exit: () => child.stdin.end('exit\n') };
}

const fdCount = () => fs.readdirSync('/proc/self/fd').length;
const rssMb = () => process.memoryUsage().rss / 1048576;
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

async function main() {
  const bin = buildFleet();
  const errors = {};
  const gateway = new WhatsAppGateway({
    port: 0,
    host: '127.0.0.1',
    validateApiKey: () => ({ valid: true }),
    heartbeatInterval: heartbeat,
    onError: (error) => {
      errors[error.code] = (errors[error.code] ?? 0) + 1;
    },
  });
  await gateway.start();
  const fleet = startFleet(bin, gateway.address().port);
  const ready = await fleet.ready;
  if (!ready.startsWith('ready')) throw new Error(`fleet: ${ready}`);
  const expected = sessions + devices;

  const sends = { ok: 0, failed: {} };
  const sender = setInterval(() => {
    gateway.sendMessage(KEY, { phoneNumber: '+15550001234', message: 'soak', timeout: 10_000 }).then(
      () => (sends.ok += 1),
      (error) => (sends.failed[error.code] = (sends.failed[error.code] ?? 0) + 1),
    );
  }, 1000 / rate);

  const samples = [];
  const started = Date.now();
  let lastCpu = cpuMs();
  let lastAt = Date.now();
  process.stdout.write('  min   RSS MB  heap MB   fds   CPU %   sessions   sends ok   failed\n');
  while (Date.now() - started < minutes * 60_000) {
    await sleep(everySeconds * 1000);
    // With --expose-gc, garbage JavaScript has not collected yet is not counted as growth.
    global.gc?.();
    const now = Date.now();
    const cpu = cpuMs();
    const sample = {
      minute: (now - started) / 60_000,
      rss: rssMb(),
      heap: process.memoryUsage().heapUsed / 1048576,
      fds: fdCount(),
      cpu: ((cpu - lastCpu) / (now - lastAt)) * 100,
      sessions: gateway.getHealth().activeSessions,
    };
    [lastCpu, lastAt] = [cpu, now];
    samples.push(sample);
    const failed = Object.values(sends.failed).reduce((a, b) => a + b, 0);
    process.stdout.write(
      `${sample.minute.toFixed(1).padStart(5)}  ${sample.rss.toFixed(1).padStart(7)}  ${sample.heap.toFixed(1).padStart(7)}  ${String(sample.fds).padStart(5)}  ` +
        `${sample.cpu.toFixed(1).padStart(6)}  ${String(sample.sessions).padStart(9)}  ${String(sends.ok).padStart(9)}  ${String(failed).padStart(7)}\n`,
    );
  }
  clearInterval(sender);
  fleet.exit();
  await gateway.stop();

  const problems = [];
  const lost = samples.filter((s) => s.sessions !== expected);
  if (lost.length) problems.push(`sessions not all there in ${lost.length} samples (expected ${expected}, saw ${lost[0].sessions})`);
  if (Object.keys(sends.failed).length) problems.push(`sends failed: ${JSON.stringify(sends.failed)}`);
  if (Object.keys(errors).length) problems.push(`onError: ${JSON.stringify(errors)}`);
  // Flat: the last third of the run grows no more than 10% (+16 MB) over the first.
  const third = Math.max(1, Math.floor(samples.length / 3));
  const maxOf = (list, field) => Math.max(...list.map((s) => s[field]));
  const early = samples.slice(0, third);
  const late = samples.slice(-third);
  if (maxOf(late, 'rss') > maxOf(early, 'rss') * 1.1 + 16) {
    problems.push(`RSS grew from ${maxOf(early, 'rss').toFixed(1)} MB to ${maxOf(late, 'rss').toFixed(1)} MB`);
  }
  if (maxOf(late, 'fds') > maxOf(early, 'fds') + 10) {
    problems.push(`open descriptors grew from ${maxOf(early, 'fds')} to ${maxOf(late, 'fds')}`);
  }
  process.stdout.write(
    `soak: ${sessions} sessions + ${devices} devices, ${minutes} min, ${rate} sends/s, heartbeat ${heartbeat} ms: ` +
      `${sends.ok} sends ok; ${problems.length ? `FAILED: ${problems.join('; ')}` : 'flat, OK'}\n`,
  );
  process.exit(problems.length ? 1 : 0);
}

main().catch((error) => {
  process.stderr.write(`soak failed: ${error.stack}\n`);
  process.exit(2);
});
