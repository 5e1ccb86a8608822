'use strict';
// Hostile, slow and broken peers (SPEC 5.1): what the gateway answers to requests it
// does not take, and durations that would round to nothing.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');

/** Sends raw bytes to the port; resolves with everything read once the server closes. */
function rawExchange(port, text, ms = 5000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${ms} ms; got ${JSON.stringify(data)}`));
    }, ms);
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(text);
  });
}

test('standalone: a plain HTTP request gets 426 Upgrade Required, on any path; the gateway keeps serving', async (t) => {
  const { gateway, port, url } = await startGateway();
  t.after(() => gateway.stop());
  for (const path of ['/', '/wa-ext-ws', '/health']) {
    const reply = await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    assert.match(reply, /^HTTP\/1\.1 426 Upgrade Required\r\n/, path);
    assert.match(reply, /\r\nUpgrade: websocket\r\n/i, path);
  }
  const posted = await rawExchange(port, 'POST /wa-ext-ws HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}');
  assert.match(posted, /^HTTP\/1\.1 426 /);
  // An upgrade on another path is still a 404, and garbage a 400.
  const other = await rawExchange(
    port,
    'GET /other HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  assert.match(other, /^HTTP\/1\.1 404 /);
  assert.match(await rawExchange(port, '\x16\x03\x01\x02\x00garbage\r\n\r\n'), /^HTTP\/1\.1 400 /);
  const huge = `GET /wa-ext-ws HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(16 * 1024)}\r\n\r\n`;
  assert.match(await rawExchange(port, huge), /^HTTP\/1\.1 431 /);
  await waitFor(() => gateway.getHealth().connections === 0, 3000, 'no connection left');
  const ext = new FakeExtension(url);
  await ext.connectReady(gateway);
  const sent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'still serving' });
  assert.equal(sent.success, true);
  await ext.close();
});

test('a duration option below 1 ms, or not finite, is a TypeError naming it', () => {
  const validateApiKey = () => ({ valid: true });
  const cases = [
    ['heartbeatInterval', 0.5],
    ['heartbeatInterval', Infinity],
    ['heartbeatTimeout', 0.999],
    ['heartbeatTimeout', -Infinity],
    ['requestTimeout', 0.25],
    ['authTimeout', 0],
    ['authTimeout', NaN],
    ['mediaFetchTimeout', 0.1],
  ];
  for (const [option, value] of cases) {
    assert.throws(
      () => new WhatsAppGateway({ validateApiKey, [option]: value }),
      (error) => error instanceof TypeError && error.message.includes(option),
      `${option}: ${value}`,
    );
  }
  for (const option of ['heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'authTimeout', 'mediaFetchTimeout']) {
    assert.doesNotThrow(() => new WhatsAppGateway({ validateApiKey, [option]: 1 }), option);
    assert.doesNotThrow(() => new WhatsAppGateway({ validateApiKey, [option]: 1.5 }), option);
  }
});

test("a call's timeout below 1 ms, or not finite, is a VALIDATION_ERROR; 1 ms is a real deadline", async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = new FakeExtension(url, { respond: () => null });
  await ext.connectReady(gateway);
  for (const timeout of [0.5, 0, -1, Infinity, NaN, '100']) {
    const error = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout }).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR', String(timeout));
    assert.equal(error.details.field, 'timeout');
    assert.match(error.message, /at least 1/);
  }
  assert.equal(ext.commands.length, 0, 'nothing was sent for an invalid call');
  const late = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'x', timeout: 1.5 }).catch((e) => e);
  assert.equal(late.code, 'REQUEST_TIMEOUT');
  await ext.close();
});
