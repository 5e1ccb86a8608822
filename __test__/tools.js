'use strict';
// Debian tools some tests drive (promtool, nginx, redis-sentinel): whether they are here.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');

/** The path of `tool`, or null. */
function which(tool) {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  if (found.status === 0) return found.stdout.trim();
  // Debian puts nginx in /usr/sbin, which a non-login PATH may lack.
  const sbin = `/usr/sbin/${tool}`;
  return fs.existsSync(sbin) ? sbin : null;
}

/**
 * Why a test needing `tool` cannot run here, or false. Only outside CI: in CI (`CI` set,
 * as .ci/run does, which installs them) a missing tool is a failure, never a skip.
 */
function toolSkip(tool, install) {
  if (which(tool)) return false;
  const reason = `${tool} not found: ${install} (.ci/run does this)`;
  if (process.env.CI) throw new Error(`${reason}; CI is set, so this test may not skip`);
  return reason;
}

module.exports = { which, toolSkip };
