'use strict';
// The repository stands alone: what it says cites its own README and docs, never a file
// its users do not have, and no test reads a file from beside the checkout unless an
// environment variable names it (GUIDE_MD for the v1 guide, see guide-source.js).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const SKIP_DIRS = new Set(['.git', 'node_modules', 'target', 'prebuilds', 'corpus', 'artifacts']);
const TEXT = /\.(js|mjs|cjs|ts|mts|rs|md|toml|json|sh|yml|yaml)$|^run$/;

function* files(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) yield* files(path.join(dir, entry.name));
    } else if (TEXT.test(entry.name) && entry.name !== 'package-lock.json' && entry.name !== 'Cargo.lock') {
      yield path.join(dir, entry.name);
    }
  }
}

/** Every line of the checkout's text files matching `pattern`, as `file:line: text`. */
function matches(pattern, allowed = () => false) {
  const found = [];
  for (const file of files(root)) {
    const relative = path.relative(root, file);
    if (allowed(relative)) continue;
    fs.readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (pattern.test(line)) found.push(`${relative}:${i + 1}: ${line.trim()}`);
      });
  }
  return found;
}

test('comments and docs cite the repository\'s own README and docs, not a specification it does not ship', () => {
  // The pattern is spelled so that this file does not cite it either.
  assert.deepEqual(matches(/\bS[P]EC (section )?\d/), []);
});

test('only .ci/run looks beside the checkout; it hands what it finds on as GUIDE_MD, WA_BENCH_V1 and WA_BENCH_PEER', () => {
  const allowed = (relative) => relative === path.join('.ci', 'run');
  assert.deepEqual(matches(/\.\.\/s[h]ared\b|\/s[h]ared\/seed/, allowed), []);
});

test('every export of lib/ is used by another file of the package, its scripts or its tests', () => {
  const sources = [...files(root)].filter((f) => /\.(js|mjs)$/.test(f) && !f.endsWith('stands-alone.test.js'));
  const text = new Map(sources.map((f) => [f, fs.readFileSync(f, 'utf8')]));
  const unused = [];
  for (const name of fs.readdirSync(path.join(root, 'lib')).filter((n) => n.endsWith('.js'))) {
    const file = path.join(root, 'lib', name);
    const exported = Object.keys(require(file));
    const module = name.replace(/\.js$/, '');
    for (const symbol of exported) {
      const word = new RegExp(`\\b${symbol}\\b`);
      const users = [...text].filter(([f, s]) => f !== file && s.includes(module) && word.test(s));
      if (users.length === 0) unused.push(`lib/${name}: ${symbol}`);
    }
  }
  assert.deepEqual(unused, []);
});

test('every file a comment or doc points to exists where it says', () => {
  const pointer = /\b(?:src|lib|crates|docs|__test__|scripts|examples|client|bench)\/[A-Za-z0-9_/.-]+\.(?:rs|js|md|mjs|ts|mts|toml)\b/g;
  const core = path.join(root, 'crates', 'gateway-core');
  const stale = [];
  for (const file of files(root)) {
    const relative = path.relative(root, file);
    // bench/ names files inside the packages it installs (v1's src/index.js) and its own crate's.
    if (relative.startsWith(`bench${path.sep}`) || relative === path.join('__test__', 'stands-alone.test.js')) continue;
    // The core crate's sources name files of the crate (src/...) and of the repository.
    const bases = file.startsWith(core + path.sep) ? [core, root] : [root];
    fs.readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        for (const [named] of line.matchAll(pointer)) {
          if (!bases.some((base) => fs.existsSync(path.join(base, named)))) stale.push(`${relative}:${i + 1}: ${named}`);
        }
      });
  }
  assert.deepEqual(stale, []);
});
