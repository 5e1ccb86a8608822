'use strict';
// Which fields carry the media of a command (docs/extension-protocol.md, "Dialects"): an
// extension that says at auth which field it reads (`data.fields: 'dataUrl'`, as the
// client SDK does) gets the media once, in that field, whatever the gateway's dialect;
// every other extension (the three dialects, unchanged) gets what the dialect writes.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, PNG_1x1 } = require('./helpers');

const PHONE = '+15551234567';
const VIDEO = 'data:video/mp4;base64,AAAAIGZ0eXBpc29t';
const PDF = 'data:application/pdf;base64,JVBERi0xLjQK';

/** An extension of `dialect` that says, at auth, that it reads `fields` (if given). */
class DeclaringExtension extends FakeExtension {
  constructor(url, { fields, ...options }) {
    super(url, options);
    this.declared = fields;
  }

  send(frame) {
    if (frame?.type === 'auth' && this.declared !== undefined) frame = { ...frame, data: { ...frame.data, fields: this.declared } };
    super.send(frame);
  }
}

async function connect(t, gateway, url, options) {
  const ext = new DeclaringExtension(url, options);
  t.after(() => ext.ws?.terminate());
  await ext.connectReady(gateway);
  return ext;
}

/** The media fields of each of the three media commands `ext` receives. */
async function mediaFieldsOf(gateway, ext) {
  const target = ext.sessionId;
  await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, target });
  await gateway.sendVideo(GOOD_KEY, { phoneNumber: PHONE, dataUrl: VIDEO, target });
  await gateway.sendDocument(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PDF, documentName: 'a.pdf', target });
  const commands = ext.commands.filter((c) => c.type !== 'send-message').slice(-3);
  return commands.map((c) => {
    const fields = Object.keys(c.data).filter((k) => /dataUrl$/i.test(k)).sort();
    const media = { 'send-image': PNG_1x1, 'send-video': VIDEO, 'send-document': PDF }[c.type];
    for (const field of fields) assert.equal(c.data[field], media, `${c.type} ${field}`);
    return fields;
  });
}

const BOTH = [
  ['dataUrl', 'imageDataUrl'],
  ['dataUrl', 'videoDataUrl'],
  ['dataUrl', 'documentDataUrl'],
];
const KIND = [['imageDataUrl'], ['videoDataUrl'], ['documentDataUrl']];
const ONE = [['dataUrl'], ['dataUrl'], ['dataUrl']];

test("an extension declaring fields: 'dataUrl' gets the media once, in dataUrl, in every dialect", async (t) => {
  for (const dialect of [undefined, 'compat', 'v1', 'doc']) {
    const { gateway, url } = await startGateway(dialect ? { dialect } : {});
    t.after(() => gateway.stop());
    const ext = await connect(t, gateway, url, { dialect: dialect === 'v1' ? 'v1' : 'doc', fields: 'dataUrl' });
    assert.deepEqual(await mediaFieldsOf(gateway, ext), ONE, `dialect ${dialect}`);
  }
});

test('extensions that declare nothing (all three dialects) or compat get what they always got', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  for (const [dialect, fields] of [['v1'], ['doc'], ['guide'], ['v1', 'compat'], ['doc', 'imageDataUrl'], ['doc', ['dataUrl']]]) {
    const ext = await connect(t, gateway, url, { dialect, fields });
    assert.deepEqual(await mediaFieldsOf(gateway, ext), BOTH, `${dialect} ${JSON.stringify(fields)}`);
  }
  const v1 = await startGateway({ dialect: 'v1' });
  t.after(() => v1.gateway.stop());
  const ext = await connect(t, v1.gateway, v1.url, { dialect: 'v1' });
  assert.deepEqual(await mediaFieldsOf(v1.gateway, ext), KIND);
});

test('a send that waited for a device gets the fields of the device it reaches', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const sending = gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, dataUrl: PNG_1x1, waitForDevice: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const ext = await connect(t, gateway, url, { dialect: 'doc', fields: 'dataUrl' });
  await sending;
  const [command] = ext.commands;
  assert.deepEqual(Object.keys(command.data).sort(), ['caption', 'dataUrl', 'mimeType', 'phoneNumber']);
  assert.equal(command.data.dataUrl, PNG_1x1);
});

test('the client SDK declares the field it reads and gets each media once', async (t) => {
  const { GatewayClient } = await import('whatsapp-ws-extension-gateway/client');
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const received = [];
  const sent = [];
  class Recording extends WebSocket {
    constructor(address) {
      super(address);
      this.addEventListener('message', (event) => received.push(JSON.parse(event.data)));
    }
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const client = new GatewayClient({ url, apiKey: GOOD_KEY, WebSocket: Recording });
  t.after(() => client.close());
  const seen = [];
  client.handle('send-image', (data) => {
    seen.push(data);
    return { messageId: 'wa-image' };
  });
  client.setStatus({ whatsappLoggedIn: true, ready: true });
  client.connect();
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 3000, 'active session');
  assert.equal(sent[0].data.fields, 'dataUrl');
  const result = await gateway.sendImage(GOOD_KEY, { phoneNumber: PHONE, imageDataUrl: PNG_1x1, caption: 'pic' });
  assert.equal(result.messageId, 'wa-image');
  const command = received.find((f) => f.type === 'send-image');
  assert.deepEqual(Object.keys(command.data).sort(), ['caption', 'dataUrl', 'mimeType', 'phoneNumber']);
  assert.equal(seen[0].dataUrl, PNG_1x1);
});
