'use strict';
// Builds the addon from source with cargo (release mode) and puts it next to
// index.js as gateway.node. Runs on `npm install`, so it needs only Node and a
// Rust toolchain: no devDependency, no download.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
const libName = 'whatsapp_ws_extension_gateway';
const fileName = {
  darwin: `lib${libName}.dylib`,
  win32: `${libName}.dll`,
}[process.platform] || `lib${libName}.so`;

const cargo = spawnSync('cargo', ['build', '--release', '--locked'], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CARGO_TARGET_DIR: targetDir },
});
if (cargo.error || cargo.status !== 0) {
  console.error('whatsapp-ws-extension-gateway: building the Rust addon failed.');
  console.error('It needs a Rust toolchain (https://rustup.rs) and a C compiler.');
  process.exit(cargo.status || 1);
}
fs.copyFileSync(path.join(targetDir, 'release', fileName), path.join(root, 'gateway.node'));

// Installed as a dependency, the build tree is only dead weight (hundreds of MB).
const insideNodeModules = root.split(path.sep).includes('node_modules');
if (insideNodeModules && !process.env.CARGO_TARGET_DIR) {
  fs.rmSync(targetDir, { recursive: true, force: true });
}
