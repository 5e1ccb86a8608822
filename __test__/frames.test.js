'use strict';
// The WebSocket frames an extension may send, as the gateway's own frame reader reads
// them (docs/performance.md, "Inside the core"): pings answered with their payload,
// messages in fragments, bytes cut anywhere or several frames in one write (auth and
// status together), the closing handshake, a frame too big refused from its header,
// and an idle session still pinged, reached by a send, and closed once it falls silent.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');

const PHONE = '+15550001111';

function newExtension(t, url, options) {
  const ext = new FakeExtension(url, options);
  t.after(() => ext.ws?.terminate());
  return ext;
}

/** A masked client frame. */
function clientFrame(opcode, payload, fin = true) {
  const body = Buffer.from(payload);
  const len = body.length;
  const head = len < 126 ? Buffer.from([0, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else if (len >= 65536) {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  head[0] = (fin ? 0x80 : 0) | opcode;
  const mask = crypto.randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = body[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, masked]);
}

/**
 * A WebSocket client written by hand over a raw socket, to send bytes exactly as a test
 * wants them cut. `frames` collects what the gateway sends: { opcode, payload }.
 */
async function rawClient(t, port) {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  t.after(() => socket.destroy());
  const key = crypto.randomBytes(16).toString('base64');
  socket.write(
    `GET /wa-ext-ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const client = { socket, frames: [], ended: false };
  let buffer = Buffer.alloc(0);
  let upgraded = false;
  socket.on('data', (data) => {
    buffer = Buffer.concat([buffer, data]);
    if (!upgraded) {
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      assert.match(buffer.subarray(0, end).toString(), /^HTTP\/1\.1 101/);
      buffer = buffer.subarray(end + 4);
      upgraded = true;
    }
    for (;;) {
      if (buffer.length < 2) return;
      let len = buffer[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buffer.length < 4) return;
        len = buffer.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buffer.length < 10) return;
        len = Number(buffer.readBigUInt64BE(2));
        at = 10;
      }
      if (buffer.length < at + len) return;
      client.frames.push({ opcode: buffer[0] & 0x0f, payload: buffer.subarray(at, at + len) });
      buffer = buffer.subarray(at + len);
    }
  });
  socket.on('close', () => (client.ended = true));
  await waitFor(() => upgraded, 5000, 'the upgrade');
  client.texts = () => client.frames.filter((f) => f.opcode === 1).map((f) => JSON.parse(f.payload.toString()));
  return client;
}

const auth = JSON.stringify({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '1.0.0', browser: 'Raw' } });
const status = JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } });

test('pings are answered with their payload, before and after auth', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  const pongs = [];
  ext.ws.on('pong', (data) => pongs.push(data.toString()));
  ext.ws.ping('before');
  await waitFor(() => pongs.includes('before'), 5000, 'the pong before auth');
  await ext.authenticate();
  ext.sendStatus(true);
  ext.ws.ping('after');
  await waitFor(() => pongs.includes('after'), 5000, 'the pong after auth');
  assert.deepEqual(pongs, ['before', 'after']);
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'still served' })).success, true);
});

test('a message in fragments, with a ping between them, is read whole', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.open();
  await ext.authenticate();
  const third = Math.floor(status.length / 3);
  ext.ws.send(status.slice(0, third), { fin: false });
  ext.ws.ping('between');
  ext.ws.send(status.slice(third, 2 * third), { fin: false });
  ext.ws.send(status.slice(2 * third), { fin: true });
  await waitFor(
    () => gateway.getActiveSessions(GOOD_KEY).some((s) => s.sessionId === ext.sessionId && s.deviceActive),
    5000,
    'the status sent in fragments',
  );
});

test('frames cut into single bytes, and several in one write, are all read', async (t) => {
  const { gateway, port } = await startGateway();
  t.after(() => gateway.stop());
  // Auth and status in one write: the status arrives with the auth frame, before the
  // session starts reading.
  const together = await rawClient(t, port);
  together.socket.write(Buffer.concat([clientFrame(1, auth), clientFrame(1, status)]));
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 5000, 'auth and status at once');

  // The other one byte per write, auth and status too.
  const trickle = await rawClient(t, port);
  const bytes = Buffer.concat([clientFrame(1, auth), clientFrame(1, status)]);
  for (const byte of bytes) {
    trickle.socket.write(Buffer.from([byte]));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).filter((s) => s.deviceActive).length === 2, 5000, 'the trickled status');

  // Two sends: each result comes back cut the way its client writes.
  const answered = new Set();
  for (let i = 0; i < 2; i++) {
    const sending = gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: `hi ${i}` });
    const { client, requestId } = await waitFor(
      () =>
        [together, trickle]
          .flatMap((client) => client.texts().map((f) => ({ client, requestId: f.requestId, type: f.type })))
          .find((c) => c.type === 'send-message' && !answered.has(c.requestId)),
      5000,
      'a command',
    );
    answered.add(requestId);
    const result = clientFrame(1, JSON.stringify({ type: 'message-result', requestId, success: true, messageId: `m${i}` }));
    if (client === trickle) {
      for (const byte of result) {
        trickle.socket.write(Buffer.from([byte]));
        await new Promise((resolve) => setImmediate(resolve));
      }
    } else {
      client.socket.write(result);
    }
    assert.equal((await sending).success, true, `send ${i}`);
  }
});

test('the closing handshake: the code the extension sent is echoed and reported', async (t) => {
  const { gateway, port, events } = await startGateway();
  t.after(() => gateway.stop());
  const client = await rawClient(t, port);
  client.socket.write(clientFrame(1, auth));
  await waitFor(() => client.texts().some((f) => f.type === 'auth-success' || f.type === 'authenticated'), 5000, 'auth');
  const payload = Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('going away')]);
  client.socket.write(clientFrame(8, payload));
  const reply = await waitFor(() => client.frames.find((f) => f.opcode === 8), 5000, 'the close reply');
  assert.equal(reply.payload.readUInt16BE(0), 4001);
  assert.equal(reply.payload.subarray(2).toString(), 'going away', 'the reason echoed too');
  const gone = await waitFor(() => events.find((e) => e.type === 'session-disconnected'), 5000, 'session-disconnected');
  assert.equal(gone.details.code, 4001);
  assert.equal(gone.details.reason, 'going away');
  await waitFor(() => client.ended, 5000, 'the socket closed');
});

test('after auth a frame over maxPayload is refused from its header, its body never sent', async (t) => {
  const { gateway, port } = await startGateway({ maxPayload: 1024 });
  t.after(() => gateway.stop());
  const client = await rawClient(t, port);
  client.socket.write(clientFrame(1, auth));
  await waitFor(() => client.texts().some((f) => f.type === 'auth-success' || f.type === 'authenticated'), 5000, 'auth');
  // Only the header (and mask) of a 1 MiB text frame.
  client.socket.write(clientFrame(1, Buffer.alloc(1 << 20, 0x20)).subarray(0, 14));
  const close = await waitFor(() => client.frames.find((f) => f.opcode === 8), 5000, 'the close frame');
  assert.equal(close.payload.readUInt16BE(0), 1009);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 0, 5000, 'the session removed');
});

test('an idle session is pinged, reached by a send after idling, and closed once silent', async (t) => {
  const { gateway, url, events } = await startGateway({ heartbeatInterval: 100, heartbeatTimeout: 600 });
  t.after(() => gateway.stop());
  const ext = newExtension(t, url);
  await ext.connectReady(gateway);
  // Idle through several sweeps, answering only the gateway's pings.
  await ext.next((f) => f.type === 'ping', 5000);
  await ext.next((f) => f.type === 'ping', 5000);
  await new Promise((resolve) => setTimeout(resolve, 700));
  assert.equal(ext.closed, null, 'answering pings keeps it');
  const result = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'after idling' });
  assert.equal(result.success, true);
  assert.equal(ext.commands.at(-1).data.message, 'after idling');
  // Silent from now on: closed for it.
  ext.handleFrame = () => {};
  const closed = await ext.whenClosed;
  assert.equal(closed.code, 1000);
  assert.equal(closed.reason, 'Heartbeat timeout');
  await waitFor(() => events.some((e) => e.type === 'heartbeat-timeout'), 5000, 'heartbeat-timeout');
});
