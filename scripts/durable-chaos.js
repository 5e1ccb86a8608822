'use strict';
// npm run chaos:durable -- [--seed N] [--duration S]
//
// Durable mode under SIGKILL (README "Durable mode"): a gateway in a child process with
// a store, paced sends with idempotency keys and metadata, extensions here (so that they
// see every command any gateway process wrote) that answer, fail, answer late or not at
// all; the child is killed with SIGKILL at random moments (while sends are queued,
// written, answered) and started again on the same store, over and over; retries of
// earlier keys are made across the kills. At the end a last process runs until its
// queue is empty. Invariants:
// - no command is written twice for one idempotency key (each key has its own text);
// - every send whose call settled, or that the store recorded, ends with a final status
//   ('sent', 'failed', 'unknown') or is still queued; nothing is queued at the end;
// - a call that resolved has its status 'sent', one that rejected with sent: false
//   never reached an extension;
// - every send the last process took up from the store fires its event with
//   recovered: true.
// Exits 1 on a violation.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startNodeProcess } = require('../__test__/cluster-node');
const { FakeExtension } = require('../__test__/helpers');

const KEY = 'chaos-durable-key-1';

function argument(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}

const seed = argument('seed', Date.now() % 100000);
const duration = argument('duration', 30) * 1000;

/** A small seeded generator (mulberry32), so that a seed repeats its run's choices. */
let state = seed >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (n) => Math.floor(random() * n);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-chaos-durable-'));
const store = path.join(dir, 'gateway.db');
const options = { store, pacing: { minIntervalMs: 40, jitterMs: 30 }, waitForDevice: 4000, requestTimeout: 3000 };

function sql(query) {
  const out = execFileSync('sqlite3', ['-json', store, query], { encoding: 'utf8' });
  return out.trim() === '' ? [] : JSON.parse(out);
}

const written = new Map(); // text (= idempotency key) -> commands written
const writtenIds = new Set();
const outcomes = new Map(); // key -> [{ ok, code, sent, requestId }]
const keys = [];
const counts = { rounds: 0, kills: 0, calls: 0, retries: 0, duplicates: 0, commands: 0, recoveredEvents: 0, lateResults: 0 };

function extensionFor(port) {
  const extension = new FakeExtension(`ws://127.0.0.1:${port}/wa-ext-ws`, {
    apiKey: KEY,
    respond(command) {
      counts.commands += 1;
      const text = command.data.message;
      written.set(text, (written.get(text) ?? 0) + 1);
      writtenIds.add(command.requestId);
      const roll = random();
      if (roll < 0.6) return { success: true, messageId: `wa-${command.requestId.slice(0, 8)}` };
      if (roll < 0.7) return { success: false, error: 'chat not found' };
      if (roll < 0.9) {
        const delay = 200 + pick(1500);
        setTimeout(() => {
          counts.lateResults += 1;
          if (extension.ws.readyState === 1) extension.result(command.requestId, { success: true, messageId: `wa-late-${command.requestId.slice(0, 8)}` });
        }, delay);
      }
      return null;
    },
  });
  return extension;
}

async function connect(node) {
  const extension = extensionFor(node.port);
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  return extension;
}

function call(node, key) {
  counts.calls += 1;
  const data = { phoneNumber: `+1555${String(keys.indexOf(key)).padStart(7, '0')}`, message: key, idempotencyKey: key, metadata: { key }, timeout: 2000 + pick(6000) };
  node.send('message', KEY, data).then(
    (result) => {
      if (result.duplicate) counts.duplicates += 1;
      record(key, { ok: true, requestId: result.requestId });
    },
    (error) => {
      if (error.processExited) return; // its caller died with the process
      if (error.details?.duplicate) counts.duplicates += 1;
      record(key, { ok: false, code: error.code, sent: error.details?.sent, requestId: error.details?.requestId });
    },
  );
}

function record(key, outcome) {
  if (!outcomes.has(key)) outcomes.set(key, []);
  outcomes.get(key).push(outcome);
}

async function round(final) {
  counts.rounds += 1;
  const node = await startNodeProcess(null, options);
  const extension = await connect(node);
  if (final) return { node, extension };
  const lifetime = 300 + pick(1500);
  const until = Date.now() + lifetime;
  while (Date.now() < until) {
    if (keys.length > 0 && random() < 0.2) {
      counts.retries += 1;
      call(node, keys[pick(keys.length)]);
    } else {
      const key = `msg-${seed}-${keys.length}`;
      keys.push(key);
      call(node, key);
    }
    await sleep(pick(40));
  }
  counts.kills += 1;
  await node.kill();
  extension.ws.terminate();
  return null;
}

async function main() {
  const started = Date.now();
  while (Date.now() - started < duration) await round(false);
  // The last process: nothing is killed; it takes up what the store holds.
  const recovered = new Set(sql('SELECT request_id FROM queued').map((r) => r.request_id));
  const { node, extension } = await round(true);
  const waitUntil = Date.now() + 20_000;
  while (Date.now() < waitUntil && sql('SELECT count(*) AS n FROM queued')[0].n > 0) await sleep(100);
  await sleep(2500); // late answers of the last commands
  const violations = [];
  for (const [text, n] of written) if (n > 1) violations.push(`${text}: written ${n} times`);
  if (sql('SELECT count(*) AS n FROM queued')[0].n > 0) violations.push('sends still queued at the end');
  const states = {};
  for (const key of keys) {
    const status = await node.request('status', { lookup: { apiKey: KEY, idempotencyKey: key } });
    const seen = outcomes.get(key) ?? [];
    if (status === null) {
      if (seen.length > 0) violations.push(`${key}: its call settled but it has no status`);
      if (written.has(key)) violations.push(`${key}: written but has no status`);
      continue;
    }
    states[status.state] = (states[status.state] ?? 0) + 1;
    if (!['sent', 'failed', 'unknown'].includes(status.state)) violations.push(`${key}: ends ${status.state}`);
    if (seen.some((o) => o.ok) && status.state !== 'sent') violations.push(`${key}: resolved but ${status.state}`);
    for (const o of seen) {
      if (o.sent === false && o.requestId && writtenIds.has(o.requestId)) violations.push(`${key}: rejected sent: false, yet written`);
    }
  }
  const events = node.events.filter((e) => e.recovered === true);
  counts.recoveredEvents = events.length;
  for (const id of recovered) {
    if (!events.some((e) => e.requestId === id)) violations.push(`recovered ${id}: no event with recovered: true`);
  }
  extension.ws.terminate();
  await node.kill();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(
    `chaos:durable seed ${seed}: ${counts.rounds} processes, ${counts.kills} SIGKILLs, ${keys.length} keys, ${counts.calls} calls (${counts.retries} retries, ${counts.duplicates} settled as duplicates), ` +
      `${counts.commands} commands written, ${counts.lateResults} late results, ${recovered.size} taken up by the last process (${counts.recoveredEvents} recovered events), final states ${JSON.stringify(states)}`,
  );
  if (violations.length > 0) {
    console.error(`${violations.length} violations:\n${violations.slice(0, 30).join('\n')}`);
    process.exit(1);
  }
  console.log('invariants hold');
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
