'use strict';
// Where `npm run bench` installs an anchor implementation (v1, the uWebSockets.js peer)
// to measure beside ours: a temp dir keyed by the anchor's lockfile, reused across runs.
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** The install dir of the anchor `name` whose package is at `source`. */
function anchorDir(name, source) {
  const lock = fs.readFileSync(path.join(source, 'package-lock.json'));
  return path.join(os.tmpdir(), `wa-gateway-${name}-${crypto.createHash('sha1').update(lock).digest('hex').slice(0, 10)}`);
}

module.exports = { anchorDir };
