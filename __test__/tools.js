'use strict';
// Debian tools some tests drive (promtool, nginx, redis-sentinel): whether they are here.
const { spawnSync } = require('node:child_process');

/** The path of `tool`, or null. */
function which(tool) {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : null;
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
