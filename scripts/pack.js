'use strict';
// `prepack` and `postpack`: the tarball carries a binary for this platform that is
// never older than the sources (`prepack` always runs the build, which cargo keeps
// incremental), and the checkout keeps no copy of it afterwards, so that a later
// `npm ci` here builds from source instead of installing a stale prebuilt.
const fs = require('node:fs');
const path = require('node:path');
const { root, prebuiltPath } = require('./prebuilt');

const step = process.argv[2];
if (step === 'prepack') {
  const { build } = require('./build');
  build().then(() => {
    const target = prebuiltPath();
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.copyFileSync(path.join(root, 'gateway.node'), target);
  }, (error) => {
    console.error(error.message);
    process.exit(1);
  });
} else if (step === 'postpack') {
  fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
} else {
  console.error('usage: node scripts/pack.js prepack|postpack');
  process.exit(2);
}
