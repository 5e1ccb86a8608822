'use strict';
// Every JavaScript block of README.md and docs/*.md compiles (`node --check`), and
// the README's quick start runs as written: app.js waits for a device, the scripted
// extension.js connects, a message is sent, both exit. Other blocks that start a
// server are compiled only. The frames docs/extension-protocol.md shows for custom commands
// and failure codes are played against a real gateway, with the effects it states.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('./free-port');

const root = path.resolve(__dirname, '..');
const documents = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** Fenced JavaScript blocks of a markdown file: { file, line, code }. */
function jsBlocks(file) {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const blocks = [];
  const fence = /^```(js|javascript|mjs|cjs)\b[^\n]*\n([\s\S]*?)^```/gm;
  for (let m; (m = fence.exec(text)); ) {
    blocks.push({ file, line: text.slice(0, m.index).split('\n').length, code: m[2], esm: m[1] === 'mjs' || /^\s*(import|export)\s/m.test(m[2]) });
  }
  return blocks;
}

const allBlocks = documents.flatMap(jsBlocks);

/** A scratch app whose node_modules has this package and the packages the snippets use. */
function scratchApp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-docs-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
  for (const dep of ['ws', 'express']) {
    fs.symlinkSync(path.join(root, 'node_modules', dep), path.join(dir, 'node_modules', dep), 'dir');
  }
  return dir;
}

test('the README starts with the two commands: npm ci && npm start, and npm test', () => {
  const head = fs.readFileSync(path.join(root, 'README.md'), 'utf8').split('\n').slice(0, 15).join('\n');
  assert.match(head, /npm ci && npm start/);
  assert.match(head, /npm test/);
});

test('every JavaScript block of README.md and docs/ compiles', () => {
  assert.ok(allBlocks.length >= 5, `found ${allBlocks.length} blocks`);
  const dir = scratchApp();
  try {
    for (const [i, block] of allBlocks.entries()) {
      const file = path.join(dir, `block-${i}.${block.esm ? 'mjs' : 'js'}`);
      fs.writeFileSync(file, block.code);
      const checked = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' });
      assert.equal(checked.status, 0, `${block.file}:${block.line} does not compile:\n${checked.stderr}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Starts a script; `output()` is what it printed so far, `exited` its exit. */
function run(file, cwd, env) {
  const child = spawn(process.execPath, [file], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => out, exited };
}

async function until(predicate, ms, what) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("the README's quick start runs as written: app.js sends through extension.js", { timeout: 60_000 }, async (t) => {
  const readme = jsBlocks('README.md');
  const app = readme.find((b) => b.code.startsWith('// app.js'));
  const extension = readme.find((b) => b.code.startsWith('// extension.js'));
  assert.ok(app && extension, 'the quick start has app.js and extension.js');
  const dir = scratchApp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'app.js'), app.code);
  fs.writeFileSync(path.join(dir, 'extension.js'), extension.code);
  const env = { PORT: String(await freePort()), NODE_DEBUG: '' };

  const gateway = run('app.js', dir, env);
  t.after(() => gateway.child.kill('SIGKILL'));
  await until(() => /waiting for an extension/.test(gateway.output()), 10_000, 'app.js to listen');
  const ext = run('extension.js', dir, env);
  t.after(() => ext.child.kill('SIGKILL'));

  assert.deepEqual(await gateway.exited, { code: 0, signal: null }, gateway.output());
  assert.match(gateway.output(), /^Sent: wa-\d+ through session [0-9a-f-]{36}$/m);
  assert.deepEqual(await ext.exited, { code: 0, signal: null }, ext.output());
  assert.match(ext.output(), /Sending "Hello from app.js" to \+1234567890/);
  assert.match(ext.output(), /Closed: 1001 Server shutting down/);
});

test('the "Seeing inside" block runs as written', { timeout: 30_000 }, () => {
  const block = jsBlocks('README.md').find((b) => b.code.includes("gateway.on('gateway-error'"));
  assert.ok(block);
  const dir = scratchApp();
  try {
    fs.writeFileSync(path.join(dir, 'inside.js'), block.code);
    const result = spawnSync(process.execPath, ['inside.js'], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^0 sessions$/m);
    assert.match(result.stdout, /lines of metrics/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the "Beyond the four commands" example runs as written and prints what the README says', { timeout: 30_000 }, () => {
  const block = jsBlocks('README.md').find((b) => b.code.startsWith('// custom-command.js'));
  assert.ok(block, 'the README has custom-command.js');
  const dir = scratchApp();
  try {
    fs.writeFileSync(path.join(dir, 'custom-command.js'), block.code);
    const result = spawnSync(process.execPath, ['custom-command.js'], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n'), [
      'commands: check-number',
      'on WhatsApp: true',
      'EXTENSION_ERROR RATE_LIMITED retryable: true',
      'UNSUPPORTED_COMMAND',
    ]);
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    assert.match(readme, /prints `commands: check-number`, `on WhatsApp: true`,\s+`EXTENSION_ERROR RATE_LIMITED retryable: true`\s+and `UNSUPPORTED_COMMAND`/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The one-line JSON frames shown in a markdown file's plain fenced blocks. */
function shownFrames(file) {
  const frames = [];
  let fence = null; // the open block's language ('' for a plain one), or null outside blocks
  for (const line of fs.readFileSync(path.join(root, file), 'utf8').split('\n')) {
    if (line.startsWith('```')) fence = fence === null ? line.slice(3).trim() : null;
    else if (fence === '' && line.startsWith('{')) frames.push(JSON.parse(line));
  }
  return frames;
}

test("docs/extension-protocol.md: its custom-command and failure-code frames do what it says", { timeout: 30_000 }, async (t) => {
  const { startGateway, FakeExtension, waitFor, GOOD_KEY } = require('./helpers');
  const file = 'docs/extension-protocol.md';
  const frames = shownFrames(file);
  const shown = (what, predicate) => {
    const frame = frames.find(predicate);
    assert.ok(frame, `${file} shows ${what}`);
    return frame;
  };
  const auth = shown('an auth frame listing commands', (f) => f.type === 'auth' && Array.isArray(f.data?.commands));
  const command = shown('a check-number command', (f) => f.type === 'check-number');
  const answer = shown('a successful command-result', (f) => f.type === 'command-result' && f.success === true);
  const refusal = shown('a failed command-result', (f) => f.type === 'command-result' && f.success === false);
  const failedSend = shown('a failed message-result with a code', (f) => f.type === 'message-result' && f.code);
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const table = [...text.matchAll(/^\| `([A-Z_]+)` \| [^|]+ \| (yes|no) \|$/gm)].map((m) => [m[1], m[2] === 'yes']);
  assert.deepEqual(
    table.map(([code]) => code),
    ['NOT_ON_WHATSAPP', 'LOGGED_OUT', 'RATE_LIMITED', 'INVALID_MEDIA', 'CHAT_NOT_FOUND'],
    'the table lists the named codes',
  );
  const own = /^\| your own upper-case word \| [^|]+ \| (yes|no) \|$/m.exec(text);
  assert.ok(own, 'the table says what any other word is');
  table.push(['BLOCKED_BY_USER', own[1] === 'yes']);

  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const ext = new FakeExtension(url, { respond: () => null });
  await ext.open();
  ext.send({ ...auth, apiKey: GOOD_KEY });
  ext.sessionId = (await ext.next((f) => f.type === 'auth-success')).sessionId;
  ext.sendStatus(true);
  const session = await waitFor(() => gateway.getActiveSessions(GOOD_KEY).find((s) => s.deviceActive), 3000, 'the session');
  assert.deepEqual(session.commands, auth.data.commands, 'the listed commands');

  // The command as shown, answered with the results as shown.
  const asked = gateway.request(GOOD_KEY, command.type, command.data);
  const sent = await waitFor(() => ext.commands[0], 3000, 'the command');
  assert.deepEqual(Object.keys(sent), Object.keys(command));
  assert.deepEqual(sent.data, command.data);
  ext.send({ ...answer, requestId: sent.requestId });
  assert.deepEqual((await asked).data, answer.data);

  const refused = gateway.request(GOOD_KEY, command.type, command.data).catch((e) => e);
  const second = await waitFor(() => ext.commands[1], 3000, 'the second command');
  ext.send({ ...refusal, requestId: second.requestId });
  const error = await refused;
  assert.equal(error.code, 'EXTENSION_ERROR');
  assert.equal(error.details.error, refusal.error);
  assert.equal(error.details.extensionCode, refusal.code);
  assert.equal(error.details.retryable, table.find(([code]) => code === refusal.code)[1]);

  const { type: _type, requestId: _id, ...failure } = failedSend;
  ext.respond = () => failure;
  const notSent = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15551234567', message: 'x' }).catch((e) => e);
  assert.equal(notSent.details.error, failedSend.error);
  assert.equal(notSent.details.extensionCode, failedSend.code);

  // Each row of the table, as the backend sees it.
  for (const [code, retryable] of table) {
    ext.respond = () => ({ success: false, error: 'why', code });
    const failed = await gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15551234567', message: 'x' }).catch((e) => e);
    assert.equal(failed.code, 'EXTENSION_ERROR', code);
    assert.equal(failed.details.extensionCode, code);
    assert.equal(failed.details.retryable, retryable, `${code}: retryable as the table says`);
  }
});
