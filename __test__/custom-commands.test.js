'use strict';
// gateway.request(apiKey, type, data, options) (README: "Beyond the four commands"): a
// custom command goes only to sessions that listed its type at auth, through the same
// path as sends (idempotency, records, late truth, timeouts), and resolves with the
// extension's command-result. Real extensions on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { execFileSync } = require('node:child_process');
const { startGateway, FakeExtension, waitFor, GOOD_KEY, OTHER_KEY } = require('./helpers');
const { EXTENSION_MESSAGE_TYPES, SERVER_MESSAGE_TYPES, ERROR_CODES } = require('..');

const CHECK = 'check-number';

/** An extension that handles `check-number` and answers nothing by itself. */
function silent(url, options = {}) {
  return new FakeExtension(url, { commands: [CHECK], respond: () => null, ...options });
}

test('request() sends {type, requestId, data} and resolves { requestId, data, deviceInfo } with the command-result', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, {
    commands: [CHECK],
    respond: (command) => ({ success: true, data: { onWhatsApp: true, asked: command.data } }),
  }).connectReady(gateway);
  const result = await gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+15551234567' });
  const command = ext.commands[0];
  assert.deepEqual(Object.keys(command).sort(), ['data', 'requestId', 'type']);
  assert.equal(command.type, CHECK);
  assert.deepEqual(command.data, { phoneNumber: '+15551234567' });
  assert.deepEqual(Object.keys(result).sort(), ['data', 'deviceInfo', 'requestId']);
  assert.equal(result.requestId, command.requestId);
  assert.deepEqual(result.data, { onWhatsApp: true, asked: { phoneNumber: '+15551234567' } });
  assert.deepEqual(result.deviceInfo, { sessionId: ext.sessionId, extensionVersion: '1.0.0', browser: 'Chrome' });

  const event = events.find((e) => e.type === 'command-result');
  assert.equal(event.command, CHECK);
  assert.equal(event.requestId, result.requestId);
  assert.equal(event.status, 'success');
  assert.equal(event.sessionId, ext.sessionId);
  assert.equal(events.filter((e) => e.type.endsWith('-sent')).length, 0, 'no *-sent event');
  const status = gateway.getMessageStatus(result.requestId);
  assert.equal(status.state, 'sent');
  assert.equal(status.kind, 'command');
  assert.equal(status.command, CHECK);
  assert.equal(status.ack, null, 'a command has no delivery acks');

  // data may be any JSON value, or left out (null); a command-result without data is null.
  ext.respond = () => ({ success: true });
  for (const data of [undefined, null, 7, 'text', [1, 2]]) {
    const answered = await gateway.request(GOOD_KEY, CHECK, data);
    assert.deepEqual(ext.commands.at(-1).data, data === undefined ? null : data);
    assert.equal(answered.data, null);
  }
});

test('request() type: ^[a-z][a-z0-9-]{0,63}$ and no frame type of the protocol, else VALIDATION_ERROR on type', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const builtIn = [...Object.values(SERVER_MESSAGE_TYPES), ...Object.values(EXTENSION_MESSAGE_TYPES)];
  assert.ok(builtIn.includes('command-result'));
  for (const type of ['', 'Check', '1st', '-a', 'a_b', 'a.b', 'x'.repeat(65), 7, null, ...builtIn]) {
    const error = await gateway.request(GOOD_KEY, type, {}).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR', String(type));
    assert.equal(error.details.field, 'type');
  }
  const longest = 'x'.repeat(64);
  const unsupported = await gateway.request(GOOD_KEY, longest, {}).catch((e) => e);
  assert.equal(unsupported.code, 'UNSUPPORTED_COMMAND', 'the longest name is a valid type');
  assert.equal(ext.commands.length, 0);
});

test('request() data: JSON, within maxPayload; options are checked like a send', async (t) => {
  const { gateway, url } = await startGateway({ maxPayload: 1024 });
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const cyclic = {};
  cyclic.self = cyclic;
  for (const data of [10n, cyclic, () => 1, Symbol('s'), { big: 'x'.repeat(1100) }]) {
    const error = await gateway.request(GOOD_KEY, CHECK, data).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.details.field, 'data');
  }
  const checks = [
    [{ timeout: 0 }, 'timeout'],
    [{ deviceSelectionStrategy: 'fastest' }, 'deviceSelectionStrategy'],
    [{ idempotencyKey: '' }, 'idempotencyKey'],
    [{ target: 5 }, 'target'],
    [{ waitForDevice: -1 }, 'waitForDevice'],
    [{ paced: 'yes' }, 'paced'],
    [{ metadata: 'x'.repeat(5000) }, 'metadata'],
  ];
  for (const [options, field] of checks) {
    const error = await gateway.request(GOOD_KEY, CHECK, {}, options).catch((e) => e);
    assert.equal(error.code, 'VALIDATION_ERROR', field);
    assert.equal(error.details.field, field);
  }
  const noKey = await gateway.request('', CHECK, {}).catch((e) => e);
  assert.equal(noKey.details.field, 'apiKey');
  assert.equal(ext.commands.length, 0, 'nothing was sent');
});

test('request() chooses only among sessions that listed the type; UNSUPPORTED_COMMAND when active ones do not, nothing sent', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const plain = await new FakeExtension(url).connectReady(gateway);
  const error = await gateway.request(GOOD_KEY, CHECK, {}).catch((e) => e);
  assert.equal(error.code, 'UNSUPPORTED_COMMAND');
  assert.equal(ERROR_CODES.UNSUPPORTED_COMMAND, 'UNSUPPORTED_COMMAND');
  assert.equal(error.details.command, CHECK);
  assert.equal(error.details.sent, false);
  assert.match(error.message, /check-number/);

  const handling = await new FakeExtension(url, { commands: ['react', CHECK, 'BAD NAME', 'ping', 7] }).connectReady(gateway);
  const sessions = gateway.getActiveSessions(GOOD_KEY);
  assert.deepEqual(sessions.find((s) => s.sessionId === handling.sessionId).commands, ['react', CHECK], 'invalid names are ignored');
  assert.deepEqual(sessions.find((s) => s.sessionId === plain.sessionId).commands, []);
  for (let i = 0; i < 4; i++) {
    const result = await gateway.request(GOOD_KEY, CHECK, { i });
    assert.equal(result.deviceInfo.sessionId, handling.sessionId);
  }
  assert.equal(plain.commands.length, 0, 'the session without it got none');
  // Sends still alternate over both.
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'a' });
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'b' });
  assert.equal(plain.commands.length, 1);

  // A target that does not list it is UNSUPPORTED_COMMAND too; one that does is used.
  const targeted = await gateway.request(GOOD_KEY, CHECK, {}, { target: plain.sessionId }).catch((e) => e);
  assert.equal(targeted.code, 'UNSUPPORTED_COMMAND');
  assert.equal(targeted.details.target, plain.sessionId);
  const ok = await gateway.request(GOOD_KEY, CHECK, {}, { target: handling.sessionId });
  assert.equal(ok.deviceInfo.sessionId, handling.sessionId);

  // No active session at all: NO_ACTIVE_DEVICE, as for sends.
  const none = await gateway.request(OTHER_KEY, CHECK, {}).catch((e) => e);
  assert.equal(none.code, 'NO_ACTIVE_DEVICE');
  assert.equal(events.filter((e) => e.type === 'command-result' && e.status === 'failure').length, 0, 'no device was chosen');
});

test('request() with waitForDevice waits for a session that handles it; one that does not ends the wait with UNSUPPORTED_COMMAND', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const waiting = gateway.request(GOOD_KEY, CHECK, { n: 1 }, { waitForDevice: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const ext = await new FakeExtension(url, { commands: [CHECK] }).connectReady(gateway);
  const result = await waiting;
  assert.equal(result.deviceInfo.sessionId, ext.sessionId);
  assert.deepEqual(result.data, { echo: { n: 1 } });

  const other = gateway.request(OTHER_KEY, CHECK, {}, { waitForDevice: 10_000 }).catch((e) => e);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const plain = await new FakeExtension(url, { apiKey: OTHER_KEY }).connectReady(gateway);
  const error = await other;
  assert.equal(error.code, 'UNSUPPORTED_COMMAND');
  assert.equal(error.details.sent, false);
  assert.equal(plain.commands.length, 0);
});

test('request() failures: EXTENSION_ERROR with the extension code, command-result failure event, timeouts and late truth', async (t) => {
  const { gateway, url, events } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);

  const failing = gateway.request(GOOD_KEY, CHECK, {}, { metadata: { order: 7 } }).catch((e) => e);
  const first = await waitFor(() => ext.commands[0], 3000, 'the command');
  ext.commandResult(first.requestId, { success: false, error: 'WhatsApp Web is logged out', code: 'LOGGED_OUT' });
  const error = await failing;
  assert.equal(error.code, 'EXTENSION_ERROR');
  assert.equal(error.details.error, 'WhatsApp Web is logged out');
  assert.equal(error.details.extensionCode, 'LOGGED_OUT');
  assert.equal(error.details.retryable, true);
  const failed = events.find((e) => e.type === 'command-result' && e.status === 'failure');
  assert.equal(failed.command, CHECK);
  assert.equal(failed.requestId, first.requestId);
  assert.equal(failed.details.code, 'EXTENSION_ERROR');
  assert.equal(failed.details.extensionCode, 'LOGGED_OUT');
  assert.deepEqual(failed.metadata, { order: 7 });
  assert.equal(events.filter((e) => e.type === 'send-failed').length, 0);
  assert.equal(gateway.getMessageStatus(first.requestId).error.extensionCode, 'LOGGED_OUT');

  const timedOut = await gateway.request(GOOD_KEY, CHECK, { slow: true }, { timeout: 200, metadata: 'late-one' }).catch((e) => e);
  assert.equal(timedOut.code, 'REQUEST_TIMEOUT');
  assert.equal(timedOut.details.sent, true);
  const { requestId } = timedOut.details;
  assert.equal(gateway.getMessageStatus(requestId).state, 'unknown');
  ext.commandResult(requestId, { success: true, data: { onWhatsApp: false } });
  const late = await waitFor(
    () => events.find((e) => e.type === 'command-result' && e.requestId === requestId && e.status === 'success'),
    3000,
    'the late command-result event',
  );
  assert.equal(late.late, true);
  assert.equal(late.status, 'success');
  assert.equal(late.command, CHECK);
  assert.equal(late.metadata, 'late-one');
  assert.equal(gateway.getMessageStatus(requestId).state, 'sent');
  // Acks are for messages: one for a command changes nothing and fires nothing.
  ext.send({ type: 'message-ack', requestId, ack: 'read' });
  // A session's frames are read in order: once a result sent after the ack has settled its
  // call, the ack has been read too.
  const barrier = gateway.request(GOOD_KEY, CHECK, {});
  const third = await waitFor(() => ext.commands[2], 3000, 'the third command');
  ext.commandResult(third.requestId, { success: true, data: {} });
  await barrier;
  assert.equal(events.filter((e) => e.type === 'message-ack').length, 0);
  assert.equal(gateway.getMessageStatus(requestId).ack, null);
});

test('request() idempotencyKey: a retry is not sent again and resolves with the same data; other data is IDEMPOTENCY_KEY_REUSED', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, {
    commands: [CHECK],
    respond: (command) => ({ success: true, data: { id: command.requestId } }),
  }).connectReady(gateway);
  const options = { idempotencyKey: 'check-1', metadata: { m: 1 } };
  const [one, two] = await Promise.all([
    gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+1' }, options),
    gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+1' }, options),
  ]);
  const three = await gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+1' }, options);
  assert.equal(ext.commands.length, 1, 'sent once');
  assert.deepEqual(one.data, { id: one.requestId });
  for (const duplicate of [two, three]) {
    assert.equal(duplicate.duplicate, true);
    assert.equal(duplicate.requestId, one.requestId);
    assert.deepEqual(duplicate.data, one.data);
    assert.deepEqual(duplicate.deviceInfo, one.deviceInfo);
  }
  const reused = await gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+2' }, options).catch((e) => e);
  assert.equal(reused.code, 'IDEMPOTENCY_KEY_REUSED');
  const otherType = await gateway.request(GOOD_KEY, 'react', { phoneNumber: '+1' }, options).catch((e) => e);
  assert.equal(otherType.code, 'IDEMPOTENCY_KEY_REUSED');
  assert.equal(ext.commands.length, 1);
});

test('request() is paced only with paced: true', async (t) => {
  const { gateway, url } = await startGateway({ pacing: { minIntervalMs: 60_000 } });
  t.after(() => gateway.stop());
  const ext = await new FakeExtension(url, { commands: [CHECK] }).connectReady(gateway);
  await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'first' });
  const queued = gateway.sendMessage(GOOD_KEY, { phoneNumber: '+1234567890', message: 'second' }).catch((e) => e);
  await waitFor(() => gateway.getHealth().queuedSends === 1, 3000, 'the second send to queue');
  const quick = await gateway.request(GOOD_KEY, CHECK, { quick: true }, { timeout: 5000 });
  assert.deepEqual(quick.data, { echo: { quick: true } }, 'not held by the pacing queue');
  const paced = await gateway.request(GOOD_KEY, CHECK, {}, { paced: true, timeout: 300 }).catch((e) => e);
  assert.equal(paced.code, 'REQUEST_TIMEOUT', 'waited its turn behind the queued send');
  assert.equal(paced.details.sent, false, 'never written');
  assert.equal(ext.commands.filter((c) => c.type === CHECK).length, 1);
  await gateway.stop();
  assert.equal((await queued).code, 'GATEWAY_SHUTDOWN');
});

test('the request() types compile with a generic answer; a send needs exactly one of phoneNumber and chatId; a status names a command, a chat and an extension code', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-types-'));
  const root = path.resolve(__dirname, '..');
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
    const good = `
import { WhatsAppGateway, type CommandResult, type SendMessageData } from 'whatsapp-ws-extension-gateway';
declare const gateway: WhatsAppGateway;
async function main() {
  const checked: CommandResult<{ onWhatsApp: boolean }> = await gateway.request<{ onWhatsApp: boolean }>('k', 'check-number', { phoneNumber: '+1' }, { target: 's', paced: true, idempotencyKey: 'i', metadata: { a: 1 } });
  const on: boolean = checked.data.onWhatsApp;
  const sessionId: string = checked.deviceInfo.sessionId;
  const toGroup: SendMessageData = { chatId: '1@g.us', message: 'm', target: 's' };
  await gateway.sendMessage('k', toGroup);
  await gateway.sendImage('k', { chatId: '1@c.us', dataUrl: 'data:image/png;base64,AA==' });
  await gateway.sendMessage('k', { phoneNumber: '+1', message: 'v1 unchanged' });
  const commands: string[] = (gateway.getActiveSessions('k') as { commands: string[] }[])[0].commands;
  const status = gateway.getMessageStatus(checked.requestId);
  const command: string | undefined = status?.kind === 'command' ? status.command : undefined;
  const chat: string | undefined = status?.chatId;
  const why: string | undefined = status?.error?.extensionCode;
  const phone: string | null | undefined = status?.phoneNumber;
  return [on, sessionId, commands, command, chat, why, phone];
}
void main;
`;
    const bad = `
import { WhatsAppGateway } from 'whatsapp-ws-extension-gateway';
declare const gateway: WhatsAppGateway;
void gateway.sendMessage('k', { phoneNumber: '+1', chatId: '1@c.us', message: 'both' });
void gateway.sendMessage('k', { message: 'neither' });
const n: number = (null as unknown as Awaited<ReturnType<typeof gateway.request<string>>>).data;
const phone: string = gateway.getMessageStatus('r')!.phoneNumber;
void [n, phone];
`;
    fs.writeFileSync(path.join(dir, 'good.ts'), good);
    fs.writeFileSync(path.join(dir, 'bad.ts'), bad);
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022', '--module', 'esnext', '--moduleResolution', 'bundler'];
    try {
      execFileSync(process.execPath, [tsc, ...flags, 'good.ts'], { cwd: dir, stdio: 'pipe' });
    } catch (error) {
      assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    }
    let output = '';
    try {
      execFileSync(process.execPath, [tsc, ...flags, 'bad.ts'], { cwd: dir, stdio: 'pipe' });
    } catch (error) {
      output = `${error.stdout ?? ''}`;
    }
    const errors = output.split('\n').filter((line) => /^bad\.ts\(\d+,\d+\): error/.test(line));
    assert.deepEqual(
      errors.map((line) => Number(/^bad\.ts\((\d+),/.exec(line)[1])),
      [4, 5, 6, 7],
      `each wrong line fails, and only those:\n${output}`,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a command-result whose data is nested past 32 levels is refused with INVALID_MESSAGE; that call alone times out", async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = await silent(url).connectReady(gateway);
  const deep = gateway.request(GOOD_KEY, CHECK, { n: 1 }, { timeout: 600 }).catch((e) => e);
  const fine = gateway.request(GOOD_KEY, CHECK, { n: 2 }, { timeout: 5000 });
  await waitFor(() => ext.commands.length === 2, 3000, 'both commands');
  let nested = 1;
  for (let i = 0; i < 40; i++) nested = [nested];
  ext.commandResult(ext.commands[0].requestId, { success: true, data: nested });
  const refusal = await ext.next((f) => f.type === 'error' && f.code === 'INVALID_MESSAGE');
  assert.match(refusal.message, /32 levels/);
  ext.commandResult(ext.commands[1].requestId, { success: true, data: { ok: true } });
  assert.deepEqual((await fine).data, { ok: true });
  assert.equal((await deep).code, 'REQUEST_TIMEOUT');
});

test('request() idempotencyKey: a duplicate resolves with data nested as deep as a command-result may carry', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  let deep = { onWhatsApp: true };
  for (let i = 0; i < 30; i++) deep = [deep];
  const ext = await new FakeExtension(url, { commands: [CHECK], respond: () => ({ success: true, data: deep }) }).connectReady(gateway);
  const options = { idempotencyKey: 'deep-1', metadata: { nested: [[[[1]]]] } };
  const first = await gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+1' }, options);
  assert.deepEqual(first.data, deep);
  const again = await gateway.request(GOOD_KEY, CHECK, { phoneNumber: '+1' }, options);
  assert.deepEqual(again, { ...first, duplicate: true, metadata: options.metadata });
  assert.equal(ext.commands.length, 1);
});
