'use strict';
// native.d.ts: the addon's own types, as napi-rs generates them from the #[napi] items of
// src/ (a debug build with `napi build --dts`, into a scratch folder so that the release
// gateway.node stays). With --check, fails when the committed file differs from what the
// sources generate now (CI runs that; `npm run native-types` brings it up to date).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const committed = path.join(root, 'native.d.ts');

function napiBin() {
  const manifest = require.resolve('@napi-rs/cli/package.json');
  return path.join(path.dirname(manifest), require(manifest).bin.napi);
}

/** What the sources generate now (package.json's `napi` settings: no const enums, the header file). */
function generate() {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'native-dts-'));
  try {
    const built = spawnSync(process.execPath, [napiBin(), 'build', '--output-dir', scratch, '--dts', 'native.d.ts', '--no-dts-cache'], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (built.status !== 0) throw new Error(`napi build failed (${built.signal ?? `status ${built.status}`})`);
    const text = fs.readFileSync(path.join(scratch, 'native.d.ts'), 'utf8');
    // The CLI only warns when it cannot read the header file; without it, Arg<T> is undefined.
    if (!text.includes('type Arg<T> = T')) throw new Error('the generated native.d.ts lacks scripts/native-dts-header.d.ts');
    return text;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

function main() {
  const fresh = generate();
  if (!process.argv.includes('--check')) {
    fs.writeFileSync(committed, fresh);
    console.log('native.d.ts written');
    return;
  }
  const old = fs.existsSync(committed) ? fs.readFileSync(committed, 'utf8') : '';
  if (old === fresh) {
    console.log('native.d.ts is up to date');
    return;
  }
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'native-dts-'));
  fs.writeFileSync(path.join(scratch, 'native.d.ts'), fresh);
  spawnSync('diff', ['-u', committed, path.join(scratch, 'native.d.ts')], { stdio: 'inherit' });
  fs.rmSync(scratch, { recursive: true, force: true });
  console.error('native.d.ts is stale: run `npm run native-types` and commit it');
  process.exitCode = 1;
}

main();
