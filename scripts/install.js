'use strict';
// `npm install`: use the binary the tarball carries when it loads on this machine
// (no Rust needed, seconds), else build from source and say why (README "Install").
// WA_GATEWAY_BUILD_FROM_SOURCE=1 skips the prebuilt binary. Either way one copy of the
// addon stays on disk: the carried one where it is (index.js loads it from there), or
// the one built, without the carried one.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root, platformTag, prebuiltPath } = require('./prebuilt');
const { build } = require('./build');
const { tell } = require('./tell');

/** Why the carried binary cannot be used here, or null when it loads. */
function prebuiltProblem(file) {
  if (!fs.existsSync(file)) return `no prebuilt binary for ${platformTag()}`;
  // A child process, so that a binary that crashes on load cannot take the install down.
  const probe = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (probe.status === 0) return null;
  const reason =
    probe.error?.message ??
    (probe.stderr.split('\n').find((line) => /Error|error:/.test(line)) || `exit ${probe.status ?? probe.signal}`).trim();
  return `the prebuilt binary did not load: ${reason}`;
}

function main() {
  const file = prebuiltPath();
  const problem = process.env.WA_GATEWAY_BUILD_FROM_SOURCE
    ? 'WA_GATEWAY_BUILD_FROM_SOURCE is set'
    : prebuiltProblem(file);
  if (!problem) {
    // A gateway.node left by an earlier build would be loaded first, and is a second copy.
    fs.rmSync(path.join(root, 'gateway.node'), { force: true });
    process.stderr.write(`whatsapp-ws-extension-gateway: using the prebuilt binary for ${platformTag()}\n`);
    return;
  }
  tell(
    `whatsapp-ws-extension-gateway: ${problem}; building the addon from source ` +
      '(needs Rust/cargo and a C compiler, takes a few minutes)...',
  );
  build().then(
    // Only once the build has worked: until then the carried binary is all there is.
    () => fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true }),
    (error) => {
      tell(error.message);
      process.exitCode = 1;
    },
  );
}

main();
