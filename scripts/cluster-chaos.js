'use strict';
// `npm run chaos:cluster`: a seeded chaos run of cluster mode (README "Cluster mode").
//
//   node scripts/cluster-chaos.js [--seed 1] [--duration 30] [--nodes 3] [--extensions 8]
//                                 [--rate 20] [--lease 2000]
//
// A throwaway redis-server on loopback and `--nodes` gateway processes (children, each on
// its own free port, driven over IPC) form one cluster. Simulated extensions connect to
// random processes, answer commands (mostly at once, sometimes slowly, sometimes after the
// call has given up, sometimes with a failure, sometimes never, sometimes by dropping the
// connection; acks after some successes) and move between processes; sends are called on
// random processes, some with timeouts longer than requestTimeout, some with an
// idempotencyKey retried on any process; a process is SIGKILLed now and then and a new one
// started in its place; Redis is restarted once (clean stop or SIGKILL, empty afterwards).
// At the end, for every send whose calling process survived:
//   - it settled exactly once, within its timeout + leaseMs + slack;
//   - a rejection has a code the README allows here;
//   - a resolution carries the requestId of a command that exactly one extension received
//     and answered with success, and that extension's messageId;
//   - exactly one outcome event (`message-sent` / `send-failed`) exists for it, on the
//     calling process, when a device was chosen (plus at most one late `*-sent`);
//   - its record ends at what the extension told (an answer given on an open connection
//     of a process that survived, to a caller that survived: 'sent' or 'failed', late
//     answers included);
// per idempotencyKey a command reached extensions at most once (also across a Redis
// restarted empty, unless the process that recorded the key was killed), no command reached
// extensions twice, some sends crossed processes, and the surviving processes agree on
// the sessions that are left. Prints a summary; exits 1 on a violation.
//
// The seed fixes every random choice; the interleaving of real processes and sockets still
// varies between runs, so a violation names the seed to re-run with, not an exact replay.
const WebSocket = require('ws');
const { startRedis, redisSkipReason } = require('../__test__/redis');
const { startNodeProcess } = require('../__test__/cluster-node');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : process.argv[at + 1];
}

function numberOption(name, fallback, min = 0) {
  const value = Number(option(name, fallback));
  if (!Number.isFinite(value) || value < min) {
    process.stderr.write(`chaos:cluster: ${name} must be a number of at least ${min}\n`);
    process.exit(2);
  }
  return value;
}

const settings = {
  seed: numberOption('--seed', 1) >>> 0,
  durationMs: numberOption('--duration', 30, 1) * 1000,
  nodes: Math.floor(numberOption('--nodes', 3, 2)),
  extensions: Math.floor(numberOption('--extensions', 8, 1)),
  rate: numberOption('--rate', 20),
  leaseMs: numberOption('--lease', 2000, 1),
};
const REQUEST_TIMEOUT_MS = 4000;
/** Some calls outlast requestTimeout: the idempotency reservation must hold for them. */
const LONG_TIMEOUT_MS = 10_000;
/** Scheduling and IPC slack on a busy 2-core machine, on top of what the README's cluster mode allows. */
const SLACK_MS = 3000;
const KEYS = ['cluster-chaos-a-0123456789', 'cluster-chaos-b-0123456789'];
/** The text of an idempotent send names its key, so that the fleet can count what went out. */
const IDEMPOTENT_PREFIX = 'chaos idempotent ';
const LEGAL_REJECTIONS = new Set([
  'NO_ACTIVE_DEVICE',
  'REQUEST_TIMEOUT',
  'CONNECTION_LOST',
  'EXTENSION_ERROR',
  'CLUSTER_UNAVAILABLE',
  'BACKPRESSURE',
  'QUEUE_FULL',
  'IDEMPOTENCY_KEY_REUSED',
]);

/** A small seeded generator (xorshift-multiply): every random choice of the run. */
function seeded(seed) {
  let state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return Math.imul(state, 0x2c1b3c6d) >>> 0;
  };
  const unit = () => next() / 4294967296;
  return {
    unit,
    int: (lo, hi) => lo + Math.floor(unit() * (hi - lo + 1)),
    chance: (p) => unit() < p,
    pick: (list) => list[Math.floor(unit() * list.length)],
    fork: () => seeded(next()),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Violations {
  constructor() {
    this.rules = new Map();
  }

  add(rule, example = '') {
    const entry = this.rules.get(rule) ?? { count: 0, example };
    entry.count += 1;
    this.rules.set(rule, entry);
  }

  get size() {
    return this.rules.size;
  }

  lines() {
    return [...this.rules].map(([rule, { count, example }]) => `${rule} (x${count}${example ? `; e.g. ${example}` : ''})`);
  }
}

// ---------------------------------------------------------------------------
// The gateway processes.

class Nodes {
  constructor(redis, violations) {
    this.redis = redis;
    this.violations = violations;
    /** One slot per process position; a restart puts a new process in it. */
    this.slots = [];
    /** Every process ever started, by its nodeId (events of the dead are kept). */
    this.all = new Map();
    this.kills = 0;
  }

  async startSlot(index) {
    const generation = (this.slots[index]?.generation ?? -1) + 1;
    const nodeId = `chaos-${index}-g${generation}`;
    const slot = { index, generation, nodeId, alive: false, node: null, diedAt: null };
    this.slots[index] = slot;
    try {
      slot.node = await startNodeProcess(null, {
        cluster: { redis: this.redis.url, nodeId, leaseMs: settings.leaseMs },
        requestTimeout: REQUEST_TIMEOUT_MS,
        heartbeatInterval: 1000,
        heartbeatTimeout: 4000,
        maxSessionsPerKey: 50,
      });
    } catch (error) {
      this.violations.add('a gateway process failed to start', `${nodeId}: ${error.code ?? ''} ${error.message}`);
      return slot;
    }
    slot.alive = true;
    slot.url = `ws://127.0.0.1:${slot.node.port}/wa-ext-ws`;
    this.all.set(nodeId, slot);
    slot.node.exited.then(() => {
      slot.alive = false;
      slot.diedAt ??= Date.now();
    });
    return slot;
  }

  alive() {
    return this.slots.filter((slot) => slot.alive);
  }

  async kill(slot) {
    slot.alive = false;
    slot.diedAt = Date.now();
    this.kills += 1;
    await slot.node.kill();
  }

  async stopAll() {
    await Promise.all(
      this.slots.map(async (slot) => {
        if (!slot.node) return;
        if (slot.alive) await Promise.race([slot.node.request('stop').catch(() => {}), sleep(10_000)]);
        await slot.node.kill();
      }),
    );
  }
}

// ---------------------------------------------------------------------------
// Simulated extensions.

class Fleet {
  constructor(nodes, random, violations) {
    this.nodes = nodes;
    this.random = random;
    this.violations = violations;
    this.running = true;
    this.devices = [];
    /** requestId -> { deliveries, answer, nodeId (of the session that got it) } */
    this.commands = new Map();
    /** idempotencyKey -> requestIds of the commands that carried it. */
    this.idempotentDeliveries = new Map();
    this.stats = { connects: 0, moves: 0, answers: {} };
  }

  start(count) {
    for (let i = 0; i < count; i++) {
      const device = { index: i, key: KEYS[i % KEYS.length], ws: null, sessionId: null, nodeId: null };
      this.devices.push(device);
      this.life(device, this.random.fork());
    }
  }

  /** Connects to a random live process, stays a while, moves on; again until the end. */
  async life(device, random) {
    while (this.running) {
      const slot = random.pick(this.nodes.alive());
      if (!slot) {
        await sleep(200);
        continue;
      }
      const { closed } = (await this.connect(device, slot, random).catch(() => null)) ?? {};
      if (closed) {
        const moveAt = sleep(random.int(2000, 8000)).then(() => 'move');
        const why = await Promise.race([closed, moveAt]);
        // At the end the session stays where it is: the last check compares views with it.
        if (why === 'move' && !this.running) return;
        if (why === 'move') {
          this.stats.moves += 1;
          device.ws.close(1000);
          await closed;
        }
      }
      device.sessionId = null;
      device.nodeId = null;
      await sleep(random.int(50, 600));
    }
  }

  /** Resolves, once authenticated and ready, with { closed }: a promise of the socket's close. */
  connect(device, slot, random) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(slot.url, { perMessageDeflate: false, handshakeTimeout: 3000 });
      device.ws = ws;
      const closed = new Promise((done) => ws.once('close', done));
      closed.then(() => reject(new Error('closed before auth')));
      ws.on('error', () => {});
      ws.once('open', () => {
        this.stats.connects += 1;
        send(ws, { type: 'auth', apiKey: device.key, data: { extensionVersion: 'chaos', browser: 'node' } });
      });
      const authTimer = setTimeout(() => ws.terminate(), 5000);
      closed.then(() => clearTimeout(authTimer));
      ws.on('message', (data) => {
        let frame;
        try {
          frame = JSON.parse(data.toString());
        } catch {
          return;
        }
        if (frame.type === 'ping') send(ws, { type: 'heartbeat', timestamp: Date.now() });
        else if (frame.type === 'auth-success' || frame.type === 'authenticated') {
          clearTimeout(authTimer);
          device.sessionId = frame.sessionId;
          device.nodeId = slot.nodeId;
          send(ws, { type: 'status', data: { whatsappLoggedIn: true, ready: true } });
          resolve({ closed });
        } else if (typeof frame.type === 'string' && frame.type.startsWith('send-')) {
          this.answer(device, ws, frame, random);
        }
      });
    });
  }

  answer(device, ws, frame, random) {
    const seen = this.commands.get(frame.requestId);
    if (seen) {
      seen.deliveries += 1;
      this.violations.add('a command reached extensions twice', `${frame.requestId} on ${seen.nodeId} and ${device.nodeId}`);
      return;
    }
    const slot = this.nodes.all.get(device.nodeId);
    const record = { deliveries: 1, answer: 'none', nodeId: device.nodeId, sessionId: device.sessionId, holder: slot, answeredAt: null };
    this.commands.set(frame.requestId, record);
    const text = frame.data?.message ?? '';
    if (text.startsWith(IDEMPOTENT_PREFIX)) {
      const key = text.slice(IDEMPOTENT_PREFIX.length);
      this.idempotentDeliveries.set(key, [...(this.idempotentDeliveries.get(key) ?? []), frame.requestId]);
    }
    const behaviour = random.pick(['fast', 'fast', 'fast', 'fast', 'fast', 'fast', 'slow', 'slow', 'late', 'fail', 'silent', 'drop']);
    this.stats.answers[behaviour] = (this.stats.answers[behaviour] ?? 0) + 1;
    const reply = (success) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      record.answer = success ? 'success' : 'failure';
      record.answeredAt = Date.now();
      send(ws, {
        type: 'message-result',
        requestId: frame.requestId,
        success,
        ...(success ? { messageId: `m-${frame.requestId}` } : { error: 'chaos says no' }),
        timestamp: Date.now(),
      });
      // Some successes are acknowledged further (late ones too: accepted forward only).
      if (success && random.chance(0.3)) {
        setTimeout(() => send(ws, { type: 'message-ack', requestId: frame.requestId, ack: 'delivered' }), random.int(10, 500));
      }
    };
    if (behaviour === 'fast') reply(true);
    else if (behaviour === 'slow') setTimeout(() => reply(true), random.int(100, 2500));
    // After most calls have given up (their timeout is at most 4 s unless long).
    else if (behaviour === 'late') setTimeout(() => reply(random.chance(0.8)), random.int(4000, 7000));
    else if (behaviour === 'fail') reply(false);
    else if (behaviour === 'drop') ws.terminate();
  }

  stop() {
    this.running = false;
    for (const device of this.devices) device.ws?.terminate();
  }
}

function send(ws, frame) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame), () => {});
}

// ---------------------------------------------------------------------------
// Sends and the checks on them.

class Sends {
  constructor(nodes, fleet, random, violations) {
    this.nodes = nodes;
    this.fleet = fleet;
    this.random = random;
    this.violations = violations;
    this.all = [];
    this.recentIdempotent = [];
    this.began = Date.now();
    /** When Redis came back from each restart (to tell the lost-keys case apart). */
    this.redisRestarts = [];
  }

  issue() {
    const slot = this.random.pick(this.nodes.alive());
    if (!slot) return;
    const timeout = this.random.chance(0.15) ? this.random.int(REQUEST_TIMEOUT_MS, LONG_TIMEOUT_MS) : this.random.int(500, REQUEST_TIMEOUT_MS);
    const data = { phoneNumber: `+1555${this.random.int(1000000, 9999999)}`, message: `chaos ${this.all.length}`, timeout };
    if (this.random.chance(0.2)) data.deviceSelectionStrategy = 'random';
    const record = { slot, nodeId: slot.nodeId, key: this.random.pick(KEYS), timeout, sentAt: Date.now(), settlements: 0 };
    if (this.random.chance(0.2)) {
      // Idempotent sends, half of them repeating a recent key on any process (a few of
      // those with another text: IDEMPOTENCY_KEY_REUSED, nothing sent).
      const reuse = this.recentIdempotent.length > 0 && this.random.chance(0.5);
      const idempotent = reuse
        ? this.random.pick(this.recentIdempotent)
        : { key: `idem-${this.all.length}`, apiKey: record.key, phoneNumber: data.phoneNumber };
      if (!reuse) this.recentIdempotent = [...this.recentIdempotent.slice(-4), idempotent];
      // The same message: recipient and text (another recipient would be another message).
      data.phoneNumber = idempotent.phoneNumber;
      record.key = idempotent.apiKey;
      record.idempotencyKey = idempotent.key;
      data.idempotencyKey = idempotent.key;
      data.message = `${IDEMPOTENT_PREFIX}${idempotent.key}`;
      if (reuse && this.random.chance(0.1)) {
        data.message += ' (another text)';
        record.reused = true;
      }
    }
    this.all.push(record);
    slot.node.send('message', record.key, data).then(
      (value) => this.settled(record, { ok: true, value }),
      (error) => this.settled(record, { ok: false, error }),
    );
  }

  settled(record, outcome) {
    if (!outcome.ok && outcome.error.processExited) {
      record.callerDied = true;
      return;
    }
    record.settlements += 1;
    if (record.settlements > 1) this.violations.add('a send settled twice', record.nodeId);
    record.settledAt = Date.now();
    record.outcome = outcome;
  }

  pending() {
    return this.all.filter((r) => !r.callerDied && r.settlements === 0 && !r.slot.diedAt).length;
  }

  check() {
    const stats = { sent: this.all.length, judged: 0, resolved: 0, remote: 0, callerDied: 0, idempotentRepeats: 0, idempotencyLostWithRedis: [], byCode: {} };
    const v = this.violations;
    for (const record of this.all) {
      if (record.callerDied || (record.slot.diedAt && record.settlements === 0)) {
        stats.callerDied += 1;
        continue;
      }
      stats.judged += 1;
      if (record.settlements === 0) {
        v.add('a send never settled', `on ${record.nodeId}, timeout ${record.timeout} ms`);
        continue;
      }
      const took = record.settledAt - record.sentAt;
      // A duplicate settles when the first call with its key does, whatever its own timeout.
      const limit = (record.idempotencyKey ? LONG_TIMEOUT_MS : record.timeout) + settings.leaseMs + SLACK_MS;
      if (took > limit) v.add(`a send settled later than timeout + leaseMs + ${SLACK_MS} ms`, `${took} ms > ${limit} ms on ${record.nodeId}`);
      const { ok, value, error } = record.outcome;
      const events = this.outcomeEvents(ok ? value.requestId : error.details?.requestId);
      // Another text with a key whose message may have gone out must be refused (a key whose
      // calls all failed before writing is free: another text may take it).
      const used = this.all.some(
        (r) => r !== record && r.idempotencyKey === record.idempotencyKey && r.settledAt < record.sentAt && (r.outcome?.ok || r.outcome?.error?.details?.sent === true),
      );
      if (record.reused && used && !(!ok && ['IDEMPOTENCY_KEY_REUSED', 'CLUSTER_UNAVAILABLE'].includes(error.code))) {
        v.add('a reused idempotencyKey with another text was not refused', `${record.idempotencyKey}: ${describeOutcome(record)}`);
      }
      if (ok && record.reused) {
        // Another text that took a free key: its own message (its text names it apart).
        stats.resolved += 1;
        continue;
      }
      if (ok) {
        stats.resolved += 1;
        const command = this.fleet.commands.get(value.requestId);
        if (!command) v.add('a send resolved with a requestId no extension received', value.requestId);
        else {
          if (command.answer !== 'success') v.add('a send resolved although its extension did not answer success', `${value.requestId}: ${command.answer}`);
          if (value.messageId !== `m-${value.requestId}`) v.add("a send resolved with another command's messageId", `${value.requestId}: ${value.messageId}`);
          if (command.nodeId !== record.nodeId) stats.remote += 1;
        }
        // A duplicate fires no event again: the first call's is the only one.
        if (value.duplicate) {
          // The first's own: message-sent, or send-failed then a late message-sent.
          if (events.filter((e) => e.type === 'message-sent').length !== 1 || events.length > 2) {
            v.add('a duplicate resolved for a request without exactly one message-sent', `${value.requestId}: ${JSON.stringify(events)}`);
          }
        } else if (events.length !== 1 || events[0].nodeId !== record.nodeId || events[0].type !== 'message-sent' || events[0].late) {
          v.add('a resolved send has not exactly one message-sent, on its caller', `${value.requestId}: ${JSON.stringify(events)}`);
        }
      } else {
        const code = error.code ?? 'NO_CODE';
        stats.byCode[code] = (stats.byCode[code] ?? 0) + 1;
        if (!LEGAL_REJECTIONS.has(code)) v.add(`a send rejected with ${code}`, error.message);
        if (code === 'IDEMPOTENCY_KEY_REUSED') {
          // Unless another text took the key while it was free: called before this call
          // settled (calls of one key that wait, for a Redis that lost its records to be
          // written again say, take it in no particular order).
          const otherText = this.all.some((r) => r.reused && r.idempotencyKey === record.idempotencyKey && r.sentAt < record.settledAt);
          if (!record.reused && !otherText) v.add('IDEMPOTENCY_KEY_REUSED for the same message', this.describeKey(record.idempotencyKey));
          continue;
        }
        if (record.reused) continue;
        if (code === 'EXTENSION_ERROR' && this.fleet.commands.get(error.details?.requestId)?.answer !== 'failure') {
          v.add('EXTENSION_ERROR without an extension failure', error.details?.requestId);
        }
        // A failure after a device was chosen names its request (these codes always come
        // after the choice; others, CLUSTER_UNAVAILABLE say, may come before or after) and
        // has exactly one send-failed, on the caller; one before the choice has none.
        const requestId = typeof error.details?.requestId === 'string' && error.details.requestId !== '' ? error.details.requestId : null;
        if (['EXTENSION_ERROR', 'REQUEST_TIMEOUT', 'CONNECTION_LOST'].includes(code) && !requestId) {
          v.add(`a ${code} without its requestId in details`, JSON.stringify(error.details));
        } else if (error.details?.duplicate) {
          if (events.filter((e) => !e.late).length > 1) v.add('a request rejected for duplicates has more than one outcome event', JSON.stringify(events));
        } else if (!onlyLateAfter(events, requestId, record.nodeId)) {
          v.add(
            requestId ? `a ${code} has not exactly one send-failed, on its caller` : `a ${code} before any device was chosen has an outcome event`,
            `${requestId}: ${JSON.stringify(events)}`,
          );
        }
      }
    }
    for (const [requestId, command] of this.fleet.commands) {
      if (command.deliveries > 1) v.add('a command was delivered more than once', requestId);
    }
    const lostWithRedis = new Set();
    for (const [key, requestIds] of this.fleet.idempotentDeliveries) {
      if (requestIds.length > 1) {
        const calls = this.all.filter((r) => r.idempotencyKey === key);
        const described = `${key}: ${requestIds.join(', ')}; called on ${calls
          .map((r) => `${r.nodeId} at +${r.sentAt - this.began} ms -> ${describeOutcome(r)}`)
          .join(', ')}; Redis restarted at ${this.redisRestarts.map((at) => `+${at - this.began} ms`).join(', ') || 'never'}`;
        // A Redis restarted empty (this run's Redis keeps nothing) between the first call
        // and a repeat forgets the key unless the process that recorded it (the caller of
        // the command that went out first) lived through the restart and wrote its records
        // again (within a lease of Redis coming back): only a recorder that died may lose
        // it (counted and shown, not a violation).
        const first = Math.min(...calls.map((r) => r.sentAt));
        const last = Math.max(...calls.map((r) => r.sentAt));
        const recorder = calls.find((r) => requestIdOf(r) === requestIds[0]) ?? calls.find((r) => r.sentAt === first);
        const livedThrough = (at) => !recorder.slot.diedAt || recorder.slot.diedAt > at + settings.leaseMs;
        const restarts = this.redisRestarts.filter((at) => at > first && at <= last + REQUEST_TIMEOUT_MS);
        if (restarts.length > 0 && !restarts.every(livedThrough)) {
          stats.idempotencyLostWithRedis.push(described);
          lostWithRedis.add(key);
        } else {
          v.add('an idempotencyKey went out more than once', described);
        }
      }
    }
    const groups = new Map();
    for (const record of this.all) {
      if (record.idempotencyKey && !record.reused && record.outcome?.ok) {
        groups.set(record.idempotencyKey, [...(groups.get(record.idempotencyKey) ?? []), record.outcome.value]);
      }
    }
    for (const [key, results] of groups) {
      stats.idempotentRepeats += results.filter((r) => r.duplicate).length;
      if (lostWithRedis.has(key)) continue;
      if (new Set(results.map((r) => `${r.requestId} ${r.messageId}`)).size > 1) {
        v.add('sends with one idempotencyKey resolved differently', `${key}: ${results.map((r) => r.requestId).join(', ')}`);
      }
      if (results.filter((r) => !r.duplicate).length > 1) v.add('more than one send of an idempotencyKey resolved as the first', key);
    }
    if (stats.remote === 0) v.add('no send resolved through another process (the run did not exercise the cluster)');
    return stats;
  }

  /** The calls of an idempotencyKey and the Redis restarts, for a violation's example. */
  describeKey(key) {
    const calls = this.all.filter((r) => r.idempotencyKey === key);
    return `${key}: called on ${calls
      .map((r) => `${r.nodeId}${r.reused ? ' (another text)' : ''} at +${r.sentAt - this.began} ms -> ${describeOutcome(r)}`)
      .join(', ')}; Redis restarted at ${this.redisRestarts.map((at) => `+${at - this.began} ms`).join(', ') || 'never'}`;
  }

  /** `*-sent` / `send-failed` events about `requestId`, on any process ever started. */
  outcomeEvents(requestId) {
    if (!requestId) return [];
    const found = [];
    for (const [nodeId, slot] of this.nodes.all) {
      for (const event of slot.node.events) {
        if (event.requestId === requestId && (event.type.endsWith('-sent') || event.type === 'send-failed')) {
          found.push({ nodeId, type: event.type, late: event.late === true });
        }
      }
    }
    return found;
  }

  /**
   * Every record ends at what the extension told: for a command answered on an open
   * connection of a process that still runs (the same one), to a caller that still runs,
   * the caller's getMessageStatus says 'sent' or 'failed' as the answer was (late answers
   * included). Returns how many were checked.
   */
  async checkRecords() {
    let checked = 0;
    const endedAt = Date.now();
    for (const record of this.all) {
      if (record.callerDied || record.slot.diedAt || !record.slot.alive || !record.outcome) continue;
      const requestId = record.outcome.ok ? record.outcome.value.requestId : record.outcome.error.details?.requestId;
      if (typeof requestId !== 'string') continue;
      if (record.outcome.ok && record.outcome.value.duplicate) continue;
      const command = this.fleet.commands.get(requestId);
      if (!command || command.answer === 'none' || !command.holder?.alive || command.holder.diedAt) continue;
      if (endedAt - command.answeredAt < 2000) continue;
      checked += 1;
      const want = command.answer === 'success' ? 'sent' : 'failed';
      const status = await record.slot.node.request('status', { lookup: requestId }).catch((error) => ({ error: error.message }));
      if (status?.state !== want) {
        // Where each part happened: a duplicate's caller may not be the first call's.
        const first = this.all.find((r) => r !== record && requestIdOf(r) === requestId);
        const where = `asked ${record.nodeId}, answered on ${command.holder.nodeId}${first ? `, first called on ${first.nodeId}${first.slot.diedAt ? ` (killed at +${first.slot.diedAt - this.began} ms)` : ''} at +${first.sentAt - this.began} ms (${describeOutcome(first)})` : ''}`;
        this.violations.add("a send's record does not end at what its extension told", `${requestId}: answered ${command.answer} at +${command.answeredAt - this.began} ms, record ${JSON.stringify(status)}; call ${describeOutcome(record)} at +${record.sentAt - this.began} ms; ${where}; Redis restarted at ${this.redisRestarts.map((at) => `+${at - this.began} ms`).join(', ') || 'never'}`);
      }
    }
    return checked;
  }
}

/**
 * A failure's outcome events: one `send-failed` on the caller when a device was chosen
 * (none before), then at most one late `*-sent` there.
 */
function onlyLateAfter(events, requestId, callerNodeId) {
  const failed = events.filter((e) => e.type === 'send-failed');
  const late = events.filter((e) => e.type !== 'send-failed');
  if (failed.length !== (requestId ? 1 : 0) || late.length > (requestId ? 1 : 0)) return false;
  return events.every((e) => e.nodeId === callerNodeId) && late.every((e) => e.late);
}

/** The request id a call's own command had (not a duplicate's), if its outcome says. */
function requestIdOf(record) {
  const { ok, value, error } = record.outcome ?? {};
  if (ok) return value.duplicate ? null : value.requestId;
  return error?.details?.duplicate ? null : error?.details?.requestId ?? null;
}

/** How a send ended, in a few words: `resolved <requestId> (duplicate)` or `<code> <requestId>`. */
function describeOutcome(record) {
  if (record.callerDied) return 'caller killed';
  if (!record.outcome) return 'unsettled';
  const { ok, value, error } = record.outcome;
  if (ok) return `resolved ${value.requestId}${value.duplicate ? ' (duplicate)' : ''} after ${record.settledAt - record.sentAt} ms`;
  return `${error.code} ${error.details?.requestId ?? ''} after ${record.settledAt - record.sentAt} ms`.replace('  ', ' ');
}

// ---------------------------------------------------------------------------
// Orchestration.

async function main() {
  const skipped = redisSkipReason();
  if (skipped) {
    process.stderr.write(`chaos:cluster: ${skipped}\n`);
    process.exit(2);
  }
  const random = seeded(settings.seed);
  const violations = new Violations();
  const redis = await startRedis();
  const nodes = new Nodes(redis, violations);
  let fleet = null;
  let redisRestarts = 0;
  let stats = null;
  try {
    for (let i = 0; i < settings.nodes; i++) await nodes.startSlot(i);
    fleet = new Fleet(nodes, random.fork(), violations);
    fleet.start(settings.extensions);
    const sends = new Sends(nodes, fleet, random.fork(), violations);
    // Let sessions spread before the first send: NO_ACTIVE_DEVICE is legal but teaches little.
    await sleep(1500);

    const began = Date.now();
    const endAt = began + settings.durationMs;
    let owed = 0;
    const sender = setInterval(() => {
      owed += settings.rate / 10;
      for (; owed >= 1; owed -= 1) sends.issue();
    }, 100);

    const killer = (async () => {
      const chaos = random.fork();
      while (Date.now() < endAt - 4000) {
        await sleep(chaos.int(4000, 8000));
        if (Date.now() >= endAt - 4000) break;
        const alive = nodes.alive();
        if (alive.length < 2) continue;
        const victim = chaos.pick(alive);
        await nodes.kill(victim);
        await sleep(chaos.int(300, 3000));
        await nodes.startSlot(victim.index);
      }
    })();
    const redisChaos = (async () => {
      const chaos = random.fork();
      await sleep(Math.floor(settings.durationMs * (0.3 + 0.4 * chaos.unit())));
      if (Date.now() >= endAt - 3000) return;
      if (chaos.chance(0.5)) await redis.kill();
      else await redis.stop();
      await sleep(chaos.int(200, 2000));
      await redis.spawn();
      redisRestarts += 1;
      sends.redisRestarts.push(Date.now());
    })();

    await sleep(settings.durationMs);
    clearInterval(sender);
    await Promise.all([killer, redisChaos]);

    // Everything in flight settles by its timeout (+ leaseMs for a lost holder).
    const settleBy = Date.now() + REQUEST_TIMEOUT_MS + settings.leaseMs + SLACK_MS + 5000;
    while (sends.pending() > 0 && Date.now() < settleBy) await sleep(100);
    await sleep(1000); // events travel over IPC after the replies
    stats = sends.check();
    // Late answers still travelling: their timers ran out by now (at most 7 s after a call).
    stats.recordsChecked = await sends.checkRecords();

    // The survivors converge on the sessions that are really there.
    fleet.running = false;
    await sleep(500);
    const expected = () =>
      fleet.devices
        .filter((d) => d.sessionId && d.ws?.readyState === WebSocket.OPEN)
        .map((d) => d.sessionId)
        .sort();
    const views = async () =>
      Promise.all(
        nodes.alive().map(async (slot) => ({
          nodeId: slot.nodeId,
          sessions: (await slot.node.request('all-sessions').catch(() => [])).map((s) => s.sessionId).sort(),
        })),
      );
    const convergeBy = Date.now() + settings.leaseMs + 10_000;
    let last = [];
    for (;;) {
      last = await views();
      const want = JSON.stringify(expected());
      if (last.every((view) => JSON.stringify(view.sessions) === want)) break;
      if (Date.now() > convergeBy) {
        violations.add('the processes do not agree on the sessions left', `want ${want}; ${JSON.stringify(last)}`);
        break;
      }
      await sleep(200);
    }
  } finally {
    fleet?.stop();
    await nodes.stopAll();
    await redis.dispose();
  }

  const summary = [
    `chaos:cluster: seed ${settings.seed}, ${settings.durationMs / 1000} s, ${settings.nodes} processes, ${settings.extensions} extensions, ${settings.rate} sends/s, leaseMs ${settings.leaseMs}`,
  ];
  if (stats) {
    const codes = Object.entries(stats.byCode)
      .sort((a, b) => b[1] - a[1])
      .map(([code, n]) => `${code} ${n}`)
      .join(', ');
    summary.push(
      `  sends ${stats.sent}: judged ${stats.judged} (caller killed: ${stats.callerDied}); resolved ${stats.resolved} (${stats.remote} through another process, ${stats.idempotentRepeats} idempotent repeats), rejected ${stats.judged - stats.resolved} (${codes || 'none'}); records checked against the extensions' word: ${stats.recordsChecked}`,
    );
  }
  summary.push(`  processes killed ${nodes.kills}, Redis restarts ${redisRestarts}`);
  for (const lost of stats?.idempotencyLostWithRedis ?? []) {
    summary.push(`  note: an idempotencyKey went out again after Redis restarted empty, its recording process killed: ${lost}`);
  }
  if (fleet) {
    const answers = Object.entries(fleet.stats.answers)
      .map(([b, n]) => `${b} ${n}`)
      .join(', ');
    summary.push(`  fleet: ${fleet.stats.connects} connections, ${fleet.stats.moves} moves; answers: ${answers || 'none'}`);
  }
  summary.push(violations.size === 0 ? '  OK: no violation' : `  FAILED: ${violations.size} violation(s)`);
  for (const line of violations.lines().slice(0, 20)) summary.push(`    - ${line}`);
  process.stdout.write(`${summary.join('\n')}\n`);
  process.exit(violations.size === 0 ? 0 : 1);
}

main().catch((error) => {
  process.stderr.write(`chaos:cluster failed: ${error.stack}\n`);
  process.exit(3);
});
