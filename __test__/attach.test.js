'use strict';
// Attaching the gateway to the user's own Node http.Server / https.Server (README "Attaching to Express",
// `server`): the guide's Express and production examples run unchanged, extensions
// share the port with REST calls over http and https, other WebSocket servers on other
// paths keep working, start/stop attach and detach, trustProxy, and bad or stalled
// upgrades. Every server, gateway and client is closed in t.after.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const crypto = require('node:crypto');
const express = require('express');
const selfsigned = require('selfsigned');
const WebSocket = require('ws');
const { WebSocketServer } = WebSocket;
const gatewayPackage = require('..');
const { WhatsAppGateway } = gatewayPackage;
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY, PNG_1x1 } = require('./helpers');
const { guideBlock, guideSkip } = require('./guide-source');

const PHONE = '+1234567890';
const WS_PATH = '/wa-ext-ws';
const root = path.resolve(__dirname, '..');
const AsyncFunction = (async () => {}).constructor;

// ---------------------------------------------------------------------------
// Guide extraction: ./guide-source.js

/**
 * Runs a guide block unchanged as the body of an async function. Names in `provided`
 * that the block does not declare itself are passed in; `returns` is an expression
 * appended as the function's result (to capture the block's own locals).
 */
function runGuideBlock(code, provided, returns) {
  const declares = (name) =>
    new RegExp(`\\b(const|let|var|function|class)\\s+(\\{[^}]*\\b${name}\\b[^}]*\\}|${name}\\b)`).test(code);
  const names = Object.keys(provided).filter((name) => !declares(name));
  const fn = new AsyncFunction(...names, `${code}\n;return ${returns};`);
  return fn(...names.map((name) => provided[name]));
}

/** `require` as the guide's code sees it: the package by its name, plus fakes. */
function guideRequire(fakes = {}) {
  return (name) => {
    if (name === 'whatsapp-ws-extension-gateway') return gatewayPackage;
    if (Object.prototype.hasOwnProperty.call(fakes, name)) return fakes[name];
    return require(name);
  };
}

// ---------------------------------------------------------------------------
// Resources and servers

/** Cleanups run after the test, last registered first, each one's failure ignored. */
function cleanups(t) {
  const fns = [];
  t.after(async () => {
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch {
        // Cleaning up after a failure may meet half-closed things.
      }
    }
  });
  return (fn) => fns.push(fn);
}

function listen(server, port = 0, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

function closeServer(server) {
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

/** Whether `port` can be bound on all interfaces right now (as server.listen(port) does). */
function portIsFree(port) {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, () => probe.close(() => resolve(true)));
  });
}

async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

let certificate = null;
/** One self-signed certificate for 127.0.0.1 / localhost, made once per run. */
function tlsCert() {
  certificate ??= selfsigned
    .generate([{ name: 'commonName', value: 'localhost' }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
          ],
        },
      ],
    })
    .then((pems) => ({ key: pems.private, cert: pems.cert }));
  return certificate;
}

/**
 * An HTTP(S) request with a fresh connection (no keep-alive, so servers close
 * promptly). Resolves with status, headers, text and the parsed JSON body if any.
 */
function call(base, method, route, { apiKey, body, headers = {}, ca } = {}) {
  const url = new URL(route, base);
  const client = url.protocol === 'https:' ? https : http;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const allHeaders = { ...headers };
  if (apiKey) allHeaders['x-api-key'] = apiKey;
  if (payload !== undefined) {
    allHeaders['content-type'] = 'application/json';
    allHeaders['content-length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = client.request(url, { method, agent: false, headers: allHeaders, ca }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, body: json });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The REST routes of the guide's "Complete REST API Example", on `app`, for `gateway`. */
function addGuideRoutes(app, gateway) {
  function requireApiKey(req, res, next) {
    const apiKey = req.headers['x-api-key'];
    if (!apiKey) return res.status(401).json({ error: 'API key required' });
    req.apiKey = apiKey;
    next();
  }
  app.post('/api/send-message', requireApiKey, async (req, res) => {
    try {
      const { phoneNumber, message } = req.body;
      const result = await gateway.sendMessage(req.apiKey, { phoneNumber, message });
      res.json({ success: true, data: result });
    } catch (error) {
      res.status(400).json({ success: false, error: error.message, code: error.code });
    }
  });
  app.post('/api/send-image', requireApiKey, async (req, res) => {
    try {
      const { phoneNumber, dataUrl, caption } = req.body;
      const result = await gateway.sendImage(req.apiKey, { phoneNumber, dataUrl, caption });
      res.json({ success: true, data: result });
    } catch (error) {
      // The guide's route leaves out `code`; kept here so failures are readable.
      res.status(400).json({ success: false, error: error.message, code: error.code });
    }
  });
  app.get('/api/sessions', requireApiKey, async (req, res) => {
    try {
      const sessions = await gateway.getActiveSessions(req.apiKey);
      res.json({ success: true, data: sessions });
    } catch (error) {
      res.status(500).json({ success: false, error: error.message });
    }
  });
  app.get('/api/health', async (req, res) => {
    const health = await gateway.getHealth();
    res.json(health);
  });
}

/**
 * Express app + http(s) server + attached gateway (guide order: gateway first, then
 * routes, start, listen). Valid keys: GOOD_KEY, OTHER_KEY unless `validKeys`.
 */
async function attachedSetup(t, options = {}) {
  const {
    tls = false,
    gatewayOptions = {},
    validKeys = [GOOD_KEY, OTHER_KEY],
    jsonLimit = '8mb',
    beforeStart,
    listenFirst = false,
  } = options;
  const add = cleanups(t);
  const app = express();
  app.use(express.json({ limit: jsonLimit }));
  const pems = tls ? await tlsCert() : null;
  const server = tls ? https.createServer({ key: pems.key, cert: pems.cert }, app) : http.createServer(app);
  add(() => closeServer(server));
  const events = [];
  const errors = [];
  const gateway = new WhatsAppGateway({
    server,
    path: WS_PATH,
    validateApiKey: async (apiKey) =>
      validKeys.includes(apiKey) ? { valid: true, userId: `user-${apiKey.slice(0, 4)}` } : { valid: false },
    onMessageLog: (event) => events.push(event),
    onError: (error) => errors.push(error),
    ...gatewayOptions,
  });
  add(() => gateway.stop());
  addGuideRoutes(app, gateway);
  beforeStart?.({ app, server, gateway });
  let port;
  if (listenFirst) {
    port = await listen(server);
    await gateway.start();
  } else {
    await gateway.start();
    port = await listen(server);
  }
  const scheme = tls ? 'https' : 'http';
  const ca = pems?.cert;
  const ctx = {
    app,
    server,
    gateway,
    events,
    errors,
    port,
    tls,
    ca,
    add,
    base: `${scheme}://127.0.0.1:${port}`,
    wsBase: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}`,
    wsUrl: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}${WS_PATH}`,
    call: (method, route, opts = {}) => call(ctx.base, method, route, { ca, ...opts }),
    /** An extension for this server (wss with the test CA when tls), closed after the test. */
    extension: (opts = {}) => {
      const ext = new Extension(ctx.wsUrl, { ...opts, wsOptions: { ...(tls ? { ca } : {}), ...opts.wsOptions } });
      add(() => ext.ws?.terminate());
      return ext;
    },
  };
  return ctx;
}

/** FakeExtension with ws client options (TLS trust, extra headers). */
class Extension extends FakeExtension {
  constructor(url, { wsOptions, ...rest } = {}) {
    super(url, rest);
    this.wsOptions = wsOptions ?? {};
    this.refusedWith = null;
  }

  open() {
    const options = { ...this.wsOptions };
    if (this.origin) options.origin = this.origin;
    this.ws = new WebSocket(this.url, options);
    this.ws.on('message', (data) => this.handleFrame(data.toString()));
    this.ws.on('error', () => {});
    this.whenClosed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
      });
    });
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (req, res) => {
        this.refusedWith = res.statusCode;
        res.resume();
        req.destroy();
        reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode }));
      });
    });
  }

}

/**
 * Tries a WebSocket upgrade; resolves with 'open', `refused <status>`, 'closed',
 * 'error' or 'no answer' (nothing within `ms`). The client is closed afterwards.
 */
function upgradeOutcome(url, wsOptions = {}, ms = 500) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, wsOptions);
    const done = (outcome) => {
      clearTimeout(timer);
      ws.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('no answer'), ms);
    ws.on('error', () => done('error'));
    ws.once('open', () => done('open'));
    ws.once('close', () => done('closed'));
    ws.once('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      done(`refused ${res.statusCode}`);
    });
  });
}

/** A ws client for an echo server; `echo(text)` resolves with the reply. */
async function echoClient(url, wsOptions, add) {
  const ws = new WebSocket(url, wsOptions);
  add(() => ws.terminate());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`echo upgrade refused: ${res.statusCode}`)));
  });
  return {
    ws,
    echo: (text) =>
      new Promise((resolve, reject) => {
        ws.once('message', (data) => resolve(data.toString()));
        ws.once('close', () => reject(new Error('echo socket closed')));
        ws.send(text);
      }),
  };
}

/** A raw TCP client that writes `text`; collects what comes back (latin1). */
function rawClient(port, text, add) {
  const socket = net.connect(port, '127.0.0.1');
  const raw = { socket, data: '', closed: false };
  add?.(() => socket.destroy());
  socket.on('data', (d) => (raw.data += d.toString('latin1')));
  socket.on('error', () => {});
  raw.whenClosed = new Promise((resolve) =>
    socket.on('close', () => {
      raw.closed = true;
      resolve();
    }),
  );
  socket.write(text);
  return raw;
}

const dataUrlOf = (mime, bytes) => `data:${mime};base64,${bytes.toString('base64')}`;
/** ~1 MiB of PNG-signed pseudo-random bytes (base64 makes it ~1.33 MiB of text). */
function bigPng() {
  const signature = Buffer.from(PNG_1x1.split(',')[1], 'base64').subarray(0, 33);
  return Buffer.concat([signature, crypto.randomBytes(1024 * 1024 - signature.length)]);
}

/** Sends a message through REST and checks it reached `ext` and came back as a result. */
async function restSendWorks(ctx, ext, apiKey = ext.apiKey, message = `hello ${ext.dialect}`) {
  const before = ext.commands.length;
  const res = await ctx.call('POST', '/api/send-message', { apiKey, body: { phoneNumber: PHONE, message } });
  assert.equal(res.status, 200, `send-message answered ${res.status}: ${res.text}`);
  assert.equal(res.body.success, true);
  assert.equal(res.body.data.success, true);
  assert.equal(res.body.data.deviceInfo.sessionId, ext.sessionId);
  assert.equal(ext.commands.length, before + 1);
  const command = ext.commands.at(-1);
  assert.equal(command.type, 'send-message');
  assert.equal(command.data.phoneNumber, PHONE);
  assert.equal(command.data.message, message);
  assert.equal(res.body.data.requestId, command.requestId);
  return res.body.data;
}

// ---------------------------------------------------------------------------
// 1. The guide's Complete REST API Example

test('guide "Complete REST API Example" runs unchanged on port 3000 (its validateApiKey is a stub)', { timeout: 15_000, skip: guideSkip }, async (t) => {
  if (!(await portIsFree(3000))) {
    t.skip('port 3000 is in use');
    return;
  }
  const add = cleanups(t);
  const log = [];
  const code = guideBlock('Complete REST API Example');
  const { server, gateway } = await runGuideBlock(
    code,
    {
      require: guideRequire(),
      console: { log: (...a) => log.push(a), warn: (...a) => log.push(a), error: (...a) => log.push(a) },
    },
    '{ server, gateway, app }',
  );
  add(() => closeServer(server));
  add(() => gateway.stop());
  assert.ok(gateway instanceof WhatsAppGateway);
  assert.equal(gateway.isRunning, true);
  if (!server.listening) {
    const error = await new Promise((resolve) => {
      server.once('listening', () => resolve(null));
      server.once('error', resolve);
    });
    if (error?.code === 'EADDRINUSE') {
      t.skip('port 3000 was taken meanwhile');
      return;
    }
    assert.equal(error, null);
  }
  await waitFor(() => log.length > 0, 3000, 'the listen callback');
  assert.deepEqual(log[0], ['Server running on http://localhost:3000']);
  assert.equal(gateway.address().port, 3000, 'attached, address() is the server address');

  const base = 'http://127.0.0.1:3000';
  const health = await call(base, 'GET', '/api/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'running');
  assert.equal(health.body.activeSessions, 0);
  assert.equal(typeof health.body.uptime, 'number');
  assert.equal(typeof health.body.timestamp, 'number');

  const sessions = await call(base, 'GET', '/api/sessions', { apiKey: 'any-key' });
  assert.equal(sessions.status, 200);
  assert.deepEqual(sessions.body, { success: true, data: [] });
  assert.equal((await call(base, 'GET', '/api/sessions')).status, 401);

  const body = { phoneNumber: PHONE, message: 'Hello' };
  const noKey = await call(base, 'POST', '/api/send-message', { body });
  assert.equal(noKey.status, 401);
  assert.deepEqual(noKey.body, { error: 'API key required' });
  const noDevice = await call(base, 'POST', '/api/send-message', { apiKey: 'any-key', body });
  assert.equal(noDevice.status, 400);
  assert.equal(noDevice.body.success, false);
  assert.equal(noDevice.body.code, 'NO_ACTIVE_DEVICE');

  // The gateway answers upgrades on the same port; the stub validator (undefined)
  // makes every auth fail.
  const ext = new Extension(`ws://127.0.0.1:3000${WS_PATH}`, { apiKey: 'any-key' });
  add(() => ext.ws?.terminate());
  await ext.open();
  await assert.rejects(ext.authenticate(), (e) => e.frame?.code === 'AUTHENTICATION_FAILED');
  assert.equal((await ext.whenClosed).code, 1008);
});

test('REST API example with a real validator: extension on the same port, send-message/send-image/sessions/health', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t);
  const ext = await new FakeExtension(ctx.wsUrl, { dialect: 'doc' }).connectReady(ctx.gateway);
  ctx.add(() => ext.ws?.terminate());

  const sent = await restSendWorks(ctx, ext, GOOD_KEY, 'Hello from REST');
  assert.equal(typeof sent.messageId, 'string');

  const image = await ctx.call('POST', '/api/send-image', {
    apiKey: GOOD_KEY,
    body: { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'A pixel' },
  });
  assert.equal(image.status, 200, image.text);
  assert.equal(image.body.success, true);
  assert.equal(image.body.data.success, true);
  const command = ext.commands.at(-1);
  assert.equal(command.type, 'send-image');
  assert.equal(command.data.dataUrl, PNG_1x1);
  assert.equal(command.data.caption, 'A pixel');
  assert.equal(image.body.data.requestId, command.requestId);

  const sessions = await ctx.call('GET', '/api/sessions', { apiKey: GOOD_KEY });
  assert.equal(sessions.status, 200);
  assert.equal(sessions.body.success, true);
  assert.equal(sessions.body.data.length, 1);
  assert.equal(sessions.body.data[0].sessionId, ext.sessionId);
  assert.equal(sessions.body.data[0].deviceActive, true);
  assert.equal(sessions.body.data[0].ip, '127.0.0.1');
  assert.deepEqual((await ctx.call('GET', '/api/sessions', { apiKey: OTHER_KEY })).body, { success: true, data: [] });

  const health = await ctx.call('GET', '/api/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'running');
  assert.equal(health.body.activeSessions, 1);

  // A query string on the path is still the gateway's.
  const withQuery = await new FakeExtension(`${ctx.wsUrl}?v=2`, { apiKey: OTHER_KEY, dialect: 'v1' }).connectReady(ctx.gateway);
  ctx.add(() => withQuery.ws?.terminate());
  await restSendWorks(ctx, withQuery, OTHER_KEY);
  assert.equal((await ctx.call('GET', '/api/health')).body.activeSessions, 2);

  assert.deepEqual(ctx.gateway.address(), ctx.server.address());
  assert.ok(ctx.events.some((e) => e.type === 'message-sent' && e.sessionId === ext.sessionId));
  assert.ok(ctx.events.some((e) => e.type === 'image-sent' && e.sessionId === ext.sessionId));
});

// ---------------------------------------------------------------------------
// 2. The guide's Complete Production Example

/** Minimal winston, pg and dotenv: what the production example touches, recorded. */
function productionFakes(knownKeys) {
  const logged = [];
  const queries = [];
  const pools = [];
  const logger = () => {
    const record = (level) => (message, meta) => logged.push({ level, message, meta });
    return { info: record('info'), warn: record('warn'), error: record('error') };
  };
  class Transport {
    constructor(options) {
      this.options = options;
    }
  }
  const winston = {
    createLogger: (options) => Object.assign(logger(), { options }),
    format: { json: () => ({ format: 'json' }), simple: () => ({ format: 'simple' }) },
    transports: { File: class extends Transport {}, Console: class extends Transport {} },
  };
  class Pool {
    constructor(options) {
      this.options = options;
      this.ended = false;
      pools.push(this);
    }
    async query(sql, params = []) {
      queries.push({ sql, params });
      return { rows: knownKeys.includes(params[0]) ? [{ id: 1, email: 'a@b.c' }] : [] };
    }
    async end() {
      this.ended = true;
    }
  }
  const dotenv = { config: () => ({ parsed: {} }) };
  return { fakes: { winston, pg: { Pool }, dotenv }, logged, queries, pools };
}

test('guide "Complete Production Example" runs unchanged with fake winston/pg/dotenv; SIGTERM shuts down', { timeout: 15_000, skip: guideSkip }, async (t) => {
  const add = cleanups(t);
  const PROD_KEY = 'prod-key-0123456789';
  const { fakes, logged, queries, pools } = productionFakes([PROD_KEY]);
  const port = await freePort();
  const savedPort = process.env.PORT;
  process.env.PORT = String(port);
  add(() => {
    if (savedPort === undefined) delete process.env.PORT;
    else process.env.PORT = savedPort;
  });
  const handlers = {};
  const exits = [];
  const fakeProcess = {
    env: { ...process.env, PORT: String(port) },
    on: (event, handler) => {
      handlers[event] = handler;
      return fakeProcess;
    },
    exit: (code) => {
      exits.push(code);
    },
  };

  const { server, gateway, db } = await runGuideBlock(
    guideBlock('Complete Production Example'),
    { require: guideRequire(fakes), process: fakeProcess },
    '{ server, gateway, db, app }',
  );
  add(() => closeServer(server));
  add(() => gateway.stop());
  await waitFor(() => server.listening && gateway.isRunning, 3000, 'server listening and gateway started');
  await waitFor(() => logged.some((l) => l.message === `Server running on port ${port}`), 3000, 'listen log');
  assert.ok(logged.some((l) => l.message === 'Gateway started successfully'));
  assert.deepEqual(exits, []);
  assert.equal(typeof handlers.SIGTERM, 'function', 'registers a SIGTERM handler');

  const base = `http://127.0.0.1:${port}`;
  const ext = new Extension(`ws://127.0.0.1:${port}${WS_PATH}`, { apiKey: PROD_KEY });
  add(() => ext.ws?.terminate());
  await ext.connectReady(gateway);
  assert.equal(gateway.getActiveSessions(PROD_KEY)[0].userId, 1);
  assert.ok(logged.some((l) => l.level === 'info' && l.message === 'User authenticated' && l.meta.userId === 1));

  // A wrong key is refused, and the example's warning masks it.
  const intruder = new Extension(`ws://127.0.0.1:${port}${WS_PATH}`, { apiKey: 'wrong-key-0123456789' });
  add(() => intruder.ws?.terminate());
  await intruder.open();
  await assert.rejects(intruder.authenticate(), (e) => e.frame?.code === 'AUTHENTICATION_FAILED');
  assert.ok(logged.some((l) => l.message === 'Invalid API key attempt' && l.meta.apiKey === 'wrong-ke***'));

  const sent = await call(base, 'POST', '/api/send-message', {
    apiKey: PROD_KEY,
    body: { phoneNumber: PHONE, message: 'Production hello' },
  });
  assert.equal(sent.status, 200, sent.text);
  assert.equal(sent.body.success, true);
  assert.equal(sent.body.data.deviceInfo.sessionId, ext.sessionId);
  assert.equal(ext.commands.at(-1).data.message, 'Production hello');
  assert.equal((await call(base, 'POST', '/api/send-message', { body: {} })).status, 401);

  const health = await call(base, 'GET', '/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'running');
  assert.equal(health.body.activeSessions, 1);

  // onMessageLog saved events through the pool, and counted the success.
  await waitFor(() => queries.some((q) => /UPDATE users SET messages_sent/.test(q.sql)), 3000, 'stats update');
  assert.ok(queries.some((q) => /INSERT INTO message_logs/.test(q.sql) && q.params[1] === 'message-sent'));

  await handlers.SIGTERM();
  assert.equal(gateway.isRunning, false);
  assert.equal(gateway.getHealth().status, 'stopped');
  assert.equal(pools[0], db);
  assert.equal(db.ended, true);
  const closed = await ext.whenClosed;
  assert.equal(closed.code, 1001);
  await waitFor(() => exits.length > 0, 5000, 'server.close callback calling process.exit');
  assert.deepEqual(exits, [0]);
  assert.equal(server.listening, false);
  assert.ok(logged.some((l) => l.message === 'SIGTERM received, shutting down gracefully'));
  assert.ok(logged.some((l) => l.message === 'Server closed'));
  await assert.rejects(call(base, 'GET', '/health'), (e) => e.code === 'ECONNREFUSED');
});

// ---------------------------------------------------------------------------
// 3. HTTPS / WSS

test('https: wss extension and REST on the same port; a ~1 MiB image goes through the TLS relay intact', { timeout: 20_000 }, async (t) => {
  const ctx = await attachedSetup(t, { tls: true });
  const ext = await ctx.extension().connectReady(ctx.gateway);

  const session = ctx.gateway.getActiveSessions(GOOD_KEY)[0];
  assert.equal(session.ip, '127.0.0.1');
  await restSendWorks(ctx, ext, GOOD_KEY, 'Hello over TLS');
  const direct = await ctx.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'direct' });
  assert.equal(direct.success, true);

  const bytes = bigPng();
  const dataUrl = dataUrlOf('image/png', bytes);
  const image = await ctx.call('POST', '/api/send-image', {
    apiKey: GOOD_KEY,
    body: { phoneNumber: PHONE, dataUrl, caption: 'big' },
  });
  assert.equal(image.status, 200, image.text.slice(0, 300));
  assert.equal(image.body.data.success, true);
  const command = ext.commands.at(-1);
  assert.equal(command.type, 'send-image');
  const received = command.data.imageDataUrl ?? command.data.dataUrl;
  assert.equal(received.length, dataUrl.length);
  assert.ok(received === dataUrl, 'the data URL arrives unchanged');
  assert.ok(Buffer.from(received.split(',')[1], 'base64').equals(bytes), 'identical bytes');

  // And the session keeps working after the big frame.
  await restSendWorks(ctx, ext, GOOD_KEY, 'after the image');
  const health = await ctx.call('GET', '/api/health');
  assert.equal(health.body.activeSessions, 1);

  // stop() ends the relayed session and leaves the https server serving.
  await ctx.gateway.stop();
  assert.deepEqual(await ext.whenClosed, { code: 1001, reason: 'Server shutting down' });
  const after = await ctx.call('GET', '/api/health');
  assert.equal(after.status, 200);
  assert.equal(after.body.status, 'stopped');
  assert.equal(ctx.server.listening, true);
});

// ---------------------------------------------------------------------------
// 4. Next to another WebSocket server on the same http(s) server

/** Runs an echo client on /other and an extension on the gateway's path side by side. */
async function sideBySide(ctx) {
  const wsOptions = ctx.tls ? { ca: ctx.ca } : {};
  const echo = await echoClient(`${ctx.wsBase}/other`, wsOptions, ctx.add);
  assert.equal(await echo.echo('one'), 'one');
  const ext = await ctx.extension().connectReady(ctx.gateway);
  assert.equal(await echo.echo('two'), 'two');
  await restSendWorks(ctx, ext);
  const direct = await ctx.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'while echoing' });
  assert.equal(direct.success, true);
  assert.equal(await echo.echo('three'), 'three');
  // A second echo client after the extension connected, and a second extension.
  const echo2 = await echoClient(`${ctx.wsBase}/other`, wsOptions, ctx.add);
  assert.equal(await echo2.echo('four'), 'four');
  const ext2 = await ctx.extension({ apiKey: OTHER_KEY, dialect: 'guide' }).connectReady(ctx.gateway);
  await restSendWorks(ctx, ext2, OTHER_KEY);
  assert.equal(ctx.gateway.getHealth().activeSessions, 2);
}

function echoServer(options) {
  const wss = new WebSocketServer(options);
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  return wss;
}

for (const tls of [false, true]) {
  const scheme = tls ? 'https' : 'http';
  // The user's listener runs after the gateway's and destroys every socket of a path it
  // does not own; over TLS the gateway still relays that socket, which must survive.
  test(`${scheme}: a ws server routed by the user's own upgrade listener (ws README pattern) next to the gateway`, { timeout: 15_000 }, async (t) => {
    let wss;
    const ctx = await attachedSetup(t, {
      tls,
      beforeStart: ({ server }) => {
        wss = echoServer({ noServer: true });
        // As in the ws README: route by path, destroy what is not ours.
        server.on('upgrade', (request, socket, head) => {
          const { pathname } = new URL(request.url, 'ws://base.url');
          if (pathname === '/other') {
            wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request));
          } else {
            socket.destroy();
          }
        });
      },
    });
    ctx.add(() => new Promise((resolve) => wss.close(() => resolve())));
    await sideBySide(ctx);
    // Unknown paths are still the user's business: the user's listener destroys them.
    assert.notEqual(await upgradeOutcome(`${ctx.wsBase}/nowhere`, tls ? { ca: ctx.ca } : {}), 'open');
  });

  test(`${scheme}: a ws server given { server, path: '/other' } (answers other paths 400) next to the gateway`, { timeout: 15_000 }, async (t) => {
    let wss;
    const ctx = await attachedSetup(t, {
      tls,
      beforeStart: ({ server }) => {
        wss = echoServer({ server, path: '/other' });
      },
    });
    ctx.add(() => new Promise((resolve) => wss.close(() => resolve())));
    await sideBySide(ctx);
    assert.equal(await upgradeOutcome(`${ctx.wsBase}/nowhere`, tls ? { ca: ctx.ca } : {}), 'refused 400');
  });
}

// ---------------------------------------------------------------------------
// 5. start/stop around the user's server

test('start() before and after server.listen(); stop() detaches and leaves the server running; start() re-attaches', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t); // start() before listen()
  const ext = await ctx.extension().connectReady(ctx.gateway);
  await restSendWorks(ctx, ext);
  await assert.rejects(ctx.gateway.start(), 'start() while running rejects');
  assert.equal(ctx.gateway.isRunning, true);
  await restSendWorks(ctx, ext, GOOD_KEY, 'still attached once');

  assert.notEqual(ctx.server.close, http.Server.prototype.close, 'close() is wrapped while attached');
  await ctx.gateway.stop();
  assert.deepEqual(await ext.whenClosed, { code: 1001, reason: 'Server shutting down' });
  assert.equal(ctx.server.close, http.Server.prototype.close, 'stop() restores close()');
  assert.equal(ctx.gateway.address(), null);
  assert.equal(ctx.server.listening, true);
  assert.equal(ctx.server.listenerCount('upgrade'), 0, 'the upgrade listener is removed');
  const outcome = await upgradeOutcome(ctx.wsUrl);
  assert.notEqual(outcome, 'open', 'after stop() the path is no longer upgraded');
  // With no upgrade listener left, Node hands the request to the app (Express: 404).
  assert.ok(['refused 404', 'no answer', 'closed', 'error'].includes(outcome), outcome);
  const health = await ctx.call('GET', '/api/health');
  assert.equal(health.status, 200, 'the user server keeps serving REST');
  assert.equal(health.body.status, 'stopped');

  await ctx.gateway.start();
  assert.deepEqual(ctx.gateway.address(), ctx.server.address());
  const again = await ctx.extension().connectReady(ctx.gateway);
  await restSendWorks(ctx, again, GOOD_KEY, 'after restart');
  assert.equal((await ctx.call('GET', '/api/health')).body.activeSessions, 1);
  assert.equal(ctx.server.listenerCount('upgrade'), 1, 'attached exactly once');

  // start() after listen() on another server.
  const late = await attachedSetup(t, { listenFirst: true });
  const lateExt = await late.extension({ dialect: 'guide' }).connectReady(late.gateway);
  await restSendWorks(late, lateExt);
  assert.deepEqual(late.gateway.address(), late.server.address());
});

test("attached: getHealth().port is the server's once it listens; after server.close() isRunning is false and health 'stopped'", { timeout: 15_000 }, async (t) => {
  for (const listenFirst of [false, true]) {
    const ctx = await attachedSetup(t, { listenFirst });
    assert.equal(ctx.gateway.getHealth().port, ctx.port, `listenFirst ${listenFirst}`);
    assert.equal((await ctx.call('GET', '/api/health')).body.port, ctx.port);
    const ext = await ctx.extension().connectReady(ctx.gateway);
    assert.equal(ctx.gateway.isRunning, true);

    ctx.server.closeAllConnections();
    await new Promise((resolve, reject) => ctx.server.close((error) => (error ? reject(error) : resolve())));
    assert.deepEqual(await ext.whenClosed, { code: 1001, reason: 'Server closing' });
    await waitFor(() => !ctx.gateway.isRunning, 3000, 'isRunning to turn false');
    const health = ctx.gateway.getHealth();
    assert.equal(health.status, 'stopped');
    assert.equal(health.port, undefined);
    assert.equal(ctx.gateway.address(), null);
    assert.match(ctx.gateway.metrics(), /^wa_gateway_up 0$/m);
    // The stop the close began: stop() gives the same one, resolved once it is done.
    await ctx.gateway.stop();
    await assert.rejects(ctx.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }), (e) => {
      assert.equal(e.code, 'NO_ACTIVE_DEVICE');
      assert.equal(e.details.reason, 'not-running');
      return true;
    });
    assert.equal(ctx.server.close, http.Server.prototype.close, 'detached from the closed server');
  }
  // Before the server listens there is no port to report.
  const server = http.createServer();
  const gateway = new WhatsAppGateway({ server, validateApiKey: () => ({ valid: true }) });
  await gateway.start();
  t.after(() => gateway.stop());
  assert.equal(gateway.getHealth().status, 'running');
  assert.equal(gateway.getHealth().port, undefined);
});

// ---------------------------------------------------------------------------
// 6. trustProxy

const proxyCases = [
  { headers: { 'X-Forwarded-For': '203.0.113.9' }, trusted: '203.0.113.9' },
  // Only the right-most entry was written by the proxy; the client wrote the rest.
  { headers: { 'X-Forwarded-For': '203.0.113.9, 10.0.0.1' }, trusted: '10.0.0.1' },
  { headers: { 'X-Real-IP': '198.51.100.7' }, trusted: '198.51.100.7' },
  { headers: { 'X-Real-IP': '198.51.100.7', 'X-Forwarded-For': '203.0.113.9' }, trusted: '198.51.100.7' },
  // A value that is not an address is skipped for the next source.
  { headers: { 'X-Real-IP': '<img src=x onerror=alert(1)>', 'X-Forwarded-For': '203.0.113.9' }, trusted: '203.0.113.9' },
  { headers: { 'X-Forwarded-For': '198.51.100.1, <script>' }, trusted: '127.0.0.1' },
];

async function ipSeen(url, gateway, headers, add, apiKey) {
  const ext = new Extension(url, { apiKey, wsOptions: { headers } });
  add(() => ext.ws?.terminate());
  await ext.connectReady(gateway);
  const session = gateway.getActiveSessions(apiKey).find((s) => s.sessionId === ext.sessionId);
  await ext.close();
  await waitFor(() => gateway.getActiveSessions(apiKey).length === 0, 3000, 'session to end');
  return session.ip;
}

test('trustProxy: attached, the IP comes from X-Forwarded-For / X-Real-IP only when trusted', { timeout: 15_000 }, async (t) => {
  const plain = await attachedSetup(t);
  const trusting = await attachedSetup(t, { gatewayOptions: { trustProxy: true } });
  for (const { headers, trusted } of proxyCases) {
    assert.equal(await ipSeen(plain.wsUrl, plain.gateway, headers, plain.add, GOOD_KEY), '127.0.0.1', JSON.stringify(headers));
    assert.equal(await ipSeen(trusting.wsUrl, trusting.gateway, headers, trusting.add, GOOD_KEY), trusted, JSON.stringify(headers));
  }
  assert.equal(await ipSeen(trusting.wsUrl, trusting.gateway, {}, trusting.add, GOOD_KEY), '127.0.0.1', 'no header');
  // The session-connected event carries the same IP.
  const connected = trusting.events.filter((e) => e.type === 'session-connected').map((e) => e.details.ip);
  assert.deepEqual(connected, [...proxyCases.map((c) => c.trusted), '127.0.0.1']);
});

test('trustProxy: https attached and standalone servers', { timeout: 15_000 }, async (t) => {
  const add = cleanups(t);
  const tls = await attachedSetup(t, { tls: true, gatewayOptions: { trustProxy: true } });
  const tlsIp = async (headers) => {
    const ext = tls.extension({ wsOptions: { headers } });
    await ext.connectReady(tls.gateway);
    const ip = tls.gateway.getActiveSessions(GOOD_KEY).find((s) => s.sessionId === ext.sessionId).ip;
    await ext.close();
    await waitFor(() => tls.gateway.getActiveSessions(GOOD_KEY).length === 0, 3000, 'session to end');
    return ip;
  };
  assert.equal(await tlsIp({ 'X-Forwarded-For': '203.0.113.9' }), '203.0.113.9');
  assert.equal(await tlsIp({ 'X-Real-IP': '198.51.100.7' }), '198.51.100.7');

  for (const trustProxy of [false, true]) {
    const standalone = await startGateway({ trustProxy });
    add(() => standalone.gateway.stop());
    for (const { headers, trusted } of proxyCases) {
      const ip = await ipSeen(standalone.url, standalone.gateway, headers, add, GOOD_KEY);
      assert.equal(ip, trustProxy ? trusted : '127.0.0.1', `standalone trustProxy=${trustProxy} ${JSON.stringify(headers)}`);
    }
  }
});

// ---------------------------------------------------------------------------
// 7. Bad input

for (const tls of [false, true]) {
  const scheme = tls ? 'https' : 'http';
  test(`${scheme}: an upgrade with an Origin not in allowedOrigins gets 403 and no session`, { timeout: 15_000 }, async (t) => {
    const good = 'chrome-extension://abcdefghijklmnop';
    const ctx = await attachedSetup(t, { tls, gatewayOptions: { allowedOrigins: [good] } });
    const evil = ctx.extension({ origin: 'https://evil.example' });
    await assert.rejects(evil.open(), (e) => e.statusCode === 403);
    const none = ctx.extension();
    await assert.rejects(none.open(), (e) => e.statusCode === 403, 'no Origin at all');
    assert.equal(ctx.gateway.getHealth().activeSessions, 0);
    await waitFor(() => ctx.gateway.getHealth().connections === 0, 3000, 'refused connections to be gone');
    assert.ok(!ctx.events.some((e) => e.type === 'session-connected'));

    const ok = await ctx.extension({ origin: good }).connectReady(ctx.gateway);
    await restSendWorks(ctx, ok);
    assert.equal((await ctx.call('GET', '/api/health')).body.activeSessions, 1);
  });
}

test('http: an upgrade without Sec-WebSocket-Key gets HTTP 400 and the connection closes', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t);
  const raw = rawClient(
    ctx.port,
    `GET ${WS_PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ctx.add,
  );
  await waitFor(() => raw.closed, 5000, 'the connection to close');
  assert.match(raw.data, /^HTTP\/1\.1 400 /);
  assert.equal(ctx.gateway.getHealth().activeSessions, 0);
  await waitFor(() => ctx.gateway.getHealth().connections === 0, 3000, 'no connection left');
  // The gateway and the server keep serving.
  const ext = await ctx.extension().connectReady(ctx.gateway);
  await restSendWorks(ctx, ext);
});

test('http: an upgrade on another path, with no other upgrade listener, gets 404 and is closed; server.close() is not held', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t);
  const raw = rawClient(
    ctx.port,
    'GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    ctx.add,
  );
  await waitFor(() => raw.closed, 5000, 'the connection to close');
  assert.match(raw.data, /^HTTP\/1\.1 404 /);
  // The gateway keeps serving its own path.
  const ext = await ctx.extension().connectReady(ctx.gateway);
  await restSendWorks(ctx, ext);
  await ctx.gateway.stop();
  await new Promise((resolve, reject) => ctx.server.close((error) => (error ? reject(error) : resolve())));
});

test('http: a plain GET on the gateway path (no upgrade) is left to the user app', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t);
  const unrouted = await ctx.call('GET', WS_PATH);
  assert.equal(unrouted.status, 404, 'Express answers what it has no route for');
  assert.match(unrouted.text, /Cannot GET \/wa-ext-ws/);

  const routed = await attachedSetup(t, {
    beforeStart: ({ app }) => app.get(WS_PATH, (req, res) => res.status(200).json({ page: 'mine' })),
  });
  const page = await routed.call('GET', `${WS_PATH}?x=1`);
  assert.equal(page.status, 200);
  assert.deepEqual(page.body, { page: 'mine' });
  assert.equal(routed.gateway.getHealth().connections, 0);
  const ext = await routed.extension().connectReady(routed.gateway);
  await restSendWorks(routed, ext);
  assert.deepEqual((await routed.call('GET', WS_PATH)).body, { page: 'mine' });
});

for (const tls of [false, true]) {
  const scheme = tls ? 'https' : 'http';
  test(`${scheme}: server.close() with open sessions ends them (1001), fails pending sends with CONNECTION_LOST, and closes`, { timeout: 15_000 }, async (t) => {
    const ctx = await attachedSetup(t, { tls, gatewayOptions: { requestTimeout: 60_000 } });
    const silent = () => null;
    const a = await ctx.extension({ respond: silent }).connectReady(ctx.gateway);
    const b = await ctx.extension({ apiKey: OTHER_KEY, dialect: 'guide', respond: silent }).connectReady(ctx.gateway);

    const direct = ctx.gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'never answered' });
    const directOutcome = direct.then(
      () => assert.fail('a pending send resolved'),
      (error) => error,
    );
    await waitFor(() => a.commands.length === 1, 3000, 'the command to reach a');
    const rest = ctx.call('POST', '/api/send-message', {
      apiKey: OTHER_KEY,
      body: { phoneNumber: PHONE, message: 'never answered either' },
    });
    await waitFor(() => b.commands.length === 1, 3000, 'the command to reach b');

    let closeCallback = null;
    const serverClosed = new Promise((resolve) =>
      ctx.server.close((error) => {
        closeCallback = { error };
        resolve();
      }),
    );

    assert.deepEqual(await a.whenClosed, { code: 1001, reason: 'Server closing' });
    assert.deepEqual(await b.whenClosed, { code: 1001, reason: 'Server closing' });
    const error = await directOutcome;
    assert.equal(error.code, 'CONNECTION_LOST');
    const answered = await rest;
    assert.equal(answered.status, 400);
    assert.equal(answered.body.code, 'CONNECTION_LOST');
    await serverClosed;
    assert.equal(closeCallback.error, undefined);
    assert.equal(ctx.server.listening, false);

    await waitFor(
      () => ctx.events.filter((e) => e.type === 'session-disconnected').length === 2,
      3000,
      'two session-disconnected events',
    );
    const gone = ctx.events.filter((e) => e.type === 'session-disconnected');
    assert.deepEqual(gone.map((e) => e.sessionId).sort(), [a.sessionId, b.sessionId].sort());
    for (const event of gone) assert.equal(event.details.code, 1001);
    const failed = ctx.events.filter((e) => e.type === 'send-failed');
    assert.equal(failed.length, 2);
    assert.ok(failed.every((e) => e.details.code === 'CONNECTION_LOST'));
    assert.equal(ctx.gateway.getHealth().activeSessions, 0);
    await ctx.gateway.stop();
  });
}

test('http: stalled handshakes — a complete upgrade that never authenticates is closed after authTimeout; a partial request does not block the gateway', { timeout: 15_000 }, async (t) => {
  const ctx = await attachedSetup(t, { gatewayOptions: { authTimeout: 300 } });
  // Partial request: Node is still reading headers, the gateway never sees it.
  const partial = rawClient(ctx.port, `GET ${WS_PATH} HTTP/1.1\r\nHost: x\r\n`, ctx.add);
  // Complete upgrade, then silence.
  const silent = rawClient(
    ctx.port,
    `GET ${WS_PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    ctx.add,
  );
  await waitFor(() => silent.data.includes('\r\n\r\n'), 3000, 'the 101 answer');
  assert.match(silent.data, /^HTTP\/1\.1 101 /);
  assert.match(silent.data, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);

  // Meanwhile the gateway serves others.
  const ext = await ctx.extension().connectReady(ctx.gateway);
  await restSendWorks(ctx, ext);

  await waitFor(() => silent.closed, 5000, 'the silent upgraded connection to be closed by the gateway');
  // Its last bytes are a close frame 1008 (0x88, length, 0x03 0xF0).
  assert.ok(silent.data.includes('\x88'), 'a close frame was sent');
  assert.ok(silent.data.includes('\x03\xf0'), 'close code 1008');
  assert.equal(partial.closed, false, "the partial request is the server's (headersTimeout) business");
  await restSendWorks(ctx, ext, GOOD_KEY, 'still serving');
  await waitFor(() => ctx.gateway.getHealth().connections === 1, 3000, 'only the extension left');

  await ctx.gateway.stop();
  assert.equal((await ext.whenClosed).code, 1001);
  partial.socket.destroy();
  await partial.whenClosed;
  await closeServer(ctx.server);
  assert.equal(ctx.server.listening, false);
});

// ---------------------------------------------------------------------------
// 8. All three dialects on one attached gateway

test('one attached gateway serves the v1, doc and guide dialects with REST alongside', { timeout: 15_000 }, async (t) => {
  const keys = { v1: 'key-v1-0123456789', doc: 'key-doc-0123456789', guide: 'key-guide-0123456789' };
  const ctx = await attachedSetup(t, { validKeys: Object.values(keys) });
  const exts = {};
  for (const [dialect, apiKey] of Object.entries(keys)) {
    exts[dialect] = await ctx.extension({ dialect, apiKey }).connectReady(ctx.gateway);
  }
  for (const [dialect, ext] of Object.entries(exts)) {
    await restSendWorks(ctx, ext, keys[dialect], `hi ${dialect}`);
    const image = await ctx.call('POST', '/api/send-image', {
      apiKey: keys[dialect],
      body: { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: dialect },
    });
    assert.equal(image.status, 200, image.text);
    const command = ext.commands.at(-1);
    assert.equal(command.type, 'send-image');
    if (dialect === 'v1') assert.equal(command.data.imageDataUrl, PNG_1x1);
    if (dialect === 'doc') assert.equal(command.data.dataUrl, PNG_1x1);
    if (dialect === 'guide') assert.equal(command.data.imageDataUrl ?? command.data.dataUrl, PNG_1x1);
    const sessions = await ctx.call('GET', '/api/sessions', { apiKey: keys[dialect] });
    assert.equal(sessions.body.data.length, 1);
    assert.equal(sessions.body.data[0].sessionId, ext.sessionId);
  }
  const guideSession = ctx.gateway.getActiveSessions(keys.guide)[0];
  assert.equal(guideSession.status, 'WhatsApp Web is logged in');
  const health = await ctx.call('GET', '/api/health');
  assert.equal(health.body.activeSessions, 3);
});
