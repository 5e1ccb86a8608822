'use strict';
// What media sends in flight cost in memory (README "Media"): calls in flight that
// name one media source (an image sent to many recipients) share one copy of it in the
// gateway, and the copy is given back once they have settled. Measured in a child
// process, whose peak resident size (VmHWM) only this scenario moves.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { runScript } = require('./child-script');
const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');

const MiB = 1024 * 1024;

/**
 * The gateway's process: 16 sends at once, 8 of image A and 8 of image B (4 MiB each,
 * 5.6 MB as data URLs), after one of each to warm up. Prints its port, then the peak
 * growth of its resident memory over the warmed-up baseline and what is left once the
 * sends have settled.
 */
const GATEWAY = `
const crypto = require('node:crypto');
const fs = require('node:fs');
const { startGateway, waitFor, GOOD_KEY } = require('./__test__/helpers');
const status = (field) => Number(fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp('^' + field + ':\\\\s+(\\\\d+) kB', 'm'))[1]) * 1024;
const image = (byte) => 'data:image/png;base64,' + Buffer.alloc(4 * 1024 * 1024, byte).toString('base64');
(async () => {
  const { gateway, port } = await startGateway();
  console.log(JSON.stringify({ port }));
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).some((s) => s.deviceActive), 10000, 'an active session');
  const images = { A: image(1), B: image(2) };
  const send = (name, i) => gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', caption: name + i, imageDataUrl: images[name] });
  await send('A', 0);
  await send('B', 0);
  global.gc();
  fs.writeFileSync('/proc/self/clear_refs', '5');
  const baseline = status('VmRSS');
  const outcomes = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => send(i % 2 ? 'B' : 'A', i + 1)));
  const peak = status('VmHWM') - baseline;
  global.gc();
  const after = status('VmRSS') - baseline;
  const failed = outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason.code);
  console.log(JSON.stringify({ peak, after, failed }));
  await gateway.stop();
})();
`;

/**
 * The extension, in this process: checks that each command carries its own image in both
 * fields, and stops reading for 500 ms at the first command after the warm-up, so that
 * all 16 are in flight together.
 */
async function extension(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/wa-ext-ws`, { perMessageDeflate: false, maxPayload: 64 * MiB });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const expected = {
    A: `data:image/png;base64,${Buffer.alloc(4 * MiB, 1).toString('base64')}`,
    B: `data:image/png;base64,${Buffer.alloc(4 * MiB, 2).toString('base64')}`,
  };
  const seen = { commands: 0, wrong: 0 };
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.type === 'auth-success') return ws.send(JSON.stringify({ type: 'status', data: { whatsappLoggedIn: true, ready: true } }));
    if (!frame.requestId) return;
    if (++seen.commands === 3) {
      ws._socket.pause();
      setTimeout(() => ws._socket.resume(), 500);
    }
    const { caption, imageDataUrl, dataUrl } = frame.data;
    if (imageDataUrl !== expected[caption[0]] || dataUrl !== imageDataUrl) seen.wrong++;
    ws.send(JSON.stringify({ type: 'message-result', requestId: frame.requestId, success: true, messageId: 'm' }));
  });
  ws.send(JSON.stringify({ type: 'auth', apiKey: GOOD_KEY, data: { extensionVersion: '1', browser: 'test' } }));
  return { ws, seen };
}

test('sends in flight of one media source hold it once, and give it back when settled', { timeout: 120_000 }, async (t) => {
  let connected;
  const run = await runScript(GATEWAY, {
    flags: ['--expose-gc'],
    limit: 90_000,
    whenRunning: (stdout) => {
      if (connected || !stdout.includes('\n')) return;
      connected = extension(JSON.parse(stdout.split('\n')[0]).port);
      connected.then(({ ws }) => t.after(() => ws.terminate()));
    },
  });
  assert.equal(run.code, 0, run.stderr);
  const { seen } = await connected;
  const { peak, after, failed } = JSON.parse(run.stdout.trim().split('\n').pop());
  assert.deepEqual(failed, []);
  assert.deepEqual(seen, { commands: 18, wrong: 0 }, 'every command carries its own image in both fields');
  // One copy per source is 2 x 5.6 MB; one per send was 16 x 5.6 MB (90 MB).
  assert.ok(peak < 28 * MiB, `peak growth ${(peak / MiB).toFixed(1)} MiB for 16 sends of 2 images`);
  assert.ok(after < 12 * MiB, `${(after / MiB).toFixed(1)} MiB still held after they settled`);
});

test('a send of a source whose earlier sends are all written (their results still due) carries the media again', { timeout: 30_000 }, async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const answers = [];
  const ext = new FakeExtension(url, {
    dialect: 'doc',
    respond: (command) => {
      answers.push(() => ext.result(command.requestId, { success: true, messageId: `m-${command.data.caption}` }));
      return null;
    },
  });
  t.after(() => ext.ws?.terminate());
  await ext.connectReady(gateway);
  const image = `data:image/png;base64,${Buffer.alloc(300 * 1024, 7).toString('base64')}`;
  const first = gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', caption: 'first', dataUrl: image });
  await waitFor(() => ext.commands.length === 1, 5000, 'the first command');
  // Written, and its result not in: a second call with the same source, then a third.
  const second = gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', caption: 'second', dataUrl: image });
  const third = gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', caption: 'third', dataUrl: image });
  await waitFor(() => ext.commands.length === 3, 5000, 'all three commands');
  for (const answer of answers) answer();
  const results = await Promise.all([first, second, third]);
  assert.deepEqual(
    results.map((r) => r.messageId),
    ['m-first', 'm-second', 'm-third'],
  );
  assert.deepEqual(
    ext.commands.map((c) => [c.data.caption, c.data.dataUrl === image]),
    [
      ['first', true],
      ['second', true],
      ['third', true],
    ],
  );
});

// Media copies, Node's buffers and strings of megabytes are mapped and unmapped on
// their own by glibc until the process frees a block larger than them; had the gateway
// freed one of tens of megabytes as it was made, every later one would come from the
// heap, and what was freed stay resident.
test('making a gateway leaves freed megabytes free to go back to the system', { timeout: 30_000 }, async () => {
  const run = await runScript(
    `
const fs = require('node:fs');
const { WhatsAppGateway } = require('.');
const rss = () => Number(fs.readFileSync('/proc/self/status', 'utf8').match(/^VmRSS:\\s+(\\d+) kB/m)[1]) * 1024;
const gateway = new WhatsAppGateway({ port: 0, validateApiKey: async () => ({ valid: true }) });
global.gc();
const before = rss();
let blocks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(5 * 1024 * 1024, i + 1));
blocks = null;
global.gc();
global.gc();
console.log(JSON.stringify({ kept: rss() - before, gateway: typeof gateway }));
`,
    { flags: ['--expose-gc'] },
  );
  assert.equal(run.code, 0, run.stderr);
  const { kept } = JSON.parse(run.stdout.trim().split('\n').pop());
  assert.ok(kept < 16 * MiB, `${(kept / MiB).toFixed(1)} MiB of 40 MiB freed still resident`);
});
