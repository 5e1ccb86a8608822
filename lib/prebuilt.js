'use strict';
// Where a packed tarball carries the addon built on the machine that packed it
// (README "Install"): prebuilds/<platform tag>/gateway.node. The install script copies it
// next to index.js; index.js also loads it from here when the install script did not
// run (npm --ignore-scripts, package managers that skip dependencies' scripts).
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** linux-x64-gnu, linux-x64-musl, darwin-arm64, ...: what a binary needs to load. */
function platformTag() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return base;
  // Node built against glibc reports its version; on musl the field is absent.
  const report = /** @type {{ header?: { glibcVersionRuntime?: string } } | undefined} */ (process.report?.getReport?.());
  return `${base}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

function prebuiltPath(tag = platformTag()) {
  return path.join(root, 'prebuilds', tag, 'gateway.node');
}

module.exports = { root, platformTag, prebuiltPath };
