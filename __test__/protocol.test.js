'use strict';
// The extension side of the gateway (docs/extension-protocol.md): the three client dialects,
// error frames, auth and its failures, limits, upgrades, events, heartbeats and
// session listings, all observed through real WebSocket connections.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY, PNG_1x1 } = require('./helpers');

const PHONE = '+15551234567';
const VIDEO_MP4 = `data:video/mp4;base64,${Buffer.from('\0\0\0\x18ftypisom\0\0\0\0isommp41').toString('base64')}`;
const PDF = `data:application/pdf;base64,${Buffer.from('%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n').toString('base64')}`;
const MEDIA_FIELD = { image: 'imageDataUrl', video: 'videoDataUrl', document: 'documentDataUrl' };
const SESSION_FIELDS = [
  'sessionId',
  'status',
  'ready',
  'whatsappLoggedIn',
  'deviceActive',
  'connectedAt',
  'lastHeartbeat',
  'lastStatusUpdate',
  'extensionVersion',
  'browser',
  'ip',
  'userId',
];

// ---- local helpers ----

/**
 * A bare WebSocket client: records every frame, answers nothing by itself (no
 * heartbeats), so it is silent unless the test makes it speak.
 */
class RawClient {
  constructor(url, options) {
    this.frames = [];
    this.closed = null;
    this.ws = new WebSocket(url, options);
    this.ws.on('message', (data, isBinary) => {
      const text = data.toString();
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        frame = { unparsable: text, isBinary };
      }
      this.frames.push({ frame, consumed: false });
    });
    this.whenClosed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
      });
    });
    this.ws.on('error', (error) => {
      this.error = error;
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('close', () => reject(this.error ?? new Error('closed before open')));
    });
  }

  send(frame) {
    this.ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame));
  }

  next(predicate = () => true, ms = 3000) {
    return waitFor(
      () => {
        const found = this.frames.find((f) => !f.consumed && predicate(f.frame));
        if (found) found.consumed = true;
        return found?.frame;
      },
      ms,
      'a frame from the gateway',
    );
  }

  types() {
    return this.frames.map((f) => f.frame.type);
  }

  close(code = 1000) {
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code);
    return this.whenClosed;
  }
}

/**
 * Tries an upgrade; resolves with 101 if it was accepted (and closes the socket),
 * else with the HTTP status the `ws` client reports in its error.
 */
function upgradeStatus(url, options) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, options);
    let status = null;
    ws.on('unexpected-response', (req, res) => {
      status = res.statusCode;
      res.resume();
      req.destroy();
      resolve(status);
    });
    ws.on('open', () => {
      status = 101;
      ws.close();
    });
    ws.on('error', (error) => {
      const match = /Unexpected server response: (\d+)/.exec(error.message);
      if (match) status = Number(match[1]);
    });
    ws.on('close', () => resolve(status));
  });
}

function newExtension(t, url, options) {
  const ext = new FakeExtension(url, options);
  t.after(() => (ext.ws ? ext.close() : undefined));
  return ext;
}

function newRaw(t, url, options) {
  const client = new RawClient(url, options);
  t.after(() => client.close());
  return client;
}

function assertErrorFrame(frame, code) {
  assert.equal(frame.type, 'error');
  assert.equal(frame.code, code);
  assert.equal(typeof frame.message, 'string');
  assert.ok(frame.message.length > 0, 'error frame message is not empty');
  assert.deepEqual(frame.error, { code, message: frame.message });
}

/** Sends a text, an image, a video and two documents; returns the commands by kind. */
async function sendEveryKind(gateway, ext, apiKey) {
  const sends = {
    message: () => gateway.sendMessage(apiKey, { phoneNumber: PHONE, message: 'Hello there' }),
    image: () => gateway.sendImage(apiKey, { phoneNumber: PHONE, dataUrl: PNG_1x1, caption: 'an image' }),
    video: () => gateway.sendVideo(apiKey, { phoneNumber: PHONE, videoDataUrl: VIDEO_MP4, caption: 'a video' }),
    document: () => gateway.sendDocument(apiKey, { phoneNumber: PHONE, documentDataUrl: PDF, caption: 'a doc' }),
    namedDocument: () =>
      gateway.sendDocument(apiKey, { phoneNumber: PHONE, dataUrl: PDF, documentName: 'report-q1.pdf', caption: 'named' }),
  };
  const commands = {};
  for (const [name, send] of Object.entries(sends)) {
    const result = await send();
    assert.equal(result.success, true, `${name} resolves with success`);
    assert.equal(result.deviceInfo.sessionId, ext.sessionId);
    const command = ext.commands.find((c) => c.requestId === result.requestId);
    assert.ok(command, `${name}: the extension received the command`);
    assert.equal(result.messageId, `msg-${result.requestId.slice(0, 8)}`);
    commands[name] = command;
  }
  assert.equal(commands.message.type, 'send-message');
  assert.deepEqual(commands.message.data, { phoneNumber: PHONE, message: 'Hello there' });
  assert.equal(commands.image.type, 'send-image');
  assert.equal(commands.video.type, 'send-video');
  assert.equal(commands.document.type, 'send-document');
  assert.equal(commands.namedDocument.type, 'send-document');
  for (const [name, mime, caption] of [
    ['image', 'image/png', 'an image'],
    ['video', 'video/mp4', 'a video'],
    ['document', 'application/pdf', 'a doc'],
    ['namedDocument', 'application/pdf', 'named'],
  ]) {
    const { data } = commands[name];
    assert.equal(data.phoneNumber, PHONE);
    assert.equal(data.mimeType, mime, `${name} carries mimeType`);
    assert.equal(data.caption, caption, `${name} carries caption`);
  }
  assert.equal(commands.document.data.documentName, 'document.pdf');
  assert.equal(commands.namedDocument.data.documentName, 'report-q1.pdf');
  return commands;
}

const MEDIA_SOURCES = { image: PNG_1x1, video: VIDEO_MP4, document: PDF, namedDocument: PDF };
const kindOf = (name) => (name === 'namedDocument' ? 'document' : name);

/** Checks which media fields the commands carry. */
function assertMediaFields(commands, { kindField, plainField }) {
  for (const [name, url] of Object.entries(MEDIA_SOURCES)) {
    const { data } = commands[name];
    const field = MEDIA_FIELD[kindOf(name)];
    if (kindField) assert.equal(data[field], url, `${name} carries ${field}`);
    else assert.equal(data[field], undefined, `${name} carries no ${field}`);
    if (plainField) assert.equal(data.dataUrl, url, `${name} carries dataUrl`);
    else assert.equal(data.dataUrl, undefined, `${name} carries no dataUrl`);
  }
}

// ---- 1. dialects ----

test('the three dialects work end to end with the default config', async (t) => {
  const keys = { v1: 'v1-client-key-000001', doc: 'doc-client-key-00001', guide: 'guide-client-key-001' };
  const { gateway, url } = await startGateway({ validKeys: Object.values(keys) });
  t.after(() => gateway.stop());

  // v1 package client: waits for auth-success, reads <kind>DataUrl and error.code.
  const v1 = newExtension(t, url, { dialect: 'v1', apiKey: keys.v1 });
  await v1.connectReady(gateway);
  assert.match(v1.sessionId, /^[0-9a-f-]{36}$/);
  const v1Commands = await sendEveryKind(gateway, v1, keys.v1);
  assertMediaFields(v1Commands, { kindField: true, plainField: true });
  v1.send({ type: 'no-such-type' });
  const v1Error = await v1.next((f) => f.type === 'error');
  assert.equal(v1Error.error.code, 'UNKNOWN_MESSAGE_TYPE');
  assert.equal(typeof v1Error.error.message, 'string');

  // Integration-doc client: same auth, waits for authenticated, reads dataUrl and top-level code.
  const doc = newExtension(t, url, { dialect: 'doc', apiKey: keys.doc });
  await doc.connectReady(gateway);
  const docCommands = await sendEveryKind(gateway, doc, keys.doc);
  assertMediaFields(docCommands, { kindField: true, plainField: true });
  doc.send('{not json');
  const docError = await doc.next((f) => f.type === 'error');
  assert.equal(docError.code, 'INVALID_MESSAGE');
  assert.equal(typeof docError.message, 'string');

  // Guide client: authenticate without data, status text, waits for authenticated.
  const guide = newExtension(t, url, { dialect: 'guide', apiKey: keys.guide });
  await guide.open();
  guide.send({ type: 'authenticate', apiKey: keys.guide });
  const reply = await guide.next((f) => f.type === 'authenticated' || f.type === 'error');
  assert.equal(reply.type, 'authenticated');
  assert.match(reply.sessionId, /^[0-9a-f-]{36}$/);
  guide.sessionId = reply.sessionId;
  guide.send({ type: 'status', status: 'WhatsApp Web is logged in', ready: true });
  await waitFor(() => gateway.getActiveSessions(keys.guide)[0]?.deviceActive, 3000, 'guide session active');
  await sendEveryKind(gateway, guide, keys.guide);
  // The guide client got only the reply it knows, whatever came after it.
  assert.deepEqual(authReplies(guide), ['authenticated']);
});

/** The auth replies an extension received, in order. */
function authReplies(ext) {
  return ext.frames.map((f) => f.frame.type).filter((type) => type === 'auth-success' || type === 'authenticated');
}

/** Whatever the configured dialect, a guide client (`authenticate`) gets only `authenticated`. */
async function assertGuideGetsOnlyAuthenticated(t, gateway, url) {
  const guide = newExtension(t, url, { dialect: 'guide', apiKey: OTHER_KEY });
  await guide.connectReady(gateway);
  await gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'x' });
  assert.deepEqual(authReplies(guide), ['authenticated']);
}

test("dialect: 'v1' sends only auth-success and only <kind>DataUrl", async (t) => {
  const { gateway, url } = await startGateway({ dialect: 'v1' });
  t.after(() => gateway.stop());
  const ext = newExtension(t, url, { dialect: 'v1' });
  await ext.connectReady(gateway);
  const commands = await sendEveryKind(gateway, ext, GOOD_KEY);
  assertMediaFields(commands, { kindField: true, plainField: false });
  // Commands came after the auth replies on the same socket, so all replies are in.
  assert.deepEqual(authReplies(ext), ['auth-success']);
  await assertGuideGetsOnlyAuthenticated(t, gateway, url);
});

test("dialect: 'doc' sends only authenticated and only dataUrl", async (t) => {
  const { gateway, url } = await startGateway({ dialect: 'doc' });
  t.after(() => gateway.stop());
  const ext = newExtension(t, url, { dialect: 'doc' });
  await ext.connectReady(gateway);
  const commands = await sendEveryKind(gateway, ext, GOOD_KEY);
  assertMediaFields(commands, { kindField: false, plainField: true });
  assert.deepEqual(authReplies(ext), ['authenticated']);
  await assertGuideGetsOnlyAuthenticated(t, gateway, url);
});

test('with the default config an auth client gets auth-success and authenticated, a guide client only authenticated', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const auth = newExtension(t, url, { dialect: 'v1' });
  await auth.connectReady(gateway);
  const guide = newExtension(t, url, { dialect: 'guide', apiKey: OTHER_KEY });
  await guide.connectReady(gateway);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' });
  await gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'x' });
  const replies = (ext) =>
    ext.frames.map((f) => f.frame).filter((f) => f.type === 'auth-success' || f.type === 'authenticated');
  const authReplies = replies(auth);
  assert.deepEqual(authReplies.map((f) => f.type).sort(), ['auth-success', 'authenticated']);
  assert.equal(authReplies[0].sessionId, authReplies[1].sessionId, 'both replies name the same session');
  assert.deepEqual(replies(guide).map((f) => f.type), ['authenticated']);
});

// ---- 2. error frame shape ----

test('error frames carry code/message at the top and error:{code,message}', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  ext.send({ type: 'dance' });
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'UNKNOWN_MESSAGE_TYPE');
  ext.send('nope');
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'INVALID_MESSAGE');
  ext.send({ type: 'heartbeat' });
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'NOT_AUTHENTICATED');

  const bad = newExtension(t, url, { apiKey: 'wrong-key-0123456789' });
  await bad.open();
  const failure = await bad.authenticate().catch((e) => e);
  assertErrorFrame(failure.frame, 'AUTHENTICATION_FAILED');
});

// ---- 3. invalid frames ----

test('frames that are not JSON objects with a type get INVALID_MESSAGE and the connection stays open', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  for (const frame of ['this is not json', '{"type":', '[1,2,3]', '[{"type":"auth"}]', '{"no":"type"}', '"auth"', '42', 'null']) {
    ext.send(frame);
    const reply = await ext.next((f) => f.type === 'error');
    assertErrorFrame(reply, 'INVALID_MESSAGE');
  }
  assert.equal(ext.closed, null);
  await ext.authenticate();
  ext.sendStatus(true);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY)[0]?.deviceActive, 3000, 'session active');
  // After auth too.
  ext.send('still not json');
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'INVALID_MESSAGE');
  ext.send('[]');
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'INVALID_MESSAGE');
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after garbage' });
  assert.equal(result.success, true);
  assert.equal(ext.closed, null);
});

// ---- 4. unknown types ----

test('an unknown type gets UNKNOWN_MESSAGE_TYPE before and after auth; the connection stays open', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  ext.send({ type: 'dance', apiKey: GOOD_KEY });
  const before = await ext.next((f) => f.type === 'error');
  assertErrorFrame(before, 'UNKNOWN_MESSAGE_TYPE');
  assert.match(before.message, /dance/);
  await ext.authenticate();
  ext.sendStatus(true);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY)[0]?.deviceActive, 3000, 'session active');
  ext.send({ type: 'send-message', requestId: 'x' });
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'UNKNOWN_MESSAGE_TYPE');
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'still here' });
  assert.equal(result.success, true);
  assert.equal(ext.closed, null);
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
});

// ---- 5. not authenticated ----

test('status, heartbeat and message-result before auth get NOT_AUTHENTICATED; the connection stays open', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  const frames = [
    { type: 'status', data: { whatsappLoggedIn: true, ready: true } },
    { type: 'status', status: 'WhatsApp Web is logged in', ready: true },
    { type: 'heartbeat', timestamp: Date.now() },
    { type: 'message-result', requestId: '00000000-0000-4000-8000-000000000000', success: true },
  ];
  for (const frame of frames) {
    ext.send(frame);
    assertErrorFrame(await ext.next((f) => f.type === 'error'), 'NOT_AUTHENTICATED');
  }
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
  await ext.authenticate();
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
  // The status sent before auth was not applied.
  assert.equal(gateway.getActiveSessions(GOOD_KEY)[0].deviceActive, false);
  ext.sendStatus(true);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY)[0]?.deviceActive, 3000, 'session active');
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' })).success, true);
});

// ---- 6. wrong key ----

test('a wrong key gets AUTHENTICATION_FAILED and close 1008; onError gets a masked key', async (t) => {
  const { gateway, url, errors, events } = await startGateway();
  t.after(() => gateway.stop());
  const wrongKey = 'wrong-key-secret-ABCDEFGHIJ';
  const ext = newExtension(t, url, { apiKey: wrongKey });
  await ext.open();
  const failure = await ext.authenticate().catch((e) => e);
  assert.ok(failure.frame, 'authenticate rejected with an error frame');
  assertErrorFrame(failure.frame, 'AUTHENTICATION_FAILED');
  const closed = await ext.whenClosed;
  assert.equal(closed.code, 1008);
  const error = await waitFor(() => errors.find((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'onError');
  assert.ok(error instanceof Error);
  assert.equal(typeof error.message, 'string');
  assert.equal(typeof error.details.apiKey, 'string');
  assert.match(error.details.apiKey, /\*/, 'the key is masked');
  assert.notEqual(error.details.apiKey, wrongKey);
  assert.ok(!JSON.stringify(error.details).includes(wrongKey), 'details never hold the full key');
  assert.ok(!error.message.includes(wrongKey), 'message never holds the full key');
  assert.ok(!JSON.stringify(failure.frame).includes(wrongKey), 'the error frame never echoes the key');
  assert.deepEqual(gateway.getActiveSessions(wrongKey), []);
  assert.equal(events.filter((e) => e.type === 'session-connected').length, 0);
});

test("a validator's reason shows in the AUTHENTICATION_FAILED frame", async (t) => {
  const { gateway, url, errors } = await startGateway({
    validateApiKey: async () => ({ valid: false, reason: 'Rate limit exceeded' }),
  });
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  const failure = await ext.authenticate().catch((e) => e);
  assertErrorFrame(failure.frame, 'AUTHENTICATION_FAILED');
  assert.match(failure.frame.message, /Rate limit exceeded/);
  assert.match(failure.frame.error.message, /Rate limit exceeded/);
  assert.equal((await ext.whenClosed).code, 1008);
  await waitFor(() => errors.find((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'onError');
});

// ---- 7. failing validators ----

const BROKEN_VALIDATORS = [
  ['throws', () => {
    throw new Error('validator exploded');
  }],
  ['rejects', () => Promise.reject(new Error('database down'))],
  ['returns undefined', () => undefined],
  ['returns true', () => true],
  ['resolves to a non-object', async () => 'yes'],
  ['never answers', () => new Promise(() => {})],
];

for (const [name, broken] of BROKEN_VALIDATORS) {
  test(`a validator that ${name} fails auth with 1008, reports CALLBACK_ERROR, and the gateway keeps serving`, async (t) => {
    const badKey = 'bad-key-0123456789';
    const { gateway, url, errors } = await startGateway({
      authTimeout: 300,
      validateApiKey: (apiKey) => (apiKey === GOOD_KEY ? { valid: true, userId: 'good-user' } : broken(apiKey)),
    });
    t.after(() => gateway.stop());
    const ext = newExtension(t, url, { apiKey: badKey });
    await ext.open();
    const failure = await ext.authenticate().catch((e) => e);
    assert.ok(failure.frame, `authenticate rejected with an error frame (got ${failure})`);
    assertErrorFrame(failure.frame, 'AUTHENTICATION_FAILED');
    // Not "Invalid API key": the key may be fine, the check is what failed.
    assert.match(failure.frame.message, /Authentication is unavailable/);
    assert.equal((await ext.whenClosed).code, 1008);
    const callbackError = await waitFor(() => errors.find((e) => e.code === 'CALLBACK_ERROR'), 3000, 'CALLBACK_ERROR');
    assert.ok(callbackError instanceof Error);
    assert.equal(callbackError.details.callback, 'validateApiKey');
    const authError = await waitFor(() => errors.find((e) => e.code === 'AUTHENTICATION_FAILED'), 3000, 'AUTHENTICATION_FAILED');
    assert.ok(!JSON.stringify(authError.details).includes(badKey));
    assert.deepEqual(gateway.getActiveSessions(badKey), []);

    const good = newExtension(t, url);
    await good.connectReady(gateway);
    const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'still serving' });
    assert.equal(result.success, true);
    assert.equal(result.deviceInfo.sessionId, good.sessionId);
  });
}

test('a sync validator works and userId of any JSON type reaches sessions and events', async (t) => {
  const users = {
    'numeric-user-key-0001': 42,
    'string-user-key-00001': 'user-abc',
    'object-user-key-00001': { id: 7, org: 'acme', roles: ['admin'] },
    'no-user-key-000000001': undefined,
  };
  const { gateway, url, events } = await startGateway({
    validateApiKey: (apiKey) => (apiKey in users ? { valid: true, userId: users[apiKey], plan: 'pro' } : { valid: false }),
  });
  t.after(() => gateway.stop());
  for (const [apiKey, userId] of Object.entries(users)) {
    const ext = newExtension(t, url, { apiKey });
    await ext.connectReady(gateway);
    const [session] = gateway.getActiveSessions(apiKey);
    const connected = await waitFor(
      () => events.find((e) => e.type === 'session-connected' && e.sessionId === ext.sessionId),
      3000,
      'session-connected',
    );
    const status = await waitFor(
      () => events.find((e) => e.type === 'session-status' && e.sessionId === ext.sessionId),
      3000,
      'session-status',
    );
    if (userId === undefined) {
      assert.equal(session.userId ?? null, null);
      assert.equal(connected.userId ?? null, null);
    } else {
      assert.deepEqual(session.userId, userId);
      assert.deepEqual(connected.userId, userId);
      assert.deepEqual(status.userId, userId);
    }
    const result = await gateway.sendMessage(apiKey, { phoneNumber: PHONE, message: 'x' });
    assert.equal(result.success, true);
    const sent = await waitFor(() => events.find((e) => e.type === 'message-sent' && e.requestId === result.requestId));
    if (userId !== undefined) assert.deepEqual(sent.userId, userId);
  }
});

// ---- 8. maxPayload ----

test('a frame over maxPayload closes with 1009 before and after auth; other sessions are unaffected', async (t) => {
  const { gateway, url, events } = await startGateway({ maxPayload: 1024 });
  t.after(() => gateway.stop());
  const bystander = newExtension(t, url, { apiKey: OTHER_KEY });
  await bystander.connectReady(gateway);
  const big = JSON.stringify({ type: 'heartbeat', padding: 'x'.repeat(2000) });
  assert.ok(Buffer.byteLength(big) > 2000);

  const early = newRaw(t, url);
  await early.opened;
  early.send(big);
  assert.equal((await early.whenClosed).code, 1009);

  const late = newExtension(t, url);
  await late.connectReady(gateway);
  // Just under the limit is fine.
  late.send({ type: 'heartbeat', padding: 'y'.repeat(900) });
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'fits' })).success, true);
  late.send(big);
  assert.equal((await late.whenClosed).code, 1009);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 0, 3000, 'oversized session removed');
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected' && e.sessionId === late.sessionId));
  assert.equal(gone.details.code, 1009);

  assert.equal(bystander.closed, null);
  const result = await gateway.sendMessage(OTHER_KEY, { phoneNumber: PHONE, message: 'unaffected' });
  assert.equal(result.success, true);
  assert.equal(result.deviceInfo.sessionId, bystander.sessionId);
});

// ---- 9. authTimeout ----

test('a connection that never authenticates is closed with 1008 after authTimeout', async (t) => {
  const { gateway, url, events } = await startGateway({ authTimeout: 200 });
  t.after(() => gateway.stop());
  const idle = newRaw(t, url);
  await idle.opened;
  // Frames that are not auth do not extend the deadline.
  const chatty = newRaw(t, url);
  await chatty.opened;
  chatty.send({ type: 'heartbeat' });
  assert.equal((await idle.whenClosed).code, 1008);
  assert.equal((await chatty.whenClosed).code, 1008);
  assert.equal(events.filter((e) => e.type === 'session-connected').length, 0);
  // The gateway still admits clients that do authenticate in time.
  const ext = newExtension(t, url);
  await ext.connectReady(gateway);
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' })).success, true);
});

// ---- 10. maxSessionsPerKey ----

test('maxSessionsPerKey refuses the extra session with MAX_SESSIONS_EXCEEDED and admits one after a disconnect', async (t) => {
  const { gateway, url, errors, events } = await startGateway({ maxSessionsPerKey: 2 });
  t.after(() => gateway.stop());
  const first = newExtension(t, url);
  await first.connectReady(gateway);
  const second = newExtension(t, url);
  await second.connectReady(gateway);

  const third = newExtension(t, url);
  await third.open();
  const failure = await third.authenticate().catch((e) => e);
  assert.ok(failure.frame, 'the third auth is refused with an error frame');
  assertErrorFrame(failure.frame, 'MAX_SESSIONS_EXCEEDED');
  assert.equal((await third.whenClosed).code, 1008);
  const error = await waitFor(() => errors.find((e) => e.code === 'MAX_SESSIONS_EXCEEDED'), 3000, 'onError');
  assert.ok(error instanceof Error);
  assert.ok(!JSON.stringify(error.details ?? {}).includes(GOOD_KEY));
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 2);

  // Another key is not limited by this one.
  const other = newExtension(t, url, { apiKey: OTHER_KEY });
  await other.connectReady(gateway);

  await first.close();
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 1, 3000, 'first session removed');
  const fourth = newExtension(t, url);
  await fourth.connectReady(gateway);
  const ids = gateway.getActiveSessions(GOOD_KEY).map((s) => s.sessionId).sort();
  assert.deepEqual(ids, [second.sessionId, fourth.sessionId].sort());
  assert.equal(
    events.filter((e) => e.type === 'session-connected' && e.apiKey === GOOD_KEY).length,
    3,
    'the refused connection never became a session',
  );
});

// ---- 11. upgrade path and origin ----

test('upgrades on another path are refused with 404', async (t) => {
  const { gateway, port, url } = await startGateway();
  t.after(() => gateway.stop());
  assert.equal(await upgradeStatus(`ws://127.0.0.1:${port}/other`), 404);
  assert.equal(await upgradeStatus(`ws://127.0.0.1:${port}/`), 404);
  assert.equal(await upgradeStatus(`ws://127.0.0.1:${port}/wa-ext-ws/extra`), 404);
  // The right path still works.
  const ext = newExtension(t, url);
  await ext.connectReady(gateway);
});

test('allowedOrigins admits listed origins and refuses others or none with 403', async (t) => {
  const { gateway, url } = await startGateway({ allowedOrigins: ['chrome-extension://abc'] });
  t.after(() => gateway.stop());
  assert.equal(await upgradeStatus(url, { origin: 'chrome-extension://evil' }), 403);
  assert.equal(await upgradeStatus(url, { origin: 'https://example.com' }), 403);
  assert.equal(await upgradeStatus(url), 403);
  assert.equal(await upgradeStatus(url, { origin: 'chrome-extension://abc' }), 101);
  const ext = newExtension(t, url, { origin: 'chrome-extension://abc' });
  await ext.connectReady(gateway);
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' })).success, true);
});

// ---- 12. events ----

test('session-connected, session-status and session-disconnected events carry their details', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  await ext.authenticate();
  const connected = await waitFor(() => events.find((e) => e.type === 'session-connected'), 3000, 'session-connected');
  assert.equal(connected.apiKey, GOOD_KEY);
  assert.equal(connected.sessionId, ext.sessionId);
  assert.equal(connected.userId, 'user-test');
  assert.equal(typeof connected.timestamp, 'number');
  assert.equal(connected.details.ip, '127.0.0.1');
  assert.equal(connected.details.extensionVersion, '1.0.0');
  assert.equal(connected.details.browser, 'Chrome');

  // v1 / integration-doc status shape.
  ext.send({ type: 'status', data: { whatsappLoggedIn: true, ready: true } });
  const v1Status = await waitFor(() => events.find((e) => e.type === 'session-status'), 3000, 'session-status');
  assert.equal(v1Status.apiKey, GOOD_KEY);
  assert.equal(v1Status.sessionId, ext.sessionId);
  assert.equal(v1Status.userId, 'user-test');
  assert.equal(v1Status.details.ready, true);
  assert.equal(v1Status.details.whatsappLoggedIn, true);
  assert.equal(typeof v1Status.details.status, 'string');

  // The guide's status shape, logged in and then logged out.
  ext.send({ type: 'status', status: 'WhatsApp Web is logged in', ready: true });
  await waitFor(() => events.filter((e) => e.type === 'session-status').length === 2, 3000, 'second status');
  const guideStatus = events.filter((e) => e.type === 'session-status')[1];
  assert.deepEqual(guideStatus.details, { status: 'WhatsApp Web is logged in', ready: true, whatsappLoggedIn: true });
  ext.send({ type: 'status', status: 'WhatsApp Web is not logged in', ready: false });
  await waitFor(() => events.filter((e) => e.type === 'session-status').length === 3, 3000, 'third status');
  const loggedOut = events.filter((e) => e.type === 'session-status')[2];
  assert.deepEqual(loggedOut.details, { status: 'WhatsApp Web is not logged in', ready: false, whatsappLoggedIn: false });

  // A guide client's connect event.
  const guide = newExtension(t, url, { dialect: 'guide', apiKey: OTHER_KEY });
  await guide.open();
  await guide.authenticate();
  const guideConnected = await waitFor(() => events.find((e) => e.type === 'session-connected' && e.apiKey === OTHER_KEY));
  assert.equal(guideConnected.sessionId, guide.sessionId);
  assert.equal(guideConnected.details.ip, '127.0.0.1');
  assert.equal(typeof guideConnected.details.extensionVersion, 'string');
  assert.equal(typeof guideConnected.details.browser, 'string');

  await ext.close(4000);
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected'), 3000, 'session-disconnected');
  assert.equal(gone.apiKey, GOOD_KEY);
  assert.equal(gone.sessionId, ext.sessionId);
  assert.equal(gone.userId, 'user-test');
  assert.equal(gone.details.code, 4000);
  assert.equal(typeof gone.details.reason, 'string');
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
  assert.equal(gateway.getActiveSessions(OTHER_KEY).length, 1);
});

// ---- 13. heartbeats ----

/** Opens a raw client and authenticates it by hand; it sends nothing afterwards. */
async function silentSession(t, url) {
  const client = newRaw(t, url);
  await client.opened;
  client.send({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '1.0.0', browser: 'Chrome' } });
  const reply = await client.next((f) => f.type === 'auth-success' || f.type === 'error');
  assert.equal(reply.type, 'auth-success');
  return { client, sessionId: reply.sessionId };
}

test('the server pings every heartbeatInterval and a client that answers stays connected', async (t) => {
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 100 });
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.connectReady(gateway);
  await waitFor(() => ext.frames.filter((f) => f.frame.type === 'ping').length >= 7, 5000, 'seven pings');
  for (const { frame } of ext.frames.filter((f) => f.frame.type === 'ping')) assert.deepEqual(frame, { type: 'ping' });
  assert.equal(ext.closed, null);
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
  assert.equal(events.filter((e) => e.type === 'heartbeat-timeout' || e.type === 'session-disconnected').length, 0);
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'alive' })).success, true);
});

test('a silent client is dropped: heartbeat-timeout, then session-disconnected', async (t) => {
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 100 });
  t.after(() => gateway.stop());
  const { client, sessionId } = await silentSession(t, url);
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
  const timeout = await waitFor(() => events.find((e) => e.type === 'heartbeat-timeout'), 5000, 'heartbeat-timeout');
  assert.equal(timeout.sessionId, sessionId);
  assert.equal(timeout.apiKey, GOOD_KEY);
  assert.equal(typeof timeout.details.lastHeartbeat, 'number');
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected'), 3000, 'session-disconnected');
  assert.equal(gone.sessionId, sessionId);
  assert.ok(events.indexOf(timeout) < events.indexOf(gone), 'heartbeat-timeout comes before session-disconnected');
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
  await client.whenClosed;
  assert.ok(client.frames.some((f) => f.frame.type === 'ping'), 'the silent client was pinged');
});

test('a WebSocket-level pong counts as a sign of life', async (t) => {
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 100 });
  t.after(() => gateway.stop());
  const { client } = await silentSession(t, url);
  const timer = setInterval(() => client.ws.readyState === WebSocket.OPEN && client.ws.pong(), 40);
  t.after(() => clearInterval(timer));
  await waitFor(() => client.frames.filter((f) => f.frame.type === 'ping').length >= 7, 5000, 'seven pings');
  assert.equal(client.closed, null);
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1);
  assert.equal(events.filter((e) => e.type === 'heartbeat-timeout').length, 0);
});

test('heartbeatTimeout is honoured', async (t) => {
  const heartbeatTimeout = 600;
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 100, heartbeatTimeout });
  t.after(() => gateway.stop());
  const { client, sessionId } = await silentSession(t, url);
  // Past the default (2 x interval = 200 ms) plus a sweep, the session is still there.
  await new Promise((r) => setTimeout(r, 350));
  assert.equal(gateway.getActiveSessions(GOOD_KEY).length, 1, 'not dropped at the default timeout');
  assert.equal(client.closed, null);
  const timeout = await waitFor(() => events.find((e) => e.type === 'heartbeat-timeout'), 5000, 'heartbeat-timeout');
  assert.equal(timeout.sessionId, sessionId);
  assert.ok(
    timeout.timestamp - timeout.details.lastHeartbeat >= heartbeatTimeout,
    `dropped after ${timeout.timestamp - timeout.details.lastHeartbeat} ms of silence, not before ${heartbeatTimeout}`,
  );
  await waitFor(() => events.find((e) => e.type === 'session-disconnected'), 3000, 'session-disconnected');
  assert.deepEqual(gateway.getActiveSessions(GOOD_KEY), []);
});

// ---- 14. getActiveSessions ----

test('getActiveSessions lists every session of the key with every field', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const guide = newExtension(t, url, { dialect: 'guide' });
  await guide.connectReady(gateway);
  const v1 = newExtension(t, url, { dialect: 'v1' });
  await v1.connectReady(gateway);
  const waiting = newExtension(t, url, { dialect: 'doc' });
  await waiting.open();
  await waiting.authenticate();
  const notReady = newExtension(t, url, { dialect: 'v1' });
  await notReady.open();
  await notReady.authenticate();
  notReady.sendStatus(false);
  await waitFor(
    () => gateway.getActiveSessions(GOOD_KEY).find((s) => s.sessionId === notReady.sessionId)?.lastStatusUpdate,
    3000,
    'not-ready status',
  );
  const other = newExtension(t, url, { apiKey: OTHER_KEY });
  await other.connectReady(gateway);

  const sessions = gateway.getActiveSessions(GOOD_KEY);
  assert.ok(Array.isArray(sessions));
  assert.equal(sessions.length, 4);
  for (const s of sessions) {
    for (const field of SESSION_FIELDS) assert.ok(Object.hasOwn(s, field), `session has ${field}`);
    assert.equal(typeof s.sessionId, 'string');
    assert.equal(typeof s.status, 'string');
    assert.equal(typeof s.ready, 'boolean');
    assert.equal(typeof s.whatsappLoggedIn, 'boolean');
    assert.equal(typeof s.deviceActive, 'boolean');
    assert.equal(typeof s.connectedAt, 'number');
    assert.equal(typeof s.lastHeartbeat, 'number');
    assert.ok(s.lastHeartbeat >= s.connectedAt - 1000);
    assert.equal(s.ip, '127.0.0.1');
    assert.equal(s.userId, 'user-test');
  }
  const byId = (ext) => sessions.find((s) => s.sessionId === ext.sessionId);

  const g = byId(guide);
  assert.equal(g.status, 'WhatsApp Web is logged in');
  assert.equal(g.ready, true);
  assert.equal(g.whatsappLoggedIn, true);
  assert.equal(g.deviceActive, true);
  assert.equal(typeof g.lastStatusUpdate, 'number');
  assert.equal(typeof g.extensionVersion, 'string');
  assert.equal(typeof g.browser, 'string');

  const v = byId(v1);
  assert.equal(v.status, 'WhatsApp Web logged in');
  assert.equal(v.ready, true);
  assert.equal(v.whatsappLoggedIn, true);
  assert.equal(v.deviceActive, true);
  assert.equal(typeof v.lastStatusUpdate, 'number');
  assert.equal(v.extensionVersion, '1.0.0');
  assert.equal(v.browser, 'Chrome');

  const w = byId(waiting);
  assert.equal(w.status, 'Not ready');
  assert.equal(w.ready, false);
  assert.equal(w.whatsappLoggedIn, false);
  assert.equal(w.deviceActive, false);
  assert.equal(w.lastStatusUpdate, null);

  const n = byId(notReady);
  assert.equal(n.status, 'Not ready');
  assert.equal(n.ready, false);
  assert.equal(n.deviceActive, false);
  assert.equal(typeof n.lastStatusUpdate, 'number');

  const awaited = await gateway.getActiveSessions(GOOD_KEY);
  assert.deepEqual(
    awaited.map((s) => s.sessionId).sort(),
    sessions.map((s) => s.sessionId).sort(),
  );
  assert.deepEqual(gateway.getActiveSessions(OTHER_KEY).map((s) => s.sessionId), [other.sessionId]);
  assert.deepEqual(gateway.getActiveSessions('unknown-key-0000000'), []);
  assert.deepEqual(await gateway.getActiveSessions('unknown-key-0000000'), []);
});

// ---- 15. second auth ----

test('a second auth on an authenticated connection gets an error frame and no second session', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.connectReady(gateway);
  // With the default config the first auth got two replies; only later frames count.
  await ext.next((f) => f.type === 'authenticated');
  for (const f of ext.frames) f.consumed = true;
  ext.send({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '1.0.0', browser: 'Chrome' } });
  const reply = await ext.next((f) => f.type === 'error' || f.type === 'auth-success' || f.type === 'authenticated');
  assert.equal(reply.type, 'error');
  assert.equal(typeof reply.code, 'string');
  assert.deepEqual(reply.error, { code: reply.code, message: reply.message });
  ext.send({ type: 'authenticate', apiKey: OTHER_KEY });
  const reply2 = await ext.next((f) => f.type === 'error' || f.type === 'auth-success' || f.type === 'authenticated');
  assert.equal(reply2.type, 'error');

  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'one session' });
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
  const sessions = gateway.getActiveSessions(GOOD_KEY);
  assert.deepEqual(sessions.map((s) => s.sessionId), [ext.sessionId]);
  assert.deepEqual(gateway.getActiveSessions(OTHER_KEY), []);
  assert.equal(events.filter((e) => e.type === 'session-connected').length, 1);
  assert.equal(ext.closed, null);
});

// ---- 16. binary frames ----

test('binary frames holding JSON are accepted like text', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url, { respond: () => null });
  await ext.open();
  const binary = (frame) => ext.ws.send(Buffer.from(JSON.stringify(frame)), { binary: true });

  ext.ws.send(Buffer.from('not json'), { binary: true });
  assertErrorFrame(await ext.next((f) => f.type === 'error'), 'INVALID_MESSAGE');
  binary({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '2.0.0', browser: 'Firefox' } });
  const reply = await ext.next((f) => f.type === 'auth-success');
  ext.sessionId = reply.sessionId;
  binary({ type: 'status', data: { whatsappLoggedIn: true, ready: true } });
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY)[0]?.deviceActive, 3000, 'session active via binary status');
  binary({ type: 'heartbeat', timestamp: Date.now() });

  const pending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'binary please' });
  await waitFor(() => ext.commands.length === 1, 3000, 'command');
  binary({ type: 'message-result', requestId: ext.commands[0].requestId, success: true, messageId: 'bin-1' });
  const result = await pending;
  assert.equal(result.messageId, 'bin-1');
  assert.equal(result.deviceInfo.sessionId, reply.sessionId);
  const [session] = gateway.getActiveSessions(GOOD_KEY);
  assert.equal(session.extensionVersion, '2.0.0');
  assert.equal(session.browser, 'Firefox');
  assert.ok(events.some((e) => e.type === 'session-status' && e.sessionId === reply.sessionId));
});
