'use strict';
// A script run in a child Node process, for what only a whole process shows: that it
// exits by itself, what it prints, what it warns. Always bounded in time.
const { spawn } = require('node:child_process');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');

/**
 * Runs `node [flags] -e source` from the package root. Resolves with { code, signal,
 * stdout, stderr, killed } once it has exited and its output is read, or kills it after
 * `limit` ms (killed: true). `whenRunning(stdout, child)` sees the output as it comes.
 */
function runScript(source, { flags = [], env = {}, limit = 15_000, whenRunning } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, '-e', source], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout.on('data', (d) => {
      stdout += d;
      whenRunning?.(stdout, child);
    });
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, limit);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, killed });
    });
  });
}

module.exports = { runScript };
