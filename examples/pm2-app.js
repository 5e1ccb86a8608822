'use strict';
// The gateway behind PM2 in cluster mode (README "Deploying"): every worker runs this
// Express app with the gateway attached and `cluster: { redis }`; `pm2 reload` replaces
// the workers one at a time without losing a send. Run it with examples/ecosystem.config.js:
//
//   REDIS_URL=redis://127.0.0.1:6379 pm2 start examples/ecosystem.config.js
//   pm2 reload wa-gateway
const http = require('node:http');
const express = require('express');
const { WhatsAppGateway } = require('whatsapp-ws-extension-gateway');

const API_KEYS = new Set((process.env.API_KEYS ?? 'demo-key-123456').split(','));

const app = express();
app.use(express.json({ limit: '15mb' }));
const server = http.createServer(app);

const gateway = new WhatsAppGateway({
  server,
  validateApiKey: async (apiKey) => (API_KEYS.has(apiKey) ? { valid: true } : { valid: false, reason: 'unknown key' }),
  cluster: { redis: process.env.REDIS_URL, secret: process.env.CLUSTER_SECRET },
  // A send waits up to 10 s for a device of its key, on any worker: while a worker
  // restarts, its extensions reconnect to another one.
  waitForDevice: 10_000,
  onError: (error) => console.error(`[gateway] ${error.code}: ${error.message}`),
});

app.post('/send', async (req, res) => {
  try {
    res.json(await gateway.sendMessage(req.get('x-api-key') ?? '', req.body ?? {}));
  } catch (error) {
    const status = { VALIDATION_ERROR: 400, NO_ACTIVE_DEVICE: 409, REQUEST_TIMEOUT: 504, CLUSTER_UNAVAILABLE: 503 }[error.code] ?? 502;
    res.status(status).json({ code: error.code, message: error.message, details: error.details });
  }
});
// Kubernetes probes, or any load balancer's health check.
app.get('/healthz', (_req, res) => res.sendStatus(gateway.getHealth().live ? 200 : 503));
app.get('/readyz', (_req, res) => res.sendStatus(gateway.getHealth().ready ? 200 : 503));

async function main() {
  await gateway.start();
  await new Promise((resolve, reject) => server.listen(Number(process.env.PORT ?? 3000), resolve).once('error', reject));
  // With `wait_ready`, PM2 stops the old worker only once this one can serve.
  process.send?.('ready');
}

let leaving = false;
async function shutdown() {
  if (leaving) return;
  leaving = true;
  // First no new requests or extension connections (they go to the other workers);
  // requests under way finish their sends here.
  await new Promise((resolve) => server.close(resolve));
  // Then the gateway drains: sends in flight finish, its extensions are closed (1001)
  // and reconnect to another worker.
  await gateway.stop();
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

main().catch((error) => {
  console.error(`cannot start: ${error.code ?? ''} ${error.message}`);
  process.exit(1);
});
