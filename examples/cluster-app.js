'use strict';
// Several worker processes on one port, acting as one gateway (cluster mode, README "Cluster mode").
// The primary forks WORKERS workers (node:cluster); each runs a plain HTTP server on the
// shared PORT with the gateway attached to it and `cluster: { redis: REDIS_URL }`. An
// extension lands on one worker, a REST call on any other, and the send still reaches it:
// the workers find each other's devices through Redis.
//
//   REDIS_URL=redis://127.0.0.1:6379 WORKERS=2 PORT=3000 node examples/cluster-app.js
//
//   curl localhost:3000/sessions -H 'x-api-key: demo-key-123456'
//   curl -X POST localhost:3000/send -H 'content-type: application/json' \
//        -H 'x-api-key: demo-key-123456' -d '{"phoneNumber":"+1234567890","message":"Hi"}'
//
// Every answer says which worker handled it (`worker`, `pid`, `nodeId`). API_KEYS,
// comma-separated, are the keys extensions may use.
const cluster = require('node:cluster');
const http = require('node:http');

const PORT = Number(process.env.PORT ?? 3000);
const WORKERS = Math.max(1, Number(process.env.WORKERS ?? 2));
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const API_KEYS = new Set((process.env.API_KEYS ?? 'demo-key-123456').split(','));

function runPrimary() {
  let stopping = false;
  const listening = new Set();
  const forkWorker = () => cluster.fork();

  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    if (listening.size === WORKERS) {
      console.log(`Listening on http://localhost:${address.port} with ${WORKERS} workers (extensions: ws://localhost:${address.port}/wa-ext-ws)`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    listening.delete(worker.id);
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    // A crashed worker's extensions reconnect to the others; a new worker takes its place.
    console.error(`worker ${worker.id} died (${signal ?? code}); starting another`);
    setTimeout(forkWorker, 1000);
  });
  for (let i = 0; i < WORKERS; i++) forkWorker();

  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    // Each worker drains its gateway (in-flight sends finish) before it leaves.
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

function runWorker() {
  const { WhatsAppGateway } = require('whatsapp-ws-extension-gateway');
  const server = http.createServer((req, res) => route(req, res));
  const gateway = new WhatsAppGateway({
    server,
    validateApiKey: async (apiKey) =>
      API_KEYS.has(apiKey) ? { valid: true, userId: `user-of-${apiKey.slice(0, 4)}` } : { valid: false, reason: 'unknown key' },
    // nodeId defaults to one unique per process; keyPrefix isolates apps sharing a Redis.
    cluster: { redis: REDIS_URL },
    onError: (error) => console.error(`[worker ${cluster.worker.id}] ${error.code}: ${error.message}`),
  });

  /** Which process answered: the point of this example. */
  const me = () => ({ worker: cluster.worker.id, pid: process.pid, nodeId: gateway.getHealth().cluster?.nodeId });

  const reply = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...body, handledBy: me() }));
  };

  const readJson = (req) =>
    new Promise((resolve, reject) => {
      let text = '';
      req.setEncoding('utf8');
      req.on('data', (chunk) => {
        text += chunk;
        if (text.length > 1_000_000) reject(Object.assign(new Error('body too large'), { status: 413 }));
      });
      req.on('end', () => {
        try {
          resolve(text ? JSON.parse(text) : {});
        } catch {
          reject(Object.assign(new Error('body is not JSON'), { status: 400 }));
        }
      });
      req.on('error', reject);
    });

  async function route(req, res) {
    const apiKey = req.headers['x-api-key'] ?? '';
    try {
      if (req.method === 'POST' && req.url === '/send') {
        const body = await readJson(req);
        return reply(res, 200, { result: await gateway.sendMessage(apiKey, body) });
      }
      if (req.method === 'GET' && req.url === '/sessions') {
        // Cluster-wide, each session with the nodeId of the worker holding it.
        return reply(res, 200, { sessions: await gateway.getActiveSessions(apiKey) });
      }
      if (req.method === 'GET' && req.url === '/health') {
        const health = gateway.getHealth();
        return reply(res, health.status === 'running' ? 200 : 503, { health });
      }
      reply(res, 404, { error: 'not found' });
    } catch (error) {
      const status =
        error.status ??
        { VALIDATION_ERROR: 400, NO_ACTIVE_DEVICE: 409, REQUEST_TIMEOUT: 504, CLUSTER_UNAVAILABLE: 503 }[error.code] ??
        502;
      reply(res, status, { error: { code: error.code, message: error.message, details: error.details } });
    }
  }

  async function main() {
    await gateway.start();
    // In a worker, listen() shares the primary's port (PORT=0: one free port for all).
    await new Promise((resolve, reject) => server.listen(PORT, resolve).once('error', reject));
  }

  // SIGTERM from the primary; SIGINT when Ctrl-C reaches the whole process group.
  // First no new requests or extension connections (in cluster mode server.close() keeps
  // the sessions), requests under way finish; then the gateway drains.
  let leaving = false;
  const leave = async () => {
    if (leaving) return;
    leaving = true;
    await new Promise((resolve) => server.close(resolve));
    await gateway.stop();
    process.exit(0);
  };
  process.on('SIGTERM', leave);
  process.on('SIGINT', leave);

  main().catch((error) => {
    console.error(`[worker ${cluster.worker.id}] cannot start: ${error.code ?? ''} ${error.message}`);
    process.exit(1);
  });
}

if (cluster.isPrimary) runPrimary();
else runWorker();
