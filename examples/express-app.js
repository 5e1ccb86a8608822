'use strict';
// An Express app with the gateway attached to its HTTP server: extensions connect
// to ws://<host>:<port>/wa-ext-ws, and the app offers REST routes to send, a health
// check and Prometheus metrics. Run it with `node examples/express-app.js` (PORT to
// change the port; API_KEYS, comma-separated, for the keys extensions may use).
//
//   curl localhost:3000/health
//   curl localhost:3000/metrics
//   curl -X POST localhost:3000/api/send-message -H 'content-type: application/json' \
//        -H 'x-api-key: demo-key-123456' -d '{"phoneNumber":"+1234567890","message":"Hi"}'
const http = require('node:http');
const express = require('express');
const { WhatsAppGateway } = require('whatsapp-ws-extension-gateway');

const PORT = Number(process.env.PORT ?? 3000);
const API_KEYS = new Set((process.env.API_KEYS ?? 'demo-key-123456').split(','));

const app = express();
app.use(express.json({ limit: '15mb' }));
const server = http.createServer(app);

const gateway = new WhatsAppGateway({
  server,
  // Look the key up in your own store; a throw here tells the extension to retry later.
  validateApiKey: async (apiKey) =>
    API_KEYS.has(apiKey) ? { valid: true, userId: `user-of-${apiKey.slice(0, 4)}` } : { valid: false, reason: 'unknown key' },
  onError: (error) => console.error(`[gateway] ${error.code}: ${error.message}`),
  // Behind a reverse proxy (README "Deploying": nginx), TRUST_PROXY=1: the client's address
  // is the one the proxy puts in X-Real-IP / X-Forwarded-For.
  trustProxy: process.env.TRUST_PROXY === '1',
});
gateway.on('session-connected', (e) => console.log(`[gateway] extension connected from ${e.details.ip}`));
gateway.on('session-disconnected', (e) => console.log(`[gateway] extension left (${e.details.code} ${e.details.reason})`));

/** The caller's API key: the same key its extension authenticates with. */
function apiKeyOf(req) {
  return req.get('x-api-key') ?? '';
}

/** Runs a send and answers with its result, or with the gateway's error and a fitting status. */
function sendRoute(method) {
  return async (req, res) => {
    try {
      res.json(await gateway[method](apiKeyOf(req), req.body ?? {}));
    } catch (error) {
      const status = { VALIDATION_ERROR: 400, NO_ACTIVE_DEVICE: 409, MEDIA_NOT_ALLOWED: 400, FILE_TOO_LARGE: 413, REQUEST_TIMEOUT: 504 }[error.code] ?? 502;
      res.status(status).json({ code: error.code, message: error.message, details: error.details });
    }
  };
}

app.post('/api/send-message', sendRoute('sendMessage'));
app.post('/api/send-image', sendRoute('sendImage'));
app.post('/api/send-video', sendRoute('sendVideo'));
app.post('/api/send-document', sendRoute('sendDocument'));
app.get('/api/sessions', (req, res) => res.json(gateway.getActiveSessions(apiKeyOf(req))));
app.get('/health', (_req, res) => {
  const health = gateway.getHealth();
  res.status(health.status === 'running' ? 200 : 503).json(health);
});
// Kubernetes probes: restart when not live, send no traffic when not ready.
app.get('/healthz', (_req, res) => res.sendStatus(gateway.getHealth().live ? 200 : 503));
app.get('/readyz', (_req, res) => res.sendStatus(gateway.getHealth().ready ? 200 : 503));
app.get('/metrics', (_req, res) => res.type('text/plain; version=0.0.4').send(gateway.metrics()));

async function main() {
  await gateway.start();
  await new Promise((resolve, reject) => server.listen(PORT, resolve).once('error', reject));
  console.log(`Listening on http://localhost:${server.address().port} (extensions: ws://localhost:${server.address().port}/wa-ext-ws)`);
}

async function shutdown() {
  await gateway.stop();
  server.close();
}
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);

main().catch((error) => {
  console.error(`Cannot start: ${error.message}`);
  process.exitCode = 1;
  shutdown();
});
