'use strict';
// A throwaway Redis for the cluster tests (README "Cluster mode"): Debian's `redis-server` binary
// started on a free loopback port with persistence off, spoken to in RESP over a plain
// socket (no client library: the tests need PING, FLUSHALL, INFO and little else).
// Never a system-wide service: the binary runs as a child of the test and is killed
// with it.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('./free-port');

const REDIS_SERVER = process.env.REDIS_SERVER_PATH || 'redis-server';
const START_LIMIT_MS = 5000;
const COMMAND_LIMIT_MS = 3000;

/** The redis-server binary's version line, or null when there is none. */
function redisVersion() {
  try {
    return execFileSync(REDIS_SERVER, ['--version'], { encoding: 'utf8', timeout: 5000 }).trim();
  } catch {
    return null;
  }
}

/**
 * Why a Redis test cannot run here, or null when it can. Only outside CI: in CI (`CI`
 * set, as .ci/run does) a missing redis-server is a failure, never a skip.
 */
function redisSkipReason() {
  if (redisVersion() !== null) return null;
  const reason = `redis-server not found (${REDIS_SERVER}): install it (Debian: apt-get install -y --no-install-recommends redis-server; .ci/run does this) or set REDIS_SERVER_PATH`;
  if (process.env.CI) throw new Error(`${reason}; CI is set, so the cluster tests may not skip`);
  return reason;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One RESP command as an array of bulk strings. */
function encode(args) {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) {
    const bytes = Buffer.from(String(arg));
    parts.push(`$${bytes.length}\r\n`, bytes, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

/**
 * Parses one RESP2 reply at `offset`: { value, end } or null if incomplete. An error
 * reply becomes an Error value (returned, not thrown, so that arrays can hold one).
 */
function parse(buffer, offset = 0) {
  const lineEnd = buffer.indexOf('\r\n', offset);
  if (lineEnd === -1) return null;
  const kind = String.fromCharCode(buffer[offset]);
  const line = buffer.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (kind) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: Object.assign(new Error(line), { redis: true }), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, end: next };
      if (buffer.length < next + length + 2) return null;
      return { value: buffer.toString('utf8', next, next + length), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, at);
        if (item === null) return null;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(buffer.toString('utf8', offset, offset + 40))}`);
  }
}

/** Runs one command on a fresh connection to 127.0.0.1:port; bounded by `ms`. */
function command(port, args, ms = COMMAND_LIMIT_MS) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`redis ${args[0]} on port ${port}: no reply within ${ms} ms`)), ms);
    const finish = (error, value) => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value);
    };
    socket.once('error', (error) => finish(error));
    socket.once('close', () => finish(new Error(`redis ${args[0]} on port ${port}: connection closed before a reply`)));
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      let reply;
      try {
        reply = parse(received);
      } catch (error) {
        return finish(error);
      }
      if (reply === null) return;
      if (reply.value instanceof Error) finish(reply.value);
      else finish(null, reply.value);
    });
    socket.write(encode(args));
  });
}

/** A redis-server child process on one loopback port; see startRedis(). */
class TestRedis {
  /** `args`: more server arguments (an ACL user, TLS ports...); the plain port stays the test's. */
  constructor(port, dir, args = []) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.dir = dir;
    this.args = args;
    this.child = null;
    this.exited = null;
    this.log = '';
  }

  get running() {
    return this.child !== null;
  }

  /** Spawns the server and resolves once it answers PING; rejects (with its log) if not. */
  async spawn() {
    const child = spawn(
      REDIS_SERVER,
      [
        '--port', String(this.port),
        '--bind', '127.0.0.1',
        '--save', '',
        '--appendonly', 'no',
        '--dir', this.dir,
        '--daemonize', 'no',
        '--logfile', '',
        ...this.args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    this.log = '';
    const keep = (chunk) => {
      this.log = (this.log + chunk).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      });
      child.once('error', (error) => {
        if (this.child === child) this.child = null;
        resolve({ error });
      });
    });
    const until = Date.now() + START_LIMIT_MS;
    for (;;) {
      if (this.child !== child) {
        const how = await this.exited;
        throw new Error(`redis-server on port ${this.port} exited at start (${JSON.stringify(how)}): ${this.log.trim()}`);
      }
      try {
        if ((await command(this.port, ['PING'], 500)) === 'PONG') return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > until) {
        await this.kill();
        throw new Error(`redis-server on port ${this.port} did not answer PING within ${START_LIMIT_MS} ms: ${this.log.trim()}`);
      }
      await sleep(20);
    }
  }

  /** Runs one command (strings) and resolves with its reply; an error reply rejects. */
  command(...args) {
    return command(this.port, args);
  }

  flushall() {
    return this.command('FLUSHALL');
  }

  /** `INFO <section>` as { field: value }. */
  async info(section = 'all') {
    const text = await this.command('INFO', section);
    const fields = {};
    for (const line of text.split('\r\n')) {
      const at = line.indexOf(':');
      if (at > 0 && !line.startsWith('#')) fields[line.slice(0, at)] = line.slice(at + 1);
    }
    return fields;
  }

  /** How many times each command ran since start: { get: 12, xadd: 3, ... }. */
  async commandCounts() {
    const counts = {};
    for (const [name, value] of Object.entries(await this.info('commandstats'))) {
      const calls = /(?:^|,)calls=(\d+)/.exec(value);
      if (calls) counts[name.replace(/^cmdstat_/, '')] = Number(calls[1]);
    }
    return counts;
  }

  async #signal(signal) {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** A clean shutdown (SIGTERM; nothing is saved). */
  stop() {
    return this.#signal('SIGTERM');
  }

  /** Dies at once, as a crashed server would. */
  kill() {
    return this.#signal('SIGKILL');
  }

  /** Kills the server and removes its folder. */
  async dispose() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Stops (if running) and starts again on the same port, empty. */
  async restart() {
    await this.stop();
    await this.spawn();
  }
}

/**
 * Starts a Redis, disposed of after test `t` whatever happens (without `t`, call
 * dispose() yourself). Call redisSkipReason() first to skip where there is no
 * redis-server.
 */
async function startRedis(t, { args = [] } = {}) {
  let lastError;
  // The free port may be taken between the probe and the bind: try a few.
  for (let attempt = 0; attempt < 5; attempt++) {
    const extra = typeof args === 'function' ? await args() : args;
    const redis = new TestRedis(await freePort(), fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-redis-')), extra);
    t?.after(() => redis.dispose());
    try {
      await redis.spawn();
      return redis;
    } catch (error) {
      lastError = error;
      await redis.dispose();
    }
  }
  throw lastError;
}

/** A loopback port where nothing listens: a Redis URL that cannot be reached. */
async function unreachableRedisUrl() {
  return `redis://127.0.0.1:${await freePort()}`;
}

module.exports = { startRedis, redisSkipReason, redisVersion, unreachableRedisUrl, TestRedis, command, sleep };
