'use strict';
// index.d.ts as a TypeScript user meets it: with `strict`, under node16 (ESM and CommonJS)
// and bundler resolution, through the package's own exports. Snippets that must compile
// compile without a single error; each snippet that must not (an unknown option, at any
// depth, in the constructor's config or a send call) fails on its own line, with an error
// that names the misspelt key. Uses the `typescript` devDependency.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const tsc = require.resolve('typescript/bin/tsc');

const PRELUDE = `
import { WhatsAppGateway, type GatewayConfig, type SendMessageData, type SessionInfo, type ClusterSessionInfo } from 'whatsapp-ws-extension-gateway';
const validateApiKey = async (apiKey: string) => ({ valid: apiKey.length > 0, userId: 'u' });
const gateway = new WhatsAppGateway({ validateApiKey });
`;

/** Every option and every send field, as users write them: not one error. */
const MUST_COMPILE = `${PRELUDE}
const full = new WhatsAppGateway({
  port: 3000, host: '127.0.0.1', path: '/ws', validateApiKey,
  onMessageLog: (event) => void event.type, onError: (error) => void error.code,
  heartbeatInterval: 1, heartbeatTimeout: 2, requestTimeout: 3, maxSessionsPerKey: 1,
  deviceSelectionStrategy: 'random', authTimeout: 1, maxPayload: 1, maxMediaBytes: 1,
  allowedOrigins: ['chrome-extension://x'], mediaFileRoots: ['/tmp'], mediaAllowPrivateHosts: false,
  mediaFetchTimeout: 1, dialect: 'doc', idempotencyTtl: 1,
  pacing: { minIntervalMs: 1, jitterMs: 2, maxPerMinute: 3 }, maxQueuedSends: 1, waitForDevice: 0,
  trustProxy: true, reusePort: false, maxPendingAuth: 1, maxPendingAuthPerIp: 1, maxPreAuthPayload: 1,
  maxQueuedBytes: 1,
});
const local: SessionInfo[] = full.getActiveSessions('k');
const clustered = new WhatsAppGateway({
  validateApiKey: (apiKey) => ({ valid: apiKey === 'k' }),
  cluster: { redis: 'redis://127.0.0.1:6379', nodeId: 'a', keyPrefix: 'p:', leaseMs: 1000 },
});
const remote: Promise<ClusterSessionInfo[]> = clustered.getActiveSessions('k');
/** A Buffer as it looks without @types/node: a Uint8Array with more methods. */
declare const pemBuffer: Uint8Array & { readUInt8(offset: number): number };
/** pino, winston: the four methods and many more. */
declare const pinoLike: {
  debug(f: object, m: string): void; info(f: object, m: string): void; warn(f: object, m: string): void;
  error(f: object, m: string): void; child(bindings: object): unknown; level: string;
};
const deployed = new WhatsAppGateway({
  validateApiKey,
  logger: pinoLike,
  cluster: {
    redis: { sentinels: ['10.0.0.1:26379'], name: 'main', username: 'u', password: 'p', sentinelUsername: 'su', sentinelPassword: 'sp', db: 1 },
    tls: { ca: pemBuffer, cert: 'PEM', key: [pemBuffer], servername: 'redis.internal', rejectUnauthorized: true },
    secret: 's',
  },
});
declare const server: { on(event: string, listener: (...args: any[]) => void): unknown; listen(port: number): unknown };
const attached = new WhatsAppGateway({ server, validateApiKey });
const typed: GatewayConfig = { validateApiKey, requestTimeout: 5 };
const fromVariable = new WhatsAppGateway(typed);
class Subclassed extends WhatsAppGateway {
  running() {
    return this.isRunning;
  }
}
const data: SendMessageData = { phoneNumber: '+1234567890', message: 'm', timeout: 5 };
async function sends() {
  await gateway.sendMessage('k', data);
  await gateway.sendMessage('k', {
    phoneNumber: '+1234567890', message: 'm', timeout: 1, deviceSelectionStrategy: 'least-busy',
    idempotencyKey: 'i', waitFor: 'delivered', waitForDevice: 1,
  });
  await gateway.sendImage('k', { phoneNumber: '+1234567890', imageUrl: 'https://x/a.png', caption: 'c' });
  await gateway.sendVideo('k', { phoneNumber: '+1234567890', videoDataUrl: 'data:video/mp4;base64,AA==' });
  await gateway.sendDocument('k', { phoneNumber: '+1234567890', documentUrl: 'https://x/a.pdf', documentName: 'a.pdf' });
}
void [local, remote, deployed, attached, fromVariable, Subclassed, sends, new Subclassed({ validateApiKey }).running()];
export {};
`;

/** Each must fail on its line, with an error naming the key after `// error:`. */
const MUST_NOT_COMPILE = `${PRELUDE}
new WhatsAppGateway({ validateApiKey, requestTimout: 5 }); // error: requestTimout
new WhatsAppGateway({ validateApiKey, pacing: { minIntervalMs: 1, jiter: 5 } }); // error: jiter
new WhatsAppGateway({ validateApiKey, pacing: { minInterval: 4000 } }); // error: minInterval
new WhatsAppGateway({ validateApiKey, cluster: { redis: 'redis://127.0.0.1:6379', nodeID: 'a' } }); // error: nodeID
new WhatsAppGateway({ validateApiKey, cluster: { redis: 'redis://127.0.0.1:6379' }, hearbeatInterval: 1 }); // error: hearbeatInterval
new WhatsAppGateway({ server: {}, validateApiKey, colour: 'red' }); // error: colour
new WhatsAppGateway({ validateApiKey, cluster: { redis: 'rediss://h:6380', tls: { servrname: 'h' } } }); // error: servrname
new WhatsAppGateway({ validateApiKey, cluster: { redis: { sentinels: ['h:26379'], name: 'm', pasword: 'p' } } }); // error: pasword
void gateway.sendMessage('k', { phoneNumber: '+1234567890', message: 'm', timout: 5 }); // error: timout
void gateway.sendImage('k', { phoneNumber: '+1234567890', imageURL: 'https://x/a.png' }); // error: imageURL
void gateway.sendVideo('k', { phoneNumber: '+1234567890', videoUrl: 'https://x/a.mp4', idempotencykey: 'i' }); // error: idempotencykey
void gateway.sendDocument('k', { phoneNumber: '+1234567890', documentUrl: 'https://x/a.pdf', filename: 'a.pdf' }); // error: filename
export {};
`;

/** tsc's errors by file and line: { 'fail.ts:12': ['error TS2322: ...', ...] }. */
function errorsByLine(output) {
  const errors = {};
  let current = null;
  for (const line of output.split('\n')) {
    const head = /^(\S+)\((\d+),\d+\): (error .*)$/.exec(line);
    if (head) {
      current = `${head[1]}:${head[2]}`;
      (errors[current] ??= []).push(head[3]);
    } else if (current && line.startsWith(' ')) {
      errors[current][errors[current].length - 1] += `\n${line}`;
    } else {
      current = null;
    }
  }
  return errors;
}

const SETUPS = [
  { name: 'node16, ESM', ext: 'mts', flags: ['--module', 'node16', '--moduleResolution', 'node16'] },
  { name: 'node16, CommonJS', ext: 'cts', flags: ['--module', 'node16', '--moduleResolution', 'node16'] },
  { name: 'bundler', ext: 'ts', flags: ['--module', 'esnext', '--moduleResolution', 'bundler'] },
];

for (const setup of SETUPS) {
  test(`types (${setup.name}, strict): unknown options do not compile; every known one does`, { timeout: 120_000 }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-types-'));
    try {
      fs.mkdirSync(path.join(dir, 'node_modules'));
      fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
      const pass = `pass.${setup.ext}`;
      const fail = `fail.${setup.ext}`;
      fs.writeFileSync(path.join(dir, pass), MUST_COMPILE);
      fs.writeFileSync(path.join(dir, fail), MUST_NOT_COMPILE);
      const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022', ...setup.flags];
      const run = spawnSync(process.execPath, [tsc, ...flags, pass, fail], { cwd: dir, encoding: 'utf8', timeout: 110_000 });
      const output = `${run.stdout}${run.stderr}`;
      const errors = errorsByLine(output);

      const passErrors = Object.keys(errors).filter((at) => at.startsWith(`${pass}:`));
      assert.deepEqual(passErrors.map((at) => `${at} ${errors[at].join(' | ')}`), [], 'snippets that must compile');

      const expected = new Map();
      MUST_NOT_COMPILE.split('\n').forEach((line, i) => {
        const marker = /\/\/ error: (\S+)$/.exec(line);
        if (marker) expected.set(`${fail}:${i + 1}`, marker[1]);
      });
      for (const [at, key] of expected) {
        assert.ok(errors[at], `${at} (${key}) must not compile; tsc said:\n${output}`);
        assert.ok(
          errors[at].some((message) => message.includes(`'${key}'`)),
          `${at}: the error names '${key}':\n${errors[at].join('\n')}`,
        );
      }
      const stray = Object.keys(errors).filter((at) => at.startsWith(`${fail}:`) && !expected.has(at));
      assert.deepEqual(stray.map((at) => `${at} ${errors[at].join(' | ')}`), [], 'no error besides the expected ones');
      assert.doesNotMatch(output, /^error TS/m, 'no error about the setup itself');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('the options the typo warnings know are the ones index.d.ts declares, object by object', () => {
  const ts = require('typescript');
  const { CONFIG_OPTIONS, NESTED_OPTIONS, SEND_FIELDS } = require('../lib/known-options');
  const file = path.join(root, 'index.d.ts');
  const program = ts.createProgram([file], { strict: true, noEmit: true, types: [] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file);
  /**
   * The property names of an interface or type of index.d.ts, inherited ones included (a
   * send's data is a type: its options and one of two recipients, each naming both fields).
   */
  const declared = (name) => {
    const node = source.statements.find((s) => (ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s)) && s.name.text === name);
    assert.ok(node, `index.d.ts declares ${name}`);
    return checker.getPropertiesOfType(checker.getTypeAtLocation(node)).map((p) => p.name).sort();
  };
  const lists = {
    GatewayConfig: CONFIG_OPTIONS,
    PacingOptions: NESTED_OPTIONS.pacing,
    ClusterOptions: NESTED_OPTIONS.cluster,
    SentinelOptions: NESTED_OPTIONS['cluster.redis'],
    ClusterTlsOptions: NESTED_OPTIONS['cluster.tls'],
    SendMessageData: SEND_FIELDS.message,
    SendImageData: SEND_FIELDS.image,
    SendVideoData: SEND_FIELDS.video,
    SendDocumentData: SEND_FIELDS.document,
  };
  for (const [name, known] of Object.entries(lists)) {
    assert.deepEqual([...known].sort(), declared(name), `${name} and lib/known-options.js`);
  }
});
