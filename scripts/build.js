'use strict';
// Builds the addon from source with cargo (release mode) and puts it next to
// index.js as gateway.node. `npm run build` runs it; so does the install script when
// no prebuilt binary fits. Needs only Node and a Rust toolchain: no devDependency, no
// download.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root } = require('./prebuilt');
const { tell } = require('./tell');

const libName = 'whatsapp_ws_extension_gateway';
const fileName = {
  darwin: `lib${libName}.dylib`,
  win32: `${libName}.dll`,
}[process.platform] || `lib${libName}.so`;

/** Resolves once gateway.node is in place; rejects with a message that names the fix. */
function build() {
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  const started = Date.now();
  // npm hides an install script's output: a line a minute shows it is not stuck.
  const progress = setInterval(() => {
    const minutes = Math.round((Date.now() - started) / 60000);
    tell(`whatsapp-ws-extension-gateway: still compiling the Rust addon (${minutes} min so far)...`);
  }, 60_000);
  return new Promise((resolve, reject) => {
    const cargo = spawn('cargo', ['build', '--release', '--locked'], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, CARGO_TARGET_DIR: targetDir },
    });
    cargo.on('error', (error) => finish(error.code === 'ENOENT' ? 'cargo was not found on PATH' : error.message));
    cargo.on('exit', (status, signal) => finish(status === 0 ? null : `cargo exited with ${signal ?? `status ${status}`}`));
    let done = false;
    function finish(problem) {
      if (done) return;
      done = true;
      clearInterval(progress);
      if (problem) {
        reject(
          new Error(
            `whatsapp-ws-extension-gateway: building the Rust addon failed (${problem}). ` +
              'Building from source needs Rust/cargo (https://rustup.rs) and a C compiler; ' +
              'then run `npm rebuild whatsapp-ws-extension-gateway`.',
          ),
        );
        return;
      }
      fs.copyFileSync(path.join(targetDir, 'release', fileName), path.join(root, 'gateway.node'));
      // Installed as a dependency, the build tree is only dead weight (hundreds of MB).
      const insideNodeModules = root.split(path.sep).includes('node_modules');
      if (insideNodeModules && !process.env.CARGO_TARGET_DIR) {
        fs.rmSync(targetDir, { recursive: true, force: true });
      }
      resolve();
    }
  });
}

module.exports = { build };

if (require.main === module) {
  build().catch((error) => {
    tell(error.message);
    process.exitCode = 1;
  });
}
