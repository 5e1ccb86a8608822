'use strict';
// Every JavaScript block of README.md and docs/*.md compiles (`node --check`), and
// the README's quick start runs as written: app.js waits for a device, the scripted
// extension.js connects, a message is sent, both exit. Other blocks that start a
// server are compiled only.
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
