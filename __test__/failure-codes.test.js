'use strict';
// Why an extension failed (README: "Why an extension failed"): a message-result or
// command-result with success false may carry `code`, one upper-case word; EXTENSION_ERROR
// then has details.extensionCode and details.retryable (true for RATE_LIMITED and
// LOGGED_OUT). A code of any other shape is ignored. Real extensions on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');

const PHONE = '+1234567890';

async function failWith(gateway, ext, code) {
  ext.respond = () => ({ success: false, error: 'it failed', ...(code === undefined ? {} : { code }) });
  return gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' }).catch((e) => e);
}

test('an extension code becomes details.extensionCode, with retryable true only for RATE_LIMITED and LOGGED_OUT', async (t) => {
  const { gateway, url, events, errors } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const expected = {
    NOT_ON_WHATSAPP: false,
    LOGGED_OUT: true,
    RATE_LIMITED: true,
    INVALID_MEDIA: false,
    CHAT_NOT_FOUND: false,
    PHONE_OFFLINE_2: false,
  };
  for (const [code, retryable] of Object.entries(expected)) {
    const error = await failWith(gateway, ext, code);
    assert.equal(error.code, 'EXTENSION_ERROR');
    assert.equal(error.details.extensionCode, code);
    assert.equal(error.details.retryable, retryable, code);
    assert.equal(error.details.error, 'it failed');
    assert.match(error.message, new RegExp(`it failed \\(${code}\\)`));
    const event = events.filter((e) => e.type === 'send-failed').at(-1);
    assert.equal(event.details.extensionCode, code);
    assert.equal(event.details.code, 'EXTENSION_ERROR');
    const status = gateway.getMessageStatus(error.details.requestId);
    assert.deepEqual(status.error, { code: 'EXTENSION_ERROR', message: error.message, extensionCode: code });
    assert.equal(status.state, 'failed');
  }
  assert.equal(errors.at(-1).details.extensionCode, 'PHONE_OFFLINE_2', 'onError gets it too');
});

test('a code that is not one upper-case word is ignored; the failure is still reported', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  for (const code of ['not_on_whatsapp', 'Not', 'A B', '1ST', '_X', '', 42, null, { code: 'X' }, ['X'], 'X'.repeat(65)]) {
    const error = await failWith(gateway, ext, code);
    assert.equal(error.code, 'EXTENSION_ERROR', JSON.stringify(code));
    assert.equal('extensionCode' in error.details, false, JSON.stringify(code));
    assert.equal('retryable' in error.details, false);
    assert.equal(error.details.error, 'it failed');
  }
  const none = await failWith(gateway, ext, undefined);
  assert.equal('extensionCode' in none.details, false);
  // A code on a success means nothing.
  ext.respond = () => ({ success: true, messageId: 'ok', code: 'RATE_LIMITED' });
  const ok = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'x' });
  assert.equal(ok.messageId, 'ok');
});

test("a late failure's code is kept in the record", async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { respond: () => null }).connectReady(gateway);
  const timedOut = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'slow', timeout: 200 }).catch((e) => e);
  assert.equal(timedOut.code, 'REQUEST_TIMEOUT');
  const { requestId } = timedOut.details;
  ext.result(requestId, { success: false, error: 'blocked for a while', code: 'RATE_LIMITED' });
  const status = await waitFor(() => {
    const now = gateway.getMessageStatus(requestId);
    return now.state === 'failed' && now;
  }, 3000, 'the late failure');
  assert.equal(status.error.extensionCode, 'RATE_LIMITED');
});
