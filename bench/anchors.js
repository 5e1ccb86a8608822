'use strict';
// Where `npm run bench` installs an anchor implementation (v1, the uWebSockets.js peer)
// to measure beside ours: a temp dir keyed by the anchor's lockfile, reused across runs.
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/**
 * Where each anchor's package is: v1 in WA_BENCH_V1, the peer in WA_BENCH_PEER (paths;
 * .ci/run sets them when it finds the packages). Unset: that anchor is left out.
 */
const ANCHOR_SOURCES = { v1: 'WA_BENCH_V1', 'uws-peer': 'WA_BENCH_PEER' };

/** The package dir of the anchor `name` from its environment variable, or undefined. */
function anchorSource(name) {
  const value = process.env[ANCHOR_SOURCES[name]];
  return value ? path.resolve(value) : undefined;
}

/** The install dir of the anchor `name` whose package is at `source`. */
function anchorDir(name, source) {
  const lock = fs.readFileSync(path.join(source, 'package-lock.json'));
  return path.join(os.tmpdir(), `wa-gateway-${name}-${crypto.createHash('sha1').update(lock).digest('hex').slice(0, 10)}`);
}

module.exports = { ANCHOR_SOURCES, anchorDir, anchorSource };
