'use strict';
// `npm run chaos`: a seeded chaos run against a real gateway on loopback (README "Migrating from v1", hostile and slow peers).
//
//   node scripts/chaos.js [--seed 1] [--duration 30] [--extensions 60] [--rate 100]
//                         [--max-rss-mb 512] [--verbose]
//
// Two processes: this one runs a fleet of simulated extensions, most of them doing bad
// things (disconnect mid-request, answer twice or for a foreign id, garbage and
// oversized frames, stop or slow reading (also with big commands in flight), floods,
// reconnect storms with wrong keys, keys whose validator hangs or throws, stalled
// handshakes), and a few good ones (which answer some sends only after their call gave
// up, and give such late results again after reconnecting, as the client SDK does); a
// child process runs the gateway, sends at a fixed rate with random timeouts (some longer
// than requestTimeout), some with an idempotencyKey retried (a few with another text),
// and calls stop()/start() at random. At the end the child checks its invariants (every
// send settled once; every late result made its record 'sent'; calls with one key
// settled alike) and reports; this process adds that per idempotencyKey a command reached
// extensions at most once, and whether the child crashed or failed to exit by itself,
// prints a summary and exits 1 on any violation.
//
// The seed fixes every random choice (behaviours, timings, what is sent, when the
// gateway restarts); the interleaving of real sockets still varies from run to run,
// so a violation names the seed to re-run with, not an exact replay.
const { fork } = require('node:child_process');
const crypto = require('node:crypto');
const net = require('node:net');
const { freePort } = require('../__test__/free-port');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : process.argv[at + 1];
}

function numberOption(name, fallback) {
  const value = Number(option(name, fallback));
  if (!Number.isFinite(value) || value < 0) {
    process.stderr.write(`chaos: ${name} must be a non-negative number\n`);
    process.exit(2);
  }
  return value;
}

const settings = {
  seed: numberOption('--seed', 1) >>> 0,
  durationMs: numberOption('--duration', 30) * 1000,
  extensions: Math.max(4, Math.floor(numberOption('--extensions', 60))),
  rate: numberOption('--rate', 100),
  maxRssMb: numberOption('--max-rss-mb', 512),
  verbose: process.argv.includes('--verbose'),
};

/** mulberry32: small, fast, good enough to pick behaviours from a seed. */
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (list) => list[Math.floor(next() * list.length)],
    /** Picks a key of `weights` ({ name: weight }) in proportion to its weight. */
    weighted(weights) {
      const entries = Object.entries(weights);
      let roll = next() * entries.reduce((sum, [, w]) => sum + w, 0);
      for (const [name, weight] of entries) {
        roll -= weight;
        if (roll < 0) return name;
      }
      return entries[entries.length - 1][0];
    },
  };
}

const GOOD_KEY = 'good-key-0123456789';
const CHAOS_KEYS = Array.from({ length: 6 }, (_, i) => `chaos-key-${i}-0123456789`);
const UNKNOWN_KEY = 'nobody-key-0123456789';
/** The key of extensions that stop reading for seconds while big commands are in flight. */
const LAGGING_KEY = 'lagging-key-0123456789';
const PATH = '/wa-ext-ws';
const MAX_PAYLOAD = 256 * 1024;
/** What stop() may take (README "Methods"), plus scheduling slack on a busy 2-core machine. */
const STOP_LIMIT_MS = 5000 + 500;
const PNG_1x1 =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

// ---------------------------------------------------------------------------
// The gateway's process: sends, restarts, invariants.

const ALLOWED_REJECTIONS = new Set([
  'VALIDATION_ERROR',
  'NO_ACTIVE_DEVICE',
  'REQUEST_TIMEOUT',
  'CONNECTION_LOST',
  'EXTENSION_ERROR',
  'GATEWAY_SHUTDOWN',
  'BACKPRESSURE',
  'QUEUE_FULL',
  'IDEMPOTENCY_KEY_REUSED',
]);
/** Texts the fleet reads: an idempotent send names its key; a late one is answered late. */
const IDEMPOTENT_PREFIX = 'chaos idem ';
const LATE_PREFIX = 'chaos late ';
const OUTCOME_EVENTS = new Set(['message-sent', 'image-sent', 'video-sent', 'document-sent', 'send-failed']);

async function runHost(port) {
  const { WhatsAppGateway } = require('..');
  const random = rng(settings.seed * 2 + 1);
  /** Rule broken -> { count, example }: one line per rule in the summary. */
  const broken = new Map();
  const violate = (rule, example = '') => {
    const entry = broken.get(rule) ?? { count: 0, example };
    entry.count += 1;
    broken.set(rule, entry);
  };
  const stats = {
    sent: 0,
    resolved: 0,
    rejected: 0,
    byCode: {},
    good: { strict: 0, strictOk: 0 },
    lagging: { sent: 0, ok: 0, backpressure: 0 },
    stops: 0,
    maxStopMs: 0,
    maxRssMb: 0,
    serverErrors: 0,
    callbackErrors: 0,
  };
  const outcomesByRequest = new Map();
  const bigImage = `data:image/png;base64,${Buffer.concat([
    Buffer.from(PNG_1x1.split(',')[1], 'base64'),
    crypto.randomBytes(600 * 1024),
  ]).toString('base64')}`;

  const validateApiKey = (apiKey) => {
    if (apiKey === GOOD_KEY || apiKey === LAGGING_KEY || CHAOS_KEYS.includes(apiKey)) return { valid: true, userId: apiKey.slice(0, 10) };
    if (apiKey.startsWith('hang-')) return new Promise(() => {});
    if (apiKey.startsWith('throw-')) throw new Error('validator exploded');
    if (apiKey.startsWith('reject-')) return Promise.reject(new Error('validator rejected'));
    if (apiKey.startsWith('slow-')) {
      return new Promise((resolve) => setTimeout(() => resolve({ valid: true }), random.int(0, 3000)));
    }
    return { valid: false, reason: 'unknown key' };
  };
  const gateway = new WhatsAppGateway({
    port,
    host: '127.0.0.1',
    validateApiKey,
    heartbeatInterval: 1000,
    heartbeatTimeout: 5000,
    requestTimeout: 3000,
    authTimeout: 2000,
    maxPayload: MAX_PAYLOAD,
    maxSessionsPerKey: 10,
    maxQueuedBytes: 4 * 1024 * 1024,
    // Low enough that reconnect storms and stalled handshakes meet it.
    maxPendingAuth: 32,
    onMessageLog: (event) => {
      if (!OUTCOME_EVENTS.has(event.type)) return;
      const seen = outcomesByRequest.get(event.requestId);
      // The one event allowed after a send-failed: the late *-sent of its late truth.
      const lateAfterFailure = seen === 'send-failed' && event.late === true && event.type !== 'send-failed';
      if (seen && !lateAfterFailure) violate('a request has two outcome events', `${event.requestId}: ${seen}, ${event.type}`);
      if (event.late === true && seen !== 'send-failed') violate('a late *-sent without a failure before it', event.requestId);
      outcomesByRequest.set(event.requestId, event.late ? `${seen}+late` : event.type);
    },
    onError: (error) => {
      if (error.code === 'SERVER_ERROR') {
        stats.serverErrors += 1;
        violate('SERVER_ERROR reported to onError', error.message);
      } else if (error.code === 'CALLBACK_ERROR') {
        stats.callbackErrors += 1;
      }
    },
  });

  /** idempotencyKey -> { text, results: [{ requestId, messageId }] }, and recent keys. */
  const idempotent = new Map();
  let recentKeys = [];
  stats.idempotent = { calls: 0, duplicates: 0, reused: 0 };
  let running = false;
  /** Time from which the good extensions have had time to reconnect. */
  let calmFrom = Infinity;
  /** Bumped at every stop(): a send that saw another epoch was disturbed by it. */
  let epoch = 0;
  let pending = 0;

  const send = () => {
    const roll = random.next();
    const key =
      roll < 0.35 ? GOOD_KEY : roll < 0.42 ? LAGGING_KEY : roll < 0.85 ? random.pick(CHAOS_KEYS) : roll < 0.95 ? UNKNOWN_KEY : null;
    const data = { phoneNumber: `+1555${random.int(1000000, 9999999)}` };
    let kind = 'message';
    if (key === null) {
      // Arguments a caller gets wrong: must reject with VALIDATION_ERROR, nothing else.
      Object.assign(data, random.pick([{ message: '' }, { message: 'x', timeout: 0.5 }, { message: 'x', timeout: -1 }]));
    } else if (key === LAGGING_KEY) {
      // Big commands (twice the data URL in the default dialect): a few fill maxQueuedBytes.
      kind = 'image';
      data.dataUrl = bigImage;
      data.caption = 'lagging';
    } else if (random.chance(0.15)) {
      kind = 'image';
      data.dataUrl = key !== GOOD_KEY && random.chance(0.3) ? bigImage : PNG_1x1;
      data.caption = 'chaos';
    } else {
      data.message = `chaos ${stats.sent}`;
    }
    if (key !== null && key !== GOOD_KEY && random.chance(0.7)) data.timeout = random.int(1, 8000);
    if (key === GOOD_KEY) data.timeout = 5000;
    if (key === LAGGING_KEY) {
      data.timeout = random.int(500, 6000);
      stats.lagging.sent += 1;
    }
    // What the call may wait, its timeout counted from the call (requestTimeout by default).
    const timeoutMs = typeof data.timeout === 'number' && data.timeout >= 1 ? data.timeout : 3000;
    // Sends a good extension answers only after they gave up: their late truth is checked.
    const late = key === GOOD_KEY && kind === 'message' && random.chance(0.08);
    if (late) {
      data.message = `${LATE_PREFIX}${stats.sent}`;
      data.timeout = 800;
    }
    // Idempotent sends, many of them retries of a recent key (a few with another text).
    let reusedWith = null;
    if (key !== null && key !== LAGGING_KEY && kind === 'message' && !late && random.chance(0.12)) {
      const again = recentKeys.length > 0 && random.chance(0.5) ? random.pick(recentKeys) : null;
      const idem = again ?? { key: `k${stats.sent}`, apiKey: key, phoneNumber: data.phoneNumber };
      if (!again) recentKeys = [...recentKeys.slice(-7), idem];
      data.phoneNumber = idem.phoneNumber;
      data.idempotencyKey = idem.key;
      data.message = `${IDEMPOTENT_PREFIX}${idem.key}`;
      if (again && random.chance(0.1)) {
        data.message += ' (another text)';
        reusedWith = idem.key;
      }
      stats.idempotent.calls += 1;
      return sendIdempotent(idem.apiKey, data, reusedWith);
    }
    // A good send is held to succeed when nothing around it may excuse a failure: the
    // gateway is running and settled after a restart, and a good session is ready.
    const strict =
      key === GOOD_KEY &&
      !late &&
      running &&
      Date.now() >= calmFrom &&
      gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive);
    const sentEpoch = epoch;
    const sentWhileStopped = !running;
    const sentAt = Date.now();
    stats.sent += 1;
    pending += 1;
    const call = kind === 'image' ? gateway.sendImage(key ?? GOOD_KEY, data) : gateway.sendMessage(key ?? GOOD_KEY, data);
    let settled = false;
    const settle = (error) => {
      if (settled) violate('a send settled twice');
      settled = true;
      pending -= 1;
      if (key === LAGGING_KEY && error === undefined) stats.lagging.ok += 1;
      if (error === undefined) stats.resolved += 1;
      else {
        stats.rejected += 1;
        const code = error?.code ?? 'NO_CODE';
        stats.byCode[code] = (stats.byCode[code] ?? 0) + 1;
        // A send waits for room on its session; it fails for the lack of it only at its timeout.
        if (code === 'BACKPRESSURE') {
          if (key === LAGGING_KEY) stats.lagging.backpressure += 1;
          const waited = Date.now() - sentAt;
          if (waited < timeoutMs - 20) violate('BACKPRESSURE before the send\'s timeout', `${waited} ms of ${timeoutMs}`);
          if (error.details?.sent !== false) violate('BACKPRESSURE without details.sent: false', JSON.stringify(error.details));
        }
        if (!ALLOWED_REJECTIONS.has(code)) violate(`a send rejected with ${code}`, error?.message);
        if (key === null && code !== 'VALIDATION_ERROR') violate(`invalid arguments rejected with ${code}`, error?.message);
      }
      if (sentWhileStopped && Date.now() - sentAt > 1000) {
        violate('a send made while stopped did not settle at once', `${Date.now() - sentAt} ms, ${error?.code ?? 'resolved'}`);
      }
      if (strict && epoch === sentEpoch) {
        stats.good.strict += 1;
        if (error === undefined) stats.good.strictOk += 1;
        else violate(`a send to a good extension failed with ${error?.code}`, error?.message);
      }
    };
    call.then(
      () => settle(undefined),
      (error) => settle(error),
    );
  };

  /** Keys whose command may have been written (a call resolved, or rejected with sent: true). */
  const maybeWritten = new Set();
  /** Keys another text was tried with. */
  const otherTextTried = new Set();

  /** A send with an idempotencyKey: settles once; calls with one key settle alike. */
  function sendIdempotent(apiKey, data, reusedWith) {
    stats.sent += 1;
    pending += 1;
    let settled = false;
    // A key whose calls all failed before writing is free: another text may take it.
    const mustRefuse = reusedWith !== null && maybeWritten.has(data.idempotencyKey);
    if (reusedWith !== null) otherTextTried.add(data.idempotencyKey);
    const settle = (error, value) => {
      if (settled) violate('a send settled twice');
      settled = true;
      pending -= 1;
      if (error === undefined) stats.resolved += 1;
      else {
        stats.rejected += 1;
        const code = error?.code ?? 'NO_CODE';
        stats.byCode[code] = (stats.byCode[code] ?? 0) + 1;
        if (!ALLOWED_REJECTIONS.has(code)) violate(`a send rejected with ${code}`, error?.message);
      }
      if (reusedWith !== null) {
        stats.idempotent.reused += 1;
        // While stopped or stopping nothing is claimed: refused as not running (README "Errors").
        const refused = ['IDEMPOTENCY_KEY_REUSED', 'GATEWAY_SHUTDOWN', 'NO_ACTIVE_DEVICE'].includes(error?.code);
        if (mustRefuse && !refused) violate('a key reused for another text was not refused', `${reusedWith}: ${error?.code ?? 'resolved'}`);
        return;
      }
      if (value || error?.details?.sent === true) maybeWritten.add(data.idempotencyKey);
      // Unless another text took the key while it was free.
      if (error?.code === 'IDEMPOTENCY_KEY_REUSED' && !otherTextTried.has(data.idempotencyKey)) {
        violate('IDEMPOTENCY_KEY_REUSED for the same text', data.idempotencyKey);
      }
      if (value?.duplicate || error?.details?.duplicate) stats.idempotent.duplicates += 1;
      if (value) {
        const entry = idempotent.get(data.idempotencyKey) ?? [];
        entry.push(`${value.requestId} ${value.messageId}`);
        idempotent.set(data.idempotencyKey, entry);
        if (new Set(entry).size > 1) violate('calls with one idempotencyKey resolved differently', `${data.idempotencyKey}: ${entry.join(', ')}`);
      }
    };
    gateway.sendMessage(apiKey, data).then(
      (value) => settle(undefined, value),
      (error) => settle(error),
    );
  }

  /** Waits (bounded) until every request the good fleet answered late reads 'sent'. */
  async function checkLateTruth(requestIds) {
    const until = Date.now() + 8000;
    let left = requestIds;
    while (left.length > 0 && Date.now() < until) {
      left = left.filter((id) => gateway.getMessageStatus(id)?.state !== 'sent');
      if (left.length > 0) await sleep(100);
    }
    stats.lateChecked = requestIds.length;
    for (const id of left) {
      violate('a late result did not make its record sent', `${id}: ${JSON.stringify(gateway.getMessageStatus(id))}`);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const stop = async () => {
    running = false;
    calmFrom = Infinity;
    epoch += 1;
    const began = Date.now();
    let timer;
    const hung = new Promise((resolve) => {
      timer = setTimeout(() => resolve('hung'), STOP_LIMIT_MS * 4);
    });
    const outcome = await Promise.race([gateway.stop().then(() => 'done'), hung]);
    clearTimeout(timer);
    const took = Date.now() - began;
    stats.stops += 1;
    stats.maxStopMs = Math.max(stats.maxStopMs, took);
    if (outcome === 'hung') violate('stop() did not resolve', `not within ${STOP_LIMIT_MS * 4} ms`);
    else if (took > STOP_LIMIT_MS) violate(`stop() took over ${STOP_LIMIT_MS} ms`, `${took} ms`);
    const health = gateway.getHealth();
    if (health.activeSessions !== 0 || (health.connections ?? 0) !== 0) {
      violate('sessions or connections left after stop()', `${health.activeSessions} sessions, ${health.connections} connections`);
    }
  };
  const start = async () => {
    try {
      await gateway.start();
    } catch (error) {
      violate('start() failed', `${error.code} ${error.message}`);
      return;
    }
    running = true;
    calmFrom = Date.now() + 3000;
    process.send({ type: 'started' });
  };

  const sampler = setInterval(() => {
    stats.maxRssMb = Math.max(stats.maxRssMb, process.memoryUsage().rss / 1048576);
  }, 250);

  let finishing = false;
  let lateAnswered = [];
  process.on('message', (message) => {
    if (message.type === 'finish') {
      finishing = true;
      lateAnswered = message.lateAnswered ?? [];
    }
  });

  await start();
  // A fixed rate, on a 10 ms tick that carries fractions over.
  let owed = 0;
  const sender = setInterval(() => {
    owed += settings.rate / 100;
    for (; owed >= 1; owed -= 1) send();
  }, 10);

  const endAt = Date.now() + settings.durationMs;
  while (!finishing && Date.now() < endAt + 60_000) {
    const nextRestart = Date.now() + random.int(4000, 9000);
    while (!finishing && Date.now() < nextRestart) await sleep(50);
    if (finishing || nextRestart > endAt - 3000) break;
    await stop();
    await sleep(random.int(0, 1500));
    await start();
  }
  while (!finishing) await sleep(50);
  clearInterval(sender);
  if (running) await checkLateTruth(lateAnswered);
  await stop();

  // Every send settles: stop() rejects what was pending with GATEWAY_SHUTDOWN.
  const until = Date.now() + 10_000;
  while (pending > 0 && Date.now() < until) await sleep(50);
  if (pending > 0) violate('sends never settled', `${pending} pending`);
  if (stats.sent !== stats.resolved + stats.rejected) {
    violate('sent != resolved + rejected', `${stats.sent} != ${stats.resolved} + ${stats.rejected}`);
  }
  if (stats.good.strict < 10) violate('too few sends to good extensions could be judged', String(stats.good.strict));
  clearInterval(sampler);
  stats.maxRssMb = Math.round(Math.max(stats.maxRssMb, process.memoryUsage().rss / 1048576));
  if (stats.maxRssMb > settings.maxRssMb) violate(`RSS over ${settings.maxRssMb} MB`, `${stats.maxRssMb} MB`);
  const violations = [...broken].map(([rule, { count, example }]) => `${rule} (x${count}${example ? `; e.g. ${example}` : ''})`);
  process.send({ type: 'report', stats, violations });
  // Nothing of the gateway may keep this process alive now: it must exit by itself.
  process.disconnect();
}

// ---------------------------------------------------------------------------
// The fleet: simulated extensions, good and bad.

const WebSocket = require('ws');

class Fleet {
  constructor(port, random) {
    this.port = port;
    this.random = random;
    this.running = true;
    this.sockets = new Set();
    this.recentIds = [];
    this.stats = { connects: 0, refused: 0, goodAnswers: 0, lateAnswers: 0, behaviours: {}, closeCodes: {}, failures: {} };
    /** Commands received per idempotent text (the text names the key). */
    this.idempotentCommands = new Map();
    /** requestId -> when a good extension gave its late answer. */
    this.lateAnswered = new Map();
    /** Late results to give again after the next authentication of a good extension. */
    this.lateResults = [];
    /** The good extensions' authenticated sockets. */
    this.goodSockets = new Set();
    // The unknown type is echoed in the error reply: replies as large as the flood.
    this.flood = JSON.stringify({ type: `chaos-flood-${'x'.repeat(200 * 1024)}` });
    this.oversized = JSON.stringify({ type: 'status', pad: 'y'.repeat(MAX_PAYLOAD + 1024) });
    this.preAuthBig = JSON.stringify({ type: 'auth', apiKey: GOOD_KEY, pad: 'z'.repeat(64 * 1024) });
  }

  url() {
    return `ws://127.0.0.1:${this.port}${PATH}`;
  }

  /** Runs one slot until the fleet stops: connect, behave, wait, again. */
  async slot(index, good) {
    const random = rng(this.random.int(1, 2 ** 31));
    while (this.running) {
      const behaviour = good
        ? 'good'
        : random.weighted({
            flaky: 5,
            garbage: 2,
            preAuthGarbage: 1,
            stopReading: 2,
            floodNoRead: 1,
            slowReader: 2,
            laggingReader: 2,
            wrongKeyStorm: 1,
            hangingValidator: 1,
            silentPreAuth: 1,
            halfOpenHttp: 1,
            abrupt: 2,
          });
      this.stats.behaviours[behaviour] = (this.stats.behaviours[behaviour] ?? 0) + 1;
      try {
        await this[behaviour](random, index);
      } catch (error) {
        if (settings.verbose) this.stats.failures[`${behaviour}: ${error.message}`] = (this.stats.failures[`${behaviour}: ${error.message}`] ?? 0) + 1;
        // Refused upgrades, resets, closes mid-write: all part of the game.
      }
      await sleep(good ? random.int(50, 250) : random.int(20, 500));
    }
  }

  /** Opens an extension socket; resolves with it once open, or throws. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url(), { perMessageDeflate: false, handshakeTimeout: 3000 });
      this.sockets.add(ws);
      ws.closedP = new Promise((done) =>
        ws.on('close', (code) => {
          this.sockets.delete(ws);
          this.stats.closeCodes[code] = (this.stats.closeCodes[code] ?? 0) + 1;
          done(code);
        }),
      );
      ws.on('error', () => {});
      ws.once('open', () => {
        this.stats.connects += 1;
        resolve(ws);
      });
      ws.once('unexpected-response', (req) => {
        this.stats.refused += 1;
        req.destroy();
        reject(new Error('refused'));
      });
      ws.once('error', reject);
      ws.once('close', () => reject(new Error('closed')));
    });
  }

  /** Auth (v1 dialect) and a ready status; resolves with the first reply frame type. */
  async authenticate(ws, apiKey) {
    const reply = new Promise((resolve) => {
      const onMessage = (data) => {
        const frame = safeParse(data);
        if (frame?.type === 'auth-success' || frame?.type === 'error') {
          ws.off('message', onMessage);
          resolve(frame.type);
        }
      };
      ws.on('message', onMessage);
      ws.closedP.then(() => resolve('closed'));
    });
    ws.send(JSON.stringify({ type: 'auth', apiKey, data: { extensionVersion: '9.9.9', browser: 'Chaos' } }));
    const type = await reply;
    if (type === 'auth-success') ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
    return type === 'auth-success';
  }

  /** Calls `onCommand(frame)` for commands, answers pings; returns when the socket closes. */
  serve(ws, onCommand) {
    ws.on('message', (data) => {
      const frame = safeParse(data);
      if (!frame) return;
      if (frame.type === 'ping') send(ws, { type: 'heartbeat' });
      else if (typeof frame.type === 'string' && frame.type.startsWith('send-')) {
        this.recentIds.push(frame.requestId);
        if (this.recentIds.length > 256) this.recentIds.shift();
        const text = frame.data?.message;
        if (typeof text === 'string' && text.startsWith(IDEMPOTENT_PREFIX)) {
          this.idempotentCommands.set(text, (this.idempotentCommands.get(text) ?? 0) + 1);
        }
        onCommand(frame);
      }
    });
    return ws.closedP;
  }

  async good(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, GOOD_KEY))) return ws.close();
    // Late results, given again on this new connection (any session of the key will do).
    const kept = this.lateResults;
    this.lateResults = [];
    for (const frame of kept) send(ws, frame);
    this.goodSockets.add(ws);
    ws.closedP.then(() => this.goodSockets.delete(ws));
    await this.serve(ws, (frame) => {
      const result = { type: 'message-result', requestId: frame.requestId, success: true, messageId: `ok-${frame.requestId}` };
      if (frame.data?.message?.startsWith(LATE_PREFIX)) {
        // After its call gave up (800 ms): the send's late truth.
        setTimeout(() => {
          this.lateAnswered.set(frame.requestId, Date.now());
          this.stats.lateAnswers += 1;
          // On its own connection, else on another one of the key (as the client SDK does
          // once it has authenticated again), and again after the next authentication.
          const open = ws.readyState === WebSocket.OPEN ? ws : [...this.goodSockets].find((s) => s.readyState === WebSocket.OPEN);
          if (open) send(open, result);
          if (random.chance(0.5)) send(ws, { type: 'message-ack', requestId: frame.requestId, ack: 'delivered' });
          this.lateResults.push(result);
        }, random.int(1200, 2500));
        return;
      }
      setTimeout(() => {
        send(ws, result);
        this.stats.goodAnswers += 1;
      }, random.int(0, 30));
    });
  }

  async flaky(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    const answer = (requestId, fields = {}) =>
      send(ws, { type: 'message-result', requestId, success: true, messageId: 'flaky', ...fields });
    await this.serve(ws, (frame) => {
      const id = frame.requestId;
      switch (random.weighted({ ok: 4, fail: 1, twice: 1, foreign: 1, silent: 1, late: 1, vanish: 1 })) {
        case 'ok':
          return setTimeout(() => answer(id), random.int(0, 300));
        case 'fail':
          return answer(id, { success: false, error: 'flaky failure' });
        case 'twice':
          answer(id);
          return answer(id, { success: false, error: 'second answer' });
        case 'foreign':
          answer(random.pick(this.recentIds) ?? crypto.randomUUID());
          answer(crypto.randomUUID());
          return answer('not-a-uuid');
        case 'silent':
          return undefined;
        case 'late':
          return setTimeout(() => answer(id), random.int(3000, 6000));
        case 'vanish':
          return random.chance(0.5) ? ws.terminate() : ws.close();
      }
      return undefined;
    });
  }

  async garbage(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    const junk = () =>
      random.pick([
        'not json',
        '{"type":',
        '[]',
        'null',
        JSON.stringify({ type: 123 }),
        JSON.stringify({ type: 'message-result', requestId: { nested: true }, success: 'yes' }),
        JSON.stringify({ type: 'status', data: 'ready' }),
        JSON.stringify({ type: 'chaos-unknown', n: random.next() }),
        '['.repeat(5000) + ']'.repeat(5000),
        crypto.randomBytes(random.int(1, 4096)),
        random.chance(0.1) ? this.oversized : 'x',
      ]);
    const until = Date.now() + random.int(500, 5000);
    const served = this.serve(ws, () => {});
    while (this.running && ws.readyState === WebSocket.OPEN && Date.now() < until) {
      send(ws, junk());
      await sleep(random.int(1, 50));
    }
    ws.close();
    await served;
  }

  async preAuthGarbage(random) {
    const ws = await this.open();
    for (let i = random.int(1, 20); i > 0 && ws.readyState === WebSocket.OPEN; i--) {
      send(ws, random.pick(['garbage', '{}', JSON.stringify({ type: 'status' }), this.preAuthBig, this.oversized]));
      await sleep(random.int(1, 100));
    }
    ws.terminate();
  }

  /** Authenticates, then reads nothing more while heartbeating, until dropped or bored. */
  async stopReading(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    ws._socket.pause();
    const until = Date.now() + random.int(3000, 15000);
    while (this.running && ws.readyState === WebSocket.OPEN && Date.now() < until) {
      send(ws, { type: 'heartbeat' });
      await sleep(500);
    }
    ws.terminate();
  }

  /** Stops reading and floods unknown-type frames: every one earns an error reply. */
  async floodNoRead(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    ws._socket.pause();
    const until = Date.now() + random.int(2000, 10000);
    while (this.running && ws.readyState === WebSocket.OPEN && Date.now() < until) {
      if (ws.bufferedAmount < 2 * 1024 * 1024) send(ws, this.flood);
      await sleep(5);
    }
    ws.terminate();
  }

  async slowReader(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    const closed = this.serve(ws, (frame) =>
      send(ws, { type: 'message-result', requestId: frame.requestId, success: true, messageId: 'slow' }),
    );
    const until = Date.now() + random.int(2000, 12000);
    while (this.running && ws.readyState === WebSocket.OPEN && Date.now() < until) {
      ws._socket.pause();
      await sleep(random.int(100, 600));
      ws._socket.resume();
      await sleep(random.int(5, 30));
    }
    ws.close();
    await closed;
  }

  /**
   * Answers every command, but stops reading for seconds at a time (less than
   * heartbeatTimeout) while big commands are in flight: they must wait for room, not fail.
   */
  async laggingReader(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, LAGGING_KEY))) return ws.close();
    const closed = this.serve(ws, (frame) =>
      send(ws, { type: 'message-result', requestId: frame.requestId, success: true, messageId: 'lagging' }),
    );
    const until = Date.now() + random.int(4000, 15000);
    while (this.running && ws.readyState === WebSocket.OPEN && Date.now() < until) {
      await sleep(random.int(200, 1000));
      ws._socket.pause();
      await sleep(random.int(1000, 3500));
      ws._socket.resume();
    }
    ws.close();
    await closed;
  }

  async wrongKeyStorm(random) {
    const attempts = random.int(5, 40);
    await Promise.all(
      Array.from({ length: attempts }, async (_, i) => {
        const ws = await this.open().catch(() => null);
        if (!ws) return;
        const key = random.pick(['wrong-', 'throw-', 'reject-', '']) + `storm-${i}`;
        send(ws, { type: 'auth', apiKey: key, data: {} });
        await Promise.race([ws.closedP, sleep(3000)]);
        ws.terminate();
      }),
    );
  }

  async hangingValidator(random) {
    const ws = await this.open();
    send(ws, { type: 'auth', apiKey: random.pick(['hang-', 'slow-']) + random.int(0, 1e6), data: {} });
    await Promise.race([ws.closedP, sleep(6000)]);
    ws.terminate();
  }

  async silentPreAuth(random) {
    const ws = await this.open();
    await Promise.race([ws.closedP, sleep(random.int(100, 6000))]);
    ws.terminate();
  }

  /** A raw TCP client that sends part of an upgrade request and stalls. */
  async halfOpenHttp(random) {
    const socket = net.connect(this.port, '127.0.0.1');
    socket.on('error', () => {});
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.write(`GET ${PATH} HTTP/1.1\r\nHost: chaos\r\nUpgrade: websocket\r\n`);
    await Promise.race([closed, sleep(random.int(500, 6000))]);
    socket.destroy();
  }

  async abrupt(random) {
    const ws = await this.open();
    if (!(await this.authenticate(ws, random.pick(CHAOS_KEYS)))) return ws.close();
    this.serve(ws, () => {});
    await sleep(random.int(0, 2000));
    ws.terminate();
  }

  stop() {
    this.running = false;
    for (const ws of this.sockets) ws.terminate();
  }
}

function safeParse(data) {
  try {
    return JSON.parse(data.toString());
  } catch {
    return null;
  }
}

function send(ws, frame) {
  if (ws.readyState !== WebSocket.OPEN) return;
  ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame), () => {});
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// Orchestration.

async function main() {
  const port = await freePort();
  const child = fork(__filename, ['--host', String(port), ...process.argv.slice(2)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let report = null;
  const started = new Promise((resolve) => {
    child.on('message', (message) => {
      if (message.type === 'started') resolve();
      if (message.type === 'report') report = message;
    });
  });
  const first = await Promise.race([started.then(() => 'started'), exited.then(() => 'exited')]);
  const violations = [];
  let fleet = null;
  if (first === 'started') {
    fleet = new Fleet(port, rng(settings.seed * 2 + 2));
    const good = Math.max(2, Math.round(settings.extensions * 0.15));
    for (let i = 0; i < settings.extensions; i++) fleet.slot(i, i < good);
    await Promise.race([sleep(settings.durationMs), exited]);
    // The fleet keeps misbehaving through the final stop(): it must not hold it up. Late
    // answers of the last moments may not have reached the gateway yet: not judged.
    const judgedBefore = Date.now() - 1500;
    const lateAnswered = [...fleet.lateAnswered].filter(([, at]) => at < judgedBefore).map(([id]) => id);
    child.connected && child.send({ type: 'finish', lateAnswered });
    await Promise.race([new Promise((resolve) => child.on('disconnect', resolve)), exited, sleep(60_000)]);
    fleet.stop();
  }
  const exit = await Promise.race([exited, sleep(10_000).then(() => null)]);
  if (exit === null) {
    violations.push('the gateway process did not exit by itself after stop()');
    child.kill('SIGKILL');
  } else if (exit.code !== 0 || exit.signal) {
    violations.push(`the gateway process crashed (exit code ${exit.code}, signal ${exit.signal})`);
  }
  if (!report) violations.push('the gateway process sent no report');
  else violations.push(...report.violations);
  for (const [text, count] of fleet?.idempotentCommands ?? []) {
    if (count > 1) violations.push(`an idempotencyKey's command reached extensions ${count} times (${text})`);
  }

  const stats = report?.stats;
  const summary = [
    `chaos: seed ${settings.seed}, ${settings.durationMs / 1000} s, ${settings.extensions} extensions, ${settings.rate} sends/s`,
  ];
  if (stats) {
    const codes = Object.entries(stats.byCode)
      .sort((a, b) => b[1] - a[1])
      .map(([code, n]) => `${code} ${n}`)
      .join(', ');
    summary.push(
      `  sends ${stats.sent}: resolved ${stats.resolved}, rejected ${stats.rejected} (${codes || 'none'})`,
      `  good extensions: ${stats.good.strictOk}/${stats.good.strict} judged sends succeeded; late results checked: ${stats.lateChecked ?? 0}`,
      `  lagging readers (big commands, reading paused): ${stats.lagging.sent} sends, ${stats.lagging.ok} succeeded, ${stats.lagging.backpressure} BACKPRESSURE at their timeout`,
      `  idempotent calls ${stats.idempotent.calls} (duplicates ${stats.idempotent.duplicates}, reused for another text ${stats.idempotent.reused}); keys written: ${fleet?.idempotentCommands.size ?? 0}`,
      `  stop()/start() ${stats.stops} times, slowest stop() ${stats.maxStopMs} ms; max RSS ${stats.maxRssMb} MB` +
        `; SERVER_ERROR ${stats.serverErrors}, CALLBACK_ERROR ${stats.callbackErrors}`,
    );
  }
  if (fleet) {
    const behaviours = Object.entries(fleet.stats.behaviours)
      .map(([b, n]) => `${b} ${n}`)
      .join(', ');
    summary.push(`  fleet: ${fleet.stats.connects} connections, ${fleet.stats.refused} refused upgrades; ${behaviours}`);
    if (settings.verbose) {
      summary.push(`  close codes seen by the fleet: ${JSON.stringify(fleet.stats.closeCodes)}`);
      summary.push(`  behaviours cut short: ${JSON.stringify(fleet.stats.failures)}`);
    }
  }
  summary.push(violations.length === 0 ? '  OK: no violation' : `  FAILED: ${violations.length} violation(s)`);
  for (const v of violations.slice(0, 20)) summary.push(`    - ${v}`);
  process.stdout.write(`${summary.join('\n')}\n`);
  process.exit(violations.length === 0 ? 0 : 1);
}

if (process.argv[2] === '--host') {
  runHost(Number(process.argv[3])).catch((error) => {
    process.stderr.write(`chaos host failed: ${error.stack}\n`);
    process.exit(3);
  });
} else {
  main().catch((error) => {
    process.stderr.write(`chaos failed: ${error.stack}\n`);
    process.exit(3);
  });
}
