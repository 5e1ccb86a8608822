'use strict';
// The path users take (README "Install"): `npm pack` in this checkout, then `npm install
// <tarball>` into a fresh app with production dependencies only, on a PATH without
// cargo: the carried prebuilt binary must load, and the package must work from
// CommonJS and ESM. When the carried binary cannot be used, the install says why.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { platformTag } = require('../scripts/prebuilt');

const root = path.resolve(__dirname, '..');

/** This machine's PATH without the directories that hold cargo: a machine without Rust. */
const PATH_WITHOUT_CARGO = process.env.PATH.split(path.delimiter)
  .filter((dir) => dir && !fs.existsSync(path.join(dir, 'cargo')))
  .join(path.delimiter);
const noRust = { PATH: PATH_WITHOUT_CARGO };

function run(cmd, args, cwd, extraEnv = {}) {
  return execFileSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
    timeout: 600_000,
  });
}

/** Runs and returns { status, stdout, stderr } whatever the exit status. */
function attempt(cmd, args, cwd, extraEnv = {}) {
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...extraEnv }, timeout: 120_000 });
}

/** Every native addon file under `dir`, with its size. */
function addonsIn(dir) {
  return fs
    .readdirSync(dir, { recursive: true })
    .filter((file) => file.endsWith('.node'))
    .map((file) => ({ file, bytes: fs.statSync(path.join(dir, file)).size }));
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-pack-'));
let tarball;

test.before(() => {
  // prepack rebuilds the addon; cargo's target directory of this checkout keeps it incremental.
  const name = run('npm', ['pack', '--silent', '--pack-destination', work], root, {
    CARGO_TARGET_DIR: path.join(root, 'target'),
  });
  tarball = path.join(work, name.trim().split('\n').pop());
});
test.after(() => fs.rmSync(work, { recursive: true, force: true }));

test('the machine for these tests has no cargo on the reduced PATH', () => {
  const probe = attempt('cargo', ['--version'], work, noRust);
  assert.equal(probe.error?.code, 'ENOENT');
});

test('npm pack carries a prebuilt binary for this platform and leaves no copy in the checkout', () => {
  const listing = run('tar', ['-tzf', tarball], work).split('\n');
  assert.ok(listing.includes(`package/prebuilds/${platformTag()}/gateway.node`), listing.join('\n'));
  assert.ok(!listing.includes('package/gateway.node'), 'the loose addon is not packed');
  assert.ok(!fs.existsSync(path.join(root, 'prebuilds')), 'postpack removed prebuilds/');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(manifest.optionalDependencies, undefined);
});

test('the tarball installs without Rust into a fresh app and sends', { timeout: 300_000 }, async () => {
  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const install = attempt(
    'npm',
    ['install', '--omit=dev', '--no-audit', '--no-fund', '--foreground-scripts', tarball],
    app,
    noRust,
  );
  assert.equal(install.status, 0, install.stderr);
  assert.match(install.stderr, new RegExp(`using the prebuilt binary for ${platformTag()}`));
  assert.doesNotMatch(install.stderr, /building the addon from source/);
  const installed = path.join(app, 'node_modules', 'whatsapp-ws-extension-gateway');
  // One copy of the addon on disk: the carried one, used where it is.
  const addons = addonsIn(installed);
  assert.deepEqual(addons.map((a) => a.file), [path.join('prebuilds', platformTag(), 'gateway.node')]);
  assert.ok(addons[0].bytes > 1e6 && addons[0].bytes < 12e6, `${addons[0].bytes} bytes`);
  assert.ok(!fs.existsSync(path.join(installed, 'node_modules')), 'no dependencies were installed with it');

  // A client to play the extension: `ws` from this checkout, outside the app.
  const wsPath = require.resolve('ws');
  const script = `
    const { WhatsAppGateway, ERROR_CODES } = require('whatsapp-ws-extension-gateway');
    const WebSocket = require(${JSON.stringify(wsPath)});
    (async () => {
      const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }) });
      await gateway.start();
      const ws = new WebSocket('ws://127.0.0.1:' + gateway.address().port + '/wa-ext-ws');
      ws.on('message', (raw) => {
        const f = JSON.parse(raw);
        if (f.type === 'authenticated') ws.send(JSON.stringify({ type: 'status', status: 'WhatsApp Web is logged in', ready: true }));
        if (f.type === 'send-message') ws.send(JSON.stringify({ type: 'message-result', requestId: f.requestId, success: true, messageId: 'm-1' }));
      });
      ws.on('open', () => ws.send(JSON.stringify({ type: 'authenticate', apiKey: 'packed-key-123' })));
      while (!gateway.getActiveSessions('packed-key-123').some((s) => s.deviceActive)) await new Promise((r) => setTimeout(r, 10));
      const result = await gateway.sendMessage('packed-key-123', { phoneNumber: '+1234567890', message: 'from the tarball' });
      ws.close();
      await gateway.stop();
      console.log(JSON.stringify({ messageId: result.messageId, code: ERROR_CODES.NO_ACTIVE_DEVICE }));
    })();
  `;
  const out = JSON.parse(run(process.execPath, ['-e', script], app, noRust).trim());
  assert.deepEqual(out, { messageId: 'm-1', code: 'NO_ACTIVE_DEVICE' });

  fs.writeFileSync(
    path.join(app, 'esm.mjs'),
    `import pkg, { WhatsAppGateway, ERROR_CODES, SERVER_MESSAGE_TYPES, EXTENSION_MESSAGE_TYPES } from 'whatsapp-ws-extension-gateway';
     const g = new WhatsAppGateway({ validateApiKey: () => ({ valid: true }) });
     console.log(JSON.stringify([typeof pkg.WhatsAppGateway, ERROR_CODES.GATEWAY_SHUTDOWN, SERVER_MESSAGE_TYPES.PING, EXTENSION_MESSAGE_TYPES.AUTH, g.getHealth().status]));`,
  );
  const esm = JSON.parse(run(process.execPath, ['esm.mjs'], app, noRust).trim());
  assert.deepEqual(esm, ['function', 'GATEWAY_SHUTDOWN', 'ping', 'auth', 'stopped']);
});

test('installed with install scripts skipped (npm --ignore-scripts, pnpm), the carried binary still loads', { timeout: 120_000 }, () => {
  const app = path.join(work, 'app-no-scripts');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app2', version: '1.0.0', private: true }));
  run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--ignore-scripts', tarball], app, noRust);
  const installed = path.join(app, 'node_modules', 'whatsapp-ws-extension-gateway');
  assert.ok(!fs.existsSync(path.join(installed, 'gateway.node')), 'the install script did not run');
  const script = `
    const { WhatsAppGateway } = require('whatsapp-ws-extension-gateway');
    const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }) });
    gateway.start().then(() => {
      const running = gateway.getHealth().status;
      return gateway.stop().then(() => console.log(running));
    });
  `;
  assert.equal(run(process.execPath, ['-e', script], app, noRust).trim(), 'running');

  // With neither binary, the error names the fix.
  fs.rmSync(path.join(installed, 'prebuilds'), { recursive: true });
  const missing = attempt(process.execPath, ['-e', "require('whatsapp-ws-extension-gateway')"], app, noRust);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /native addon is missing or broken/);
  assert.match(missing.stderr, /npm rebuild whatsapp-ws-extension-gateway/);
});

test('without a usable prebuilt binary the install says why and what building needs', () => {
  const unpacked = path.join(work, 'unpacked');
  fs.mkdirSync(unpacked);
  run('tar', ['-xzf', tarball, '-C', unpacked], work);
  const pkg = path.join(unpacked, 'package');
  const carried = path.join(pkg, 'prebuilds', platformTag(), 'gateway.node');

  fs.writeFileSync(carried, 'not a shared library');
  const broken = attempt(process.execPath, ['scripts/install.js'], pkg, noRust);
  assert.notEqual(broken.status, 0);
  assert.match(broken.stderr, /the prebuilt binary did not load: \S/);
  assert.match(broken.stderr, /needs Rust\/cargo/);
  assert.match(broken.stderr, /cargo was not found on PATH/);
  assert.match(broken.stderr, /npm rebuild whatsapp-ws-extension-gateway/);

  // Built from source (here by a stand-in for cargo that puts this checkout's addon where
  // cargo would): the carried binary goes, the built one stays, one copy.
  const fakeCargo = path.join(work, 'fake-cargo');
  fs.mkdirSync(fakeCargo);
  const built = path.join(root, 'gateway.node');
  const libFile = { darwin: 'libwhatsapp_ws_extension_gateway.dylib', win32: 'whatsapp_ws_extension_gateway.dll' }[process.platform] ?? 'libwhatsapp_ws_extension_gateway.so';
  fs.writeFileSync(
    path.join(fakeCargo, 'cargo'),
    `#!/bin/sh\nmkdir -p "$CARGO_TARGET_DIR/release" && cp ${JSON.stringify(built)} "$CARGO_TARGET_DIR/release/${libFile}"\n`,
    { mode: 0o755 },
  );
  const fromSource = attempt(process.execPath, ['scripts/install.js'], pkg, {
    PATH: `${fakeCargo}${path.delimiter}${PATH_WITHOUT_CARGO}`,
  });
  assert.equal(fromSource.status, 0, fromSource.stderr);
  assert.match(fromSource.stderr, /the prebuilt binary did not load/);
  assert.deepEqual(addonsIn(pkg).map((a) => a.file), ['gateway.node']);
  assert.ok(!fs.existsSync(path.join(pkg, 'prebuilds')), 'the carried binary is gone');
  const loads = attempt(process.execPath, ['-e', "require('.').WhatsAppGateway"], pkg, noRust);
  assert.equal(loads.status, 0, loads.stderr);

  fs.rmSync(path.join(pkg, 'gateway.node'));
  const missing = attempt(process.execPath, ['scripts/install.js'], pkg, noRust);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, new RegExp(`no prebuilt binary for ${platformTag()}`));
  assert.ok(!fs.existsSync(path.join(pkg, 'gateway.node')), 'no addon claimed to be installed');
});

/** Runs the command of a devDependency of this checkout; returns its status and output. */
function lint(pkg, args) {
  const manifest = path.join(root, 'node_modules', pkg, 'package.json');
  const { bin } = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  const main = typeof bin === 'string' ? bin : Object.values(bin)[0];
  const result = attempt(process.execPath, [path.join(path.dirname(manifest), main), ...args], work);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

test('types resolve for every resolver: attw on the tarball ("." everywhere, "./client" for ESM and bundlers)', { timeout: 120_000 }, () => {
  const attw = '@arethetypeswrong/cli';
  const common = ['--no-emoji', '--no-color', '--format', 'table-flipped'];
  const root = lint(attw, [tarball, ...common, '--entrypoints', '.']);
  assert.equal(root.status, 0, root.output);
  for (const resolver of ['node10', 'node16 (from CJS)', 'node16 (from ESM)', 'bundler']) assert.match(root.output, new RegExp(resolver.replace(/[()]/g, '\\$&')));
  assert.match(root.output, /OK \(ESM\)/, 'ESM importers get ESM types');
  assert.doesNotMatch(root.output, /Masquerading/);
  // The client is an ES module: node10 and require() are out of its scope by design.
  const client = lint(attw, [tarball, ...common, '--entrypoints', './client', '--profile', 'esm-only']);
  assert.equal(client.status, 0, client.output);
});

test('publint finds nothing to warn about in the tarball', { timeout: 120_000 }, () => {
  const { status, output } = lint('publint', ['run', tarball, '--level', 'warning', '--strict']);
  assert.equal(status, 0, output);
  assert.match(output, /All good/);
});

test('an ES module importer type-checks with the ESM types (default and named imports)', { timeout: 120_000 }, () => {
  const app = path.join(work, 'app-types');
  fs.mkdirSync(path.join(app, 'node_modules'), { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app3', version: '1.0.0', private: true, type: 'module' }));
  run('tar', ['-xzf', tarball, '-C', path.join(app, 'node_modules')], work);
  fs.renameSync(path.join(app, 'node_modules', 'package'), path.join(app, 'node_modules', 'whatsapp-ws-extension-gateway'));
  fs.writeFileSync(
    path.join(app, 'app.mts'),
    `import pkg, { WhatsAppGateway, GatewayError, type GatewayConfig } from 'whatsapp-ws-extension-gateway';
     const config: GatewayConfig = { validateApiKey: async () => ({ valid: true }) };
     const gateway: WhatsAppGateway = new pkg.WhatsAppGateway(config);
     const health = gateway.getHealth();
     const live: boolean = health.live;
     export const checks = [live, new GatewayError('SERVER_ERROR', 'y') instanceof Error];\n`,
  );
  const tsc = require.resolve('typescript/bin/tsc');
  const flags = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022'];
  const result = attempt(process.execPath, [tsc, ...flags, 'app.mts'], app);
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
});
