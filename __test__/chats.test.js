'use strict';
// `chatId` instead of `phoneNumber` on every send method (README: "Chats and groups"):
// '<digits>@c.us' (a person), '<digits>-<digits>@g.us' or '<id>@g.us' (a group). The
// command carries data.chatId (data.phoneNumber only when the caller gave one); events
// and status records name the chat. Exactly one of the two; v1 calls are unchanged.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, PNG_1x1 } = require('./helpers');

const PHONE = '+1234567890';
const PERSON = '15551234567@c.us';
const OLD_GROUP = '15551234567-1609459200@g.us';
const GROUP = '120363025246125486@g.us';

test('chatId: a person and both group forms reach the extension as data.chatId, without phoneNumber', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { dialect: 'doc' }).connectReady(gateway);
  for (const chatId of [PERSON, OLD_GROUP, GROUP]) {
    const result = await gateway.sendMessage(GOOD_KEY, { chatId, message: `to ${chatId}` });
    const command = ext.commands.at(-1);
    assert.deepEqual(command.data, { chatId, message: `to ${chatId}` });
    assert.equal(result.requestId, command.requestId);
    const sent = events.find((e) => e.type === 'message-sent' && e.requestId === result.requestId);
    assert.equal(sent.chatId, chatId);
    assert.equal('phoneNumber' in sent, false);
    const status = gateway.getMessageStatus(result.requestId);
    assert.equal(status.chatId, chatId);
    assert.equal(status.phoneNumber, null);
    assert.equal(status.state, 'sent');
  }
});

test('chatId works for media sends too', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { dialect: 'doc' }).connectReady(gateway);
  await gateway.sendImage(GOOD_KEY, { chatId: GROUP, dataUrl: PNG_1x1, caption: 'pic' });
  await gateway.sendDocument(GOOD_KEY, { chatId: PERSON, dataUrl: 'data:application/pdf;base64,JVBERi0=', documentName: 'a.pdf' });
  const [image, document] = ext.commands;
  assert.equal(image.type, 'send-image');
  assert.equal(image.data.chatId, GROUP);
  assert.equal(image.data.caption, 'pic');
  assert.equal('phoneNumber' in image.data, false);
  assert.equal(document.data.chatId, PERSON);
  assert.equal(document.data.documentName, 'a.pdf');
});

test('v1 calls are unchanged: phoneNumber only, no chatId in the command', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'hi' });
  assert.deepEqual(ext.commands[0].data, { phoneNumber: PHONE, message: 'hi' });
  const sent = events.find((e) => e.type === 'message-sent');
  assert.equal(sent.phoneNumber, PHONE);
  assert.equal('chatId' in sent, false);
});

test('exactly one of phoneNumber and chatId; a chatId must have one of the three forms', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url).connectReady(gateway);
  const attempt = (data) => gateway.sendMessage(GOOD_KEY, { message: 'x', ...data }).catch((e) => e);

  const both = await attempt({ phoneNumber: PHONE, chatId: PERSON });
  assert.equal(both.code, 'VALIDATION_ERROR');
  assert.equal(both.details.field, 'chatId');
  assert.match(both.message, /not both/);

  const neither = await attempt({});
  assert.equal(neither.code, 'VALIDATION_ERROR');
  assert.equal(neither.details.field, 'phoneNumber');
  assert.match(neither.message, /chatId/);

  for (const chatId of ['15551234567', '+15551234567@c.us', 'abc@c.us', '1-2@c.us', 'x y@g.us', '1@s.whatsapp.net', '', 42, `${'1'.repeat(21)}@c.us`]) {
    const error = await attempt({ chatId });
    assert.equal(error.code, 'VALIDATION_ERROR', String(chatId));
    assert.equal(error.details.field, 'chatId');
  }
  // null means absent, as for other fields.
  const withNull = await gateway.sendMessage(GOOD_KEY, { phoneNumber: null, chatId: PERSON, message: 'ok' });
  assert.equal(withNull.success, true);
  assert.equal(ext.commands.length, 1, 'nothing else was sent');
});

test('failures and acks name the chat; one idempotencyKey cannot serve a phone number and a chat', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, {
    respond: (command) => (command.data.message === 'fail' ? { success: false, error: 'nope' } : { success: true, messageId: 'wa-1' }),
  }).connectReady(gateway);
  const failed = await gateway.sendMessage(GOOD_KEY, { chatId: GROUP, message: 'fail' }).catch((e) => e);
  assert.equal(failed.code, 'EXTENSION_ERROR');
  const event = events.find((e) => e.type === 'send-failed');
  assert.equal(event.chatId, GROUP);
  assert.equal('phoneNumber' in event, false);

  const sent = await gateway.sendMessage(GOOD_KEY, { chatId: GROUP, message: 'ok', idempotencyKey: 'chat-1' });
  ext.send({ type: 'message-ack', requestId: sent.requestId, ack: 'delivered' });
  const acked = await waitFor(() => events.find((e) => e.type === 'message-ack'), 3000, 'message-ack');
  assert.equal(acked.chatId, GROUP);

  const reused = await gateway.sendMessage(GOOD_KEY, { phoneNumber: PHONE, message: 'ok', idempotencyKey: 'chat-1' }).catch((e) => e);
  assert.equal(reused.code, 'IDEMPOTENCY_KEY_REUSED');
  const again = await gateway.sendMessage(GOOD_KEY, { chatId: GROUP, message: 'ok', idempotencyKey: 'chat-1' });
  assert.equal(again.duplicate, true);
  assert.equal(ext.commands.length, 2);
  assert.equal(gateway.getMessageStatus({ apiKey: GOOD_KEY, idempotencyKey: 'chat-1' }).chatId, GROUP);
});
