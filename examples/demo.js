'use strict';
// `npm start`: a gateway on port 3000 (PORT to change it; PORT=0 picks a free one),
// a simulated extension connected to it, a text and an image sent through it. It
// keeps serving until Ctrl+C (or SIGTERM, as from Docker or systemd), so a real
// extension can connect with the demo key too.
const WebSocket = require('ws');
const { WhatsAppGateway } = require('..');

const PORT = process.env.PORT || 3000;
const DEMO_KEY = 'demo-key-123456';
const RED_DOT_PNG =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

const gateway = new WhatsAppGateway({
  port: PORT,
  validateApiKey: async (apiKey) =>
    apiKey === DEMO_KEY ? { valid: true, userId: 'demo-user' } : { valid: false, reason: 'unknown key' },
  onMessageLog: (event) => console.log(`  event  ${event.type}`, event.details ?? event.phoneNumber ?? ''),
  onError: (error) => console.log(`  error  ${error.code}: ${error.message}`),
});

/** A pretend browser extension: authenticates, reports WhatsApp Web ready, and
 *  answers every command with a success after a short "typing" delay. */
function connectSimulatedExtension(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/wa-ext-ws`);
  ws.on('open', () => {
    ws.send(JSON.stringify({ type: 'auth', apiKey: DEMO_KEY, data: { extensionVersion: 'demo', browser: 'node' } }));
  });
  return new Promise((resolve) => {
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw);
      if (frame.type === 'auth-success') {
        ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
        setTimeout(() => resolve(ws), 50);
      } else if (frame.type === 'ping') {
        ws.send(JSON.stringify({ type: 'heartbeat', timestamp: Date.now() }));
      } else if (frame.type.startsWith('send-')) {
        const what = frame.data.message ?? `${frame.data.mimeType}, ${frame.data.dataUrl.length} chars`;
        console.log(`  extension received ${frame.type} for ${frame.data.phoneNumber}: ${what}`);
        setTimeout(() => {
          ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: `demo-${Date.now()}` }));
        }, 100);
      }
    });
  });
}

async function main() {
  await gateway.start();
  const { port } = gateway.address();
  console.log(`Gateway listening on ws://localhost:${port}/wa-ext-ws (API key for extensions: ${DEMO_KEY})`);
  await connectSimulatedExtension(port);
  console.log('Simulated extension connected:', gateway.getActiveSessions(DEMO_KEY).map((s) => s.sessionId));

  const text = await gateway.sendMessage(DEMO_KEY, { phoneNumber: '+1234567890', message: 'Hello from the demo!' });
  console.log('sendMessage resolved:', text);
  const image = await gateway.sendImage(DEMO_KEY, { phoneNumber: '+1234567890', dataUrl: RED_DOT_PNG, caption: 'A red dot' });
  console.log('sendImage resolved:', image);
  console.log('Health:', gateway.getHealth());
  console.log('Still serving; connect a real extension or press Ctrl+C to stop.');
}

async function shutdown(signal) {
  console.log(`\n${signal}: stopping...`);
  await gateway.stop();
  process.exit(0);
}
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);

main().catch(async (error) => {
  console.error('Demo failed:', error.code ?? '', error.message);
  await gateway.stop();
  process.exit(1);
});
