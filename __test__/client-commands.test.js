'use strict';
// The client SDK's side of custom commands and failure codes (docs/extension-protocol.md):
// client.handle(type, fn) for any type, its custom types listed in auth data.commands, fn's
// return value as the command-result's data, and a handler's error `code` reaching the
// gateway. Against the real gateway, in Node with `ws`.
const nodeTest = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startGateway, waitFor, GOOD_KEY } = require('./helpers');

const PHONE = '+15551234567';

function test(name, fn) {
  return nodeTest(name, { timeout: 20_000 }, fn);
}

let GatewayClient;
nodeTest.before(async () => {
  ({ GatewayClient } = await import('whatsapp-ws-extension-gateway/client'));
});

/** A client recording the frames it writes; closed after the test. */
function newClient(t, url) {
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const client = new GatewayClient({ url, apiKey: GOOD_KEY, WebSocket: RecordingWebSocket, reconnectBaseDelay: 20, maxReconnectDelay: 200 });
  const errors = [];
  client.on('error', (error) => errors.push(error));
  t.after(() => client.close());
  return { client, sent, errors };
}

async function ready(gateway, client) {
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  return waitFor(
    () => gateway.getActiveSessions(GOOD_KEY).find((s) => s.sessionId === client.sessionId && s.deviceActive),
    3000,
    'the client to be an active session',
  );
}

test('handle(type, fn) for a custom type: listed at auth, fn gets data and context, its return value is data', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const { client, sent, errors } = newClient(t, url);
  const seen = [];
  client.handle('send-message', () => ({ messageId: 'wa-1' }));
  client.handle('check-number', async (data, context) => {
    seen.push({ data, context });
    return { onWhatsApp: data.phoneNumber === PHONE };
  });
  client.handle('react', () => undefined);
  const session = await ready(gateway, client);
  assert.deepEqual(sent[0].data.commands, ['check-number', 'react'], 'the custom types, not the built-in ones');
  assert.deepEqual(session.commands, ['check-number', 'react']);

  const result = await gateway.request(GOOD_KEY, 'check-number', { phoneNumber: PHONE });
  assert.deepEqual(result.data, { onWhatsApp: true });
  assert.deepEqual(seen[0], { data: { phoneNumber: PHONE }, context: { requestId: result.requestId, type: 'check-number' } });
  const answer = sent.find((f) => f.type === 'command-result');
  assert.equal(answer.requestId, result.requestId);
  assert.equal(answer.success, true);
  assert.deepEqual(answer.data, { onWhatsApp: true });

  const nothing = await gateway.request(GOOD_KEY, 'react', [1, 2]);
  assert.equal(nothing.data, null, 'a handler that returns nothing answers null');
  assert.equal((await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' })).messageId, 'wa-1');
  assert.equal(events.filter((e) => e.type === 'command-result').length, 2);
  assert.deepEqual(errors, []);
});

test("a handler's thrown code, or a returned failure's, reaches the gateway as details.extensionCode", async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const { client, sent } = newClient(t, url);
  client.handle('check-number', () => {
    throw Object.assign(new Error('too many lookups'), { code: 'RATE_LIMITED' });
  });
  client.handle('send-message', async ({ phoneNumber }) => {
    if (phoneNumber === PHONE) throw Object.assign(new Error('not there'), { code: 'NOT_ON_WHATSAPP' });
    return { success: false, error: 'logged out', code: 'LOGGED_OUT' };
  });
  client.handle('send-image', () => {
    throw Object.assign(new Error('odd code'), { code: 'not a word' });
  });
  await ready(gateway, client);

  const limited = await gateway.request(GOOD_KEY, 'check-number', {}).catch((e) => e);
  assert.equal(limited.code, 'EXTENSION_ERROR');
  assert.equal(limited.details.error, 'too many lookups');
  assert.equal(limited.details.extensionCode, 'RATE_LIMITED');
  assert.equal(limited.details.retryable, true);
  const failure = sent.find((f) => f.type === 'command-result');
  assert.deepEqual(
    { success: failure.success, error: failure.error, code: failure.code },
    { success: false, error: 'too many lookups', code: 'RATE_LIMITED' },
  );

  const absent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
  assert.equal(absent.details.extensionCode, 'NOT_ON_WHATSAPP');
  assert.equal(absent.details.retryable, false);
  const returned = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550000000', message: 'x' }).catch((e) => e);
  assert.equal(returned.details.extensionCode, 'LOGGED_OUT');
  assert.equal(returned.details.retryable, true);
  const odd = await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: 'data:image/png;base64,AA==' }).catch((e) => e);
  assert.equal(odd.details.error, 'odd code');
  assert.equal('extensionCode' in odd.details, false, 'a code that is not one upper-case word is not sent');
  assert.equal('code' in sent.filter((f) => f.type === 'message-result').at(-1), false);
});

test('handle() takes the built-in commands and valid custom types only', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const { client, sent } = newClient(t, url);
  for (const type of ['ping', 'auth', 'command-result', 'message-result', 'Check', '1x', 'a_b', 'x'.repeat(65), 7]) {
    assert.throws(() => client.handle(type, () => {}), TypeError, String(type));
  }
  assert.throws(() => client.handle('check-number', 'not a function'), TypeError);
  for (const typo of ['send-mesage', 'send-images', 'sned-video', 'send-documnt']) {
    assert.throws(() => client.handle(typo, () => {}), /did you mean 'send-/, typo);
  }
  client.handle('send-location', () => ({ sent: true }));
  let runs = 0;
  client.handle('check-number', () => ++runs);
  await ready(gateway, client);
  const result = await gateway.request(GOOD_KEY, 'check-number', {});
  assert.equal(result.data, 1);
  assert.equal(sent.filter((f) => f.type === 'command-result').length, 1);
  assert.equal(runs, 1);
});

test("a custom handler's answer that is not JSON, or larger than the gateway's maxPayload, fails the command instead of being sent", async (t) => {
  const { gateway, url } = await startGateway({ maxPayload: 4096 });
  t.after(() => gateway.stop());
  const { client, sent, errors } = newClient(t, url);
  client.handle('big', () => 'x'.repeat(5000));
  client.handle('odd', () => ({ n: 10n }));
  client.handle('fits', () => 'x'.repeat(3000));
  await ready(gateway, client);
  const big = await gateway.request(GOOD_KEY, 'big', {}).catch((e) => e);
  assert.equal(big.code, 'EXTENSION_ERROR');
  assert.equal(big.details.extensionCode, 'RESULT_TOO_LARGE');
  assert.match(big.details.error, /maxPayload 4096/);
  const odd = await gateway.request(GOOD_KEY, 'odd', {}).catch((e) => e);
  assert.equal(odd.code, 'EXTENSION_ERROR');
  assert.match(odd.details.error, /not JSON/);
  assert.equal((await gateway.request(GOOD_KEY, 'fits', {})).data.length, 3000);
  assert.equal(client.connected, true, 'the connection was never closed for a frame too big');
  assert.equal(sent.filter((f) => f.type === 'command-result').length, 3);
  assert.deepEqual(errors, []);
});
