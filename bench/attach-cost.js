'use strict';
// What attaching costs: round trips and media through the standalone server, an
// attached http.Server (the socket goes to Rust) and an attached https.Server (Node
// decrypts and relays the bytes). The extension is a ws client in a child process.
// Usage: node bench/attach-cost.js
const { fork } = require('node:child_process');
const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const selfsigned = require('selfsigned');
const { WhatsAppGateway } = require('..');

const KEY = 'bench-key-000001';

if (process.argv[2] === 'extension') {
  const WebSocket = require('ws');
  const ws = new WebSocket(process.argv[3], { rejectUnauthorized: false, maxPayload: 64 << 20 });
  ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', apiKey: KEY, data: {} })));
  ws.on('message', (raw) => {
    const text = raw.toString();
    if (text.includes('"auth-success"')) ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
    const id = /"requestId":"([^"]+)"/.exec(text)?.[1];
    if (id) ws.send(`{"type":"message-result","requestId":"${id}","success":true}`);
  });
  return;
}

async function measure(mode, pems, image) {
  const server = mode === 'https' ? https.createServer({ cert: pems.cert, key: pems.private }) : http.createServer();
  const options = { validateApiKey: () => ({ valid: true }), maxPayload: 16 << 20, dialect: 'v1' };
  const gateway = new WhatsAppGateway(mode === 'standalone' ? { ...options, port: '0', host: '127.0.0.1' } : { ...options, server });
  await gateway.start();
  if (mode !== 'standalone') await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = mode === 'standalone' ? gateway.address().port : server.address().port;
  const child = fork(__filename, ['extension', `${mode === 'https' ? 'wss' : 'ws'}://127.0.0.1:${port}/wa-ext-ws`]);
  while (!gateway.getActiveSessions(KEY).some((s) => s.deviceActive)) await new Promise((r) => setTimeout(r, 10));

  const send = () => gateway.sendMessage(KEY, { phoneNumber: '+1234567890', message: 'benchmark message' });
  let calls = 0;
  const until = Date.now() + 3000;
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (Date.now() < until) {
      await send();
      calls++;
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  const wall = (Date.now() - t0) / 1000;
  const m0 = Date.now();
  for (let i = 0; i < 10; i++) await gateway.sendImage(KEY, { phoneNumber: '+1234567890', imageDataUrl: image });
  const mediaMBps = (10 * (image.length - 22) * 0.75) / ((Date.now() - m0) / 1000) / 1e6;
  child.kill();
  await gateway.stop();
  server.close();
  return {
    mode,
    callsPerSec: Math.round(calls / wall),
    gatewayCpuUsPerCall: +((cpu.user + cpu.system) / calls).toFixed(1),
    mediaMBps: +mediaMBps.toFixed(1),
  };
}

(async () => {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], { days: 1, keySize: 2048 });
  const image = `data:image/png;base64,${crypto.randomBytes(4 << 20).toString('base64')}`;
  for (let round = 0; round < 2; round++) {
    for (const mode of ['standalone', 'http', 'https']) console.log(await measure(mode, pems, image));
  }
})();
