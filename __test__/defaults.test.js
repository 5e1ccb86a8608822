'use strict';
// The addon owns the config's defaults, its options' names and the error codes
// (src/options.rs); lib/ reads them from it. What the README's option table and
// index.d.ts's comments say about them must agree, so that a default changed in Rust
// fails here until the docs say it too.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { addon, DEFAULTS } = require('../lib/native');
const { ERROR_CODES } = require('..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');

/** Words that say an option has no value by default. */
const NO_VALUE = new Set(['required', 'none', 'off', 'any', 'every interface', '[]', 'Infinity']);

/** Every default by its path in the config ('pacing.jitterMs'), heartbeatTimeout as its rule. */
function expected() {
  const out = new Map();
  for (const [name, value] of Object.entries(DEFAULTS)) {
    if (name === 'heartbeatTimeoutIntervals') out.set('heartbeatTimeout', `${value} x heartbeatInterval`);
    else if (value !== null && typeof value === 'object') {
      for (const [inner, v] of Object.entries(value)) out.set(`${name}.${inner}`, v);
    } else out.set(name, value);
  }
  return out;
}

/** A documented default as a value: `'x'`, 30000, 1 MiB, false, `2 × heartbeatInterval`, or a no-value word. */
function said(text) {
  const t = text.replace(/`/g, '').trim();
  let m;
  if ((m = /^'(.*)'$/.exec(t))) return m[1];
  if (/^\d+$/.test(t)) return Number(t);
  if ((m = /^(\d+) MiB$/.exec(t))) return Number(m[1]) * 1024 * 1024;
  if (t === 'true' || t === 'false') return t === 'true';
  if ((m = /^(\d+) [x×] heartbeatInterval$/.exec(t))) return `${m[1]} x heartbeatInterval`;
  return { word: t };
}

function checkSaid(where, name, text, defaults) {
  const value = said(text);
  if (defaults.has(name)) {
    assert.deepEqual(value, defaults.get(name), `${where}: ${name} says ${text}, the addon ${defaults.get(name)}`);
  } else {
    assert.ok(typeof value === 'object' && NO_VALUE.has(value.word), `${where}: ${name} says ${text}, the addon has no default`);
  }
}

/** The rows of the README's table of `new WhatsAppGateway(config)`: name -> [default, meaning]. */
function readmeRows() {
  const section = readme.slice(readme.indexOf('### `new WhatsAppGateway(config)`'));
  const table = section.slice(0, section.indexOf('\n\n', section.indexOf('|---')));
  const rows = new Map();
  for (const line of table.split('\n').filter((l) => l.startsWith('| `'))) {
    const [option, fallback, meaning] = line.split(' | ').map((cell) => cell.replace(/^\| /, ''));
    rows.set(/^`(\w+)/.exec(option)[1], [fallback, meaning]);
  }
  return rows;
}

test("the README's option table lists every option of the config, and each default the addon has", () => {
  const rows = readmeRows();
  assert.deepEqual([...rows.keys()].sort(), [...addon.optionNames().config].sort());
  const defaults = expected();
  for (const [name, [fallback]] of rows) checkSaid('README', name, fallback, defaults);
  // Defaults of the nested option objects, given in the meaning column: `leaseMs = 10000`.
  for (const [object, [, meaning]] of rows) {
    for (const [, inner, value] of meaning.matchAll(/(\w+) = ('[^']*'|\w+)/g)) {
      checkSaid('README', `${object}.${inner}`, value, defaults);
    }
  }
  for (const name of defaults.keys()) {
    const [object, inner] = name.split('.');
    const documented = inner === undefined ? rows.has(name) : rows.get(object)?.[1].includes(`${inner} = `);
    assert.ok(documented, `the README's table gives ${name}'s default`);
  }
});

/** `(default X)` of each property of an interface of index.d.ts: name -> X. */
function dtsDefaults(interfaceName) {
  const start = dts.indexOf(`export interface ${interfaceName} {`);
  assert.ok(start >= 0, interfaceName);
  const body = dts.slice(start, dts.indexOf('\n}\n', start));
  const out = new Map();
  for (const [, doc, name] of body.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*(\w+)\??[(:]/g)) {
    const text = doc.replace(/\s*\n\s*\*\s*/g, ' ');
    const m = /\(default:? ([^;,)]+)/.exec(text) ?? /^\s*('[^']*') \(default\)/.exec(text);
    if (m) out.set(name, m[1].replace(/: .*$/, ''));
  }
  return out;
}

test("index.d.ts's comments give the addon's defaults", () => {
  const defaults = expected();
  const documented = new Set();
  for (const [interfaceName, prefix] of [
    ['GatewayConfig', ''],
    ['PacingOptions', 'pacing.'],
    ['ClusterOptions', 'cluster.'],
  ]) {
    for (const [name, text] of dtsDefaults(interfaceName)) {
      checkSaid('index.d.ts', prefix + name, text, defaults);
      documented.add(prefix + name);
    }
  }
  for (const name of defaults.keys()) assert.ok(documented.has(name), `index.d.ts gives ${name}'s default`);
});

test('ERROR_CODES, index.d.ts and the README name the codes the addon lists', () => {
  const codes = addon.errorCodes();
  assert.deepEqual(Object.keys(ERROR_CODES), codes);
  const union = dts.slice(dts.indexOf('export type ErrorCode ='), dts.indexOf(';', dts.indexOf('export type ErrorCode =')));
  assert.deepEqual([...union.matchAll(/'(\w+)'/g)].map((m) => m[1]).sort(), [...codes].sort());
  // The README's table of errors, and its protocol doc for the codes of error frames.
  const errors = readme.slice(readme.indexOf('## Errors'), readme.indexOf('\n## ', readme.indexOf('## Errors') + 1));
  const protocol = fs.readFileSync(path.join(root, 'docs', 'extension-protocol.md'), 'utf8');
  for (const code of codes) assert.ok(errors.includes(`\`${code}\``) || protocol.includes(`\`${code}\``) || readme.includes(`\`${code}\``), `${code} is documented`);
  for (const [, code] of errors.matchAll(/^\| `([A-Z_]+)`/gm)) assert.ok(codes.includes(code), `the README's ${code} is a code`);
});
