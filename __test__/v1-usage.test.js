'use strict';
// How a v1 application uses the package, written for this repository (the v1 guide's own
// examples run in guide.test.js when GUIDE_MD names the guide): the constructor with v1's
// options, start/stop, the four send methods with their v1 fields, bulk sends, the events
// an app logs, session and health queries, device selection, the error codes apps branch
// on, and the same API typed from TypeScript. Everything goes through real WebSocket
// extensions on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const pkg = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY, PNG_1x1 } = require('./helpers');

const { WhatsAppGateway, GatewayError, ERROR_CODES } = pkg;
const root = path.resolve(__dirname, '..');
const TO = '+4915112345678';
const MP4 = 'data:video/mp4;base64,AAAAGGZ0eXBtcDQyAAAAAG1wNDI=';
const PDF = 'data:application/pdf;base64,JVBERi0xLjQKJcfsj6IK';

async function devices(url, gateway, n, options = {}) {
  const list = [];
  for (let i = 0; i < n; i++) list.push(await new FakeExtension(url, options).connectReady(gateway));
  return list;
}

test('v1 constructor: a config with v1 options starts, reports health, stops, and starts again', async () => {
  const seen = [];
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    path: '/whatsapp',
    heartbeatInterval: 15000,
    heartbeatTimeout: 45000,
    requestTimeout: 20000,
    maxSessionsPerKey: 3,
    deviceSelectionStrategy: 'round-robin',
    validateApiKey: (apiKey) => (apiKey === GOOD_KEY ? { valid: true, userId: 42 } : { valid: false, reason: 'unknown key' }),
    onMessageLog: (event) => seen.push(event),
    onError: () => {},
  });
  assert.equal(gateway.isRunning, false);
  assert.equal(gateway.getHealth().status, 'stopped');
  await gateway.start();
  try {
    assert.equal(gateway.isRunning, true);
    const health = gateway.getHealth();
    assert.equal(health.status, 'running');
    assert.equal(health.activeSessions, 0);
    assert.equal(typeof health.uptime, 'number');
    assert.equal(typeof health.timestamp, 'number');
    const { port } = gateway.address();
    assert.equal(health.port, port);

    // The configured path is where extensions connect; the user id comes from the validator.
    const ext = await new FakeExtension(`ws://127.0.0.1:${port}/whatsapp`).connectReady(gateway);
    const [session] = gateway.getActiveSessions(GOOD_KEY);
    assert.equal(session.sessionId, ext.sessionId);
    assert.equal(session.userId, 42);
    assert.equal(gateway.getHealth().activeSessions, 1);
  } finally {
    await gateway.stop();
  }
  assert.equal(gateway.isRunning, false);
  assert.equal(gateway.getHealth().status, 'stopped');
  await gateway.stop(); // a second stop is harmless
  await gateway.start();
  assert.equal(gateway.getHealth().status, 'running');
  await gateway.stop();
  assert.ok(seen.some((e) => e.type === 'session-connected' && e.userId === 42));
});

test('v1 constructor: validateApiKey is required, a wrong type is a TypeError naming the option', () => {
  assert.throws(() => new WhatsAppGateway({}), (e) => e instanceof TypeError && /validateApiKey/.test(e.message));
  assert.throws(
    () => new WhatsAppGateway({ validateApiKey: () => ({ valid: true }), requestTimeout: 'soon' }),
    (e) => e instanceof TypeError && /requestTimeout/.test(e.message),
  );
});

test('v1 sends: text, image, video and document reach the extension and resolve with the result', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const [ext] = await devices(url, gateway, 1);

  const text = await gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: 'Hi there' });
  assert.equal(text.success, true);
  assert.equal(typeof text.requestId, 'string');
  assert.equal(typeof text.messageId, 'string');
  assert.equal(typeof text.timestamp, 'number');
  assert.equal(text.deviceInfo.sessionId, ext.sessionId);
  const textCommand = ext.commands.at(-1);
  assert.equal(textCommand.type, 'send-message');
  assert.equal(textCommand.requestId, text.requestId);
  assert.equal(textCommand.data.phoneNumber, TO);
  assert.equal(textCommand.data.message, 'Hi there');

  // v1 named the image field imageDataUrl; dataUrl is accepted as well.
  const image = await gateway.sendImage(GOOD_KEY, { phoneNumber: TO, imageDataUrl: PNG_1x1, caption: 'a dot' });
  assert.equal(image.success, true);
  const imageCommand = ext.commands.at(-1);
  assert.equal(imageCommand.type, 'send-image');
  assert.equal(imageCommand.data.caption, 'a dot');
  assert.equal(imageCommand.data.imageDataUrl ?? imageCommand.data.dataUrl, PNG_1x1);
  await gateway.sendImage(GOOD_KEY, { phoneNumber: TO, dataUrl: PNG_1x1 });
  assert.equal(ext.commands.at(-1).type, 'send-image');

  const video = await gateway.sendVideo(GOOD_KEY, { phoneNumber: TO, dataUrl: MP4, caption: 'clip' });
  assert.equal(video.success, true);
  const videoCommand = ext.commands.at(-1);
  assert.equal(videoCommand.type, 'send-video');
  assert.equal(videoCommand.data.caption, 'clip');
  assert.equal(videoCommand.data.videoDataUrl ?? videoCommand.data.dataUrl, MP4);

  const doc = await gateway.sendDocument(GOOD_KEY, { phoneNumber: TO, dataUrl: PDF, documentName: 'offer.pdf', caption: 'the offer' });
  assert.equal(doc.success, true);
  const docCommand = ext.commands.at(-1);
  assert.equal(docCommand.type, 'send-document');
  assert.equal(docCommand.data.documentName, 'offer.pdf');
  assert.equal(docCommand.data.caption, 'the offer');
  assert.equal(docCommand.data.documentDataUrl ?? docCommand.data.dataUrl, PDF);

  // One success event per kind, carrying the request id the caller got.
  const sent = (type, result) =>
    waitFor(() => events.find((e) => e.type === type && e.requestId === result.requestId), 3000, type);
  for (const [type, result] of [['message-sent', text], ['image-sent', image], ['video-sent', video], ['document-sent', doc]]) {
    const event = await sent(type, result);
    assert.equal(event.apiKey, GOOD_KEY);
    assert.equal(event.sessionId, ext.sessionId);
    assert.equal(event.phoneNumber, TO);
    assert.equal(event.status, 'success');
    assert.equal(typeof event.timestamp, 'number');
  }
});

test('v1 bulk sends: Promise.allSettled over many recipients, each settles once', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  await devices(url, gateway, 2);
  const recipients = ['+491701111111', '+491702222222', '+491703333333', 'not-a-number'];
  const results = await Promise.allSettled(
    recipients.map((phoneNumber) => gateway.sendMessage(GOOD_KEY, { phoneNumber, message: `Hello ${phoneNumber}` })),
  );
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
  assert.equal(results[3].reason.code, 'VALIDATION_ERROR');
  assert.equal(new Set(results.slice(0, 3).map((r) => r.value.requestId)).size, 3);
});

test('v1 events: connect, status, a failed send and a disconnect, through onMessageLog and as emitted events', async (t) => {
  const { gateway, url, events, errors } = await startGateway();
  t.after(() => gateway.stop());
  const emitted = [];
  gateway.on('send-failed', (event) => emitted.push(event));
  const ext = await new FakeExtension(url, {
    respond: (command) => (command.data.message === 'fail me' ? { success: false, error: 'chat not found' } : { success: true, messageId: 'm1' }),
  }).connectReady(gateway);

  const connected = events.find((e) => e.type === 'session-connected');
  assert.equal(connected.sessionId, ext.sessionId);
  assert.equal(connected.apiKey, GOOD_KEY);
  assert.equal(connected.details.ip, '127.0.0.1');
  await waitFor(() => events.some((e) => e.type === 'session-status' && e.details.ready === true), 3000, 'session-status');

  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: 'fail me' }), (e) => {
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, 'EXTENSION_ERROR');
    assert.equal(e.details.sessionId, ext.sessionId);
    return true;
  });
  const failed = await waitFor(() => events.find((e) => e.type === 'send-failed'), 3000, 'send-failed');
  assert.equal(failed.status, 'failure');
  assert.equal(failed.details.code, 'EXTENSION_ERROR');
  await waitFor(() => emitted.length === 1, 3000, "the 'send-failed' listener");
  assert.ok(errors.some((e) => e.code === 'EXTENSION_ERROR'));

  await ext.close();
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected'), 3000, 'session-disconnected');
  assert.equal(gone.sessionId, ext.sessionId);
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
});

test('v1 sessions: getActiveSessions per key, a refused key, and the per-key session limit', async (t) => {
  const { gateway, url, errors } = await startGateway({ maxSessionsPerKey: 2 });
  t.after(() => gateway.stop());
  const mine = await devices(url, gateway, 2);
  const theirs = await devices(url, gateway, 1, { apiKey: OTHER_KEY });

  const sessions = gateway.getActiveSessions(GOOD_KEY);
  assert.deepEqual(sessions.map((s) => s.sessionId).sort(), mine.map((d) => d.sessionId).sort());
  for (const s of sessions) {
    assert.equal(s.deviceActive, true);
    assert.equal(s.whatsappLoggedIn, true);
    assert.equal(s.ip, '127.0.0.1');
    assert.equal(typeof s.connectedAt, 'number');
    assert.equal(typeof s.lastHeartbeat, 'number');
  }
  assert.equal(gateway.getActiveSessions(OTHER_KEY)[0].sessionId, theirs[0].sessionId);
  assert.deepEqual(gateway.getActiveSessions('nobody-0123456789'), []);
  assert.equal(gateway.getHealth().activeSessions, 3);

  const stranger = new FakeExtension(url, { apiKey: 'wrong-key-0123456789' });
  t.after(() => stranger.ws?.terminate());
  await stranger.open();
  await assert.rejects(stranger.authenticate(), (e) => e.frame?.code === 'AUTHENTICATION_FAILED');
  await waitFor(() => errors.some((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'AUTHENTICATION_FAILED in onError');

  const third = new FakeExtension(url);
  t.after(() => third.ws?.terminate());
  await third.open();
  await assert.rejects(third.authenticate(), (e) => e.frame?.code === 'MAX_SESSIONS_EXCEEDED');
});

test('v1 device selection: round-robin spreads evenly, random stays among the key\'s devices, per call too', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const list = await devices(url, gateway, 3);
  const ids = new Set(list.map((d) => d.sessionId));

  const count = async (n, options = {}) => {
    const used = {};
    for (let i = 0; i < n; i++) {
      const r = await gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: `n${i}`, ...options });
      used[r.deviceInfo.sessionId] = (used[r.deviceInfo.sessionId] ?? 0) + 1;
    }
    return used;
  };
  const even = await count(30);
  assert.deepEqual(Object.values(even), [10, 10, 10]);
  const random = await count(30, { deviceSelectionStrategy: 'random' });
  assert.ok(Object.keys(random).every((id) => ids.has(id)));
  assert.equal(Object.values(random).reduce((a, b) => a + b, 0), 30);
});

test('v1 errors: the codes apps branch on, with the details they read', async (t) => {
  assert.equal(ERROR_CODES.VALIDATION_ERROR, 'VALIDATION_ERROR');
  assert.equal(ERROR_CODES.NO_ACTIVE_DEVICE, 'NO_ACTIVE_DEVICE');
  assert.equal(ERROR_CODES.REQUEST_TIMEOUT, 'REQUEST_TIMEOUT');
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());

  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: '4915112345678', message: 'x' }), (e) => {
    assert.ok(e instanceof GatewayError && e instanceof Error);
    assert.equal(e.code, 'VALIDATION_ERROR');
    assert.equal(e.details.field, 'phoneNumber');
    assert.equal(e.details.value, '4915112345678');
    assert.match(e.message, /\+/);
    return true;
  });
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: TO }), (e) => e.code === 'VALIDATION_ERROR' && e.details.field === 'message');
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: 'x' }), (e) => e.code === 'NO_ACTIVE_DEVICE');

  const silent = await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const started = Date.now();
  await assert.rejects(gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: 'anyone?', timeout: 300 }), (e) => {
    assert.equal(e.code, 'REQUEST_TIMEOUT');
    assert.equal(e.details.requestId, silent.commands[0].requestId);
    assert.equal(e.details.timeout, 300);
    return true;
  });
  assert.ok(Date.now() - started >= 250, 'the per-call timeout was waited for');

  // A retry after a timeout is a new send with its own request id.
  const retry = gateway.sendMessage(GOOD_KEY, { phoneNumber: TO, message: 'anyone?', timeout: 5000 });
  await waitFor(() => silent.commands.length === 2, 3000, 'the retried command');
  silent.result(silent.commands[1].requestId, { success: true, messageId: 'late-but-ok' });
  const ok = await retry;
  assert.equal(ok.messageId, 'late-but-ok');
  assert.notEqual(ok.requestId, silent.commands[0].requestId);
});

test('v1 usage type-checks in TypeScript against index.d.ts', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-v1-ts-'));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
    fs.writeFileSync(
      path.join(dir, 'app.ts'),
      `import { WhatsAppGateway, GatewayError, type GatewayConfig } from 'whatsapp-ws-extension-gateway';

const keys = new Map<string, number>([['k-1', 7]]);
const config: GatewayConfig = {
  port: 3100,
  path: '/whatsapp',
  requestTimeout: 20000,
  validateApiKey: async (apiKey: string) => (keys.has(apiKey) ? { valid: true, userId: keys.get(apiKey) } : { valid: false }),
  onMessageLog: (event) => {
    const when: number = event.timestamp;
    void when;
  },
  onError: (error) => {
    const code: string = error.code;
    void code;
  },
};

export async function main(): Promise<void> {
  const gateway = new WhatsAppGateway(config);
  await gateway.start();
  const sent = await gateway.sendMessage('k-1', { phoneNumber: '+4915112345678', message: 'hi' });
  const id: string = sent.requestId;
  const session: string = sent.deviceInfo.sessionId;
  await gateway.sendImage('k-1', { phoneNumber: '+4915112345678', dataUrl: 'data:image/png;base64,AA==', caption: 'c' });
  await gateway.sendVideo('k-1', { phoneNumber: '+4915112345678', dataUrl: 'data:video/mp4;base64,AA==' });
  await gateway.sendDocument('k-1', { phoneNumber: '+4915112345678', dataUrl: 'data:application/pdf;base64,AA==', documentName: 'a.pdf' });
  const active: number = gateway.getActiveSessions('k-1').length;
  const status: 'running' | 'stopped' = gateway.getHealth().status;
  try {
    await gateway.sendMessage('k-1', { phoneNumber: 'bad', message: 'x', timeout: 1000 });
  } catch (e) {
    if (e instanceof GatewayError && e.code === 'VALIDATION_ERROR') console.log(e.details);
  }
  console.log(id, session, active, status);
  await gateway.stop();
}
`,
    );
    // Wrong usage must not type-check: the test would be blind otherwise.
    fs.writeFileSync(
      path.join(dir, 'wrong.ts'),
      `import { WhatsAppGateway } from 'whatsapp-ws-extension-gateway';
const gateway = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }) });
// @ts-expect-error phoneNumber is required
void gateway.sendMessage('k', { message: 'x' });
// @ts-expect-error the strategy is one of three names
void gateway.sendMessage('k', { phoneNumber: '+1', message: 'x', deviceSelectionStrategy: 'fastest' });
`,
    );
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
    execFileSync(process.execPath, [tsc, ...flags, 'app.ts', 'wrong.ts'], { cwd: dir, stdio: 'pipe' });
  } catch (error) {
    assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
