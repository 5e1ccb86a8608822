'use strict';
// native.d.ts holds the addon's types as napi-rs generates them from src/ (CI regenerates
// it and fails on any difference: scripts/native-types.js --check). Here, without a build:
// index.js and lib/ type-check against it (tsconfig.json, `tsc --checkJs`), and what it
// declares is what the loaded addon has.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const declared = fs.readFileSync(path.join(root, 'native.d.ts'), 'utf8');
const addon = require(path.join(root, 'gateway.node'));

test('index.js and lib/ type-check against the generated types of the addon (tsc --checkJs)', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', root], { cwd: root, encoding: 'utf8' });
  assert.equal(result.status, 0, `tsc -p . failed:\n${result.stdout}${result.stderr}`);
});

test('native.d.ts declares the values the addon exports, no more and no fewer', () => {
  const values = [...declared.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  // String enums are exported as objects too; the types name them as unions of their strings.
  const unions = [...declared.matchAll(/^export type (\w+) = '/gm)].map((m) => m[1]);
  assert.deepEqual([...values, ...unions].sort(), Object.keys(addon).sort());
});

test("native.d.ts declares NativeGateway's methods as the addon has them", () => {
  const body = declared.slice(declared.indexOf('export declare class NativeGateway {'));
  const methods = [...body.slice(0, body.indexOf('\n}\n')).matchAll(/^ {2}(?:get )?(\w+)\(/gm)].map((m) => m[1]).filter((name) => name !== 'constructor');
  const own = Object.getOwnPropertyNames(addon.NativeGateway.prototype).filter((name) => name !== 'constructor');
  assert.deepEqual(methods.sort(), own.sort());
});
