'use strict';
// index.d.ts says what the runtime does: the answers whose shape depends on the config
// (`address()` when attached, the session queries in cluster mode) are typed from it, and
// a config decided at run time gets every shape it may have. Each `@ts-expect-error` is a
// use the types must refuse; tsc fails on one that compiles, so a lying type fails here.
// What the runtime answers in each case is tested in attach.test.js and cluster.test.js.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

const SOURCE = `import { WhatsAppGateway, type GatewayConfig, type ClusterOptions } from 'whatsapp-ws-extension-gateway';

const validateApiKey = () => ({ valid: true });
declare const redisUrl: string | undefined;
declare const httpServer: { listen(port: number): void };

export async function sessions(): Promise<void> {
  // Without cluster: synchronous, as in v1 (also for a variable typed GatewayConfig).
  const plain = new WhatsAppGateway({ validateApiKey, port: 3000 });
  const local: number = plain.getActiveSessions('k').length;
  const v1Config: GatewayConfig = { validateApiKey };
  const typed: number = new WhatsAppGateway(v1Config).getActiveSessions('k').length;

  // With cluster: promises.
  const clustered = new WhatsAppGateway({ validateApiKey, cluster: { redis: 'redis://127.0.0.1:6379' } });
  // @ts-expect-error a promise in cluster mode
  void clustered.getActiveSessions('k').length;
  const all: string = (await clustered.getActiveSessions('k'))[0].nodeId;
  const declared = new WhatsAppGateway<GatewayConfig & { cluster: ClusterOptions }>({ validateApiKey, cluster: { redis: 'redis://x' } });
  // @ts-expect-error a promise in cluster mode
  void declared.getAllSessions().length;

  // Decided at run time: either, so it must be awaited.
  const maybe = new WhatsAppGateway({ validateApiKey, cluster: redisUrl ? { redis: redisUrl } : undefined });
  // @ts-expect-error may be a promise: cluster is set at run time
  void maybe.getActiveSessions('k').length;
  // @ts-expect-error may be a promise: cluster is set at run time
  void maybe.getAllSessions().map((s) => s.apiKey);
  // @ts-expect-error may be a promise: cluster is set at run time
  void maybe.getMessageStatus('id')?.state;
  const awaited: number = (await maybe.getActiveSessions('k')).length;
  const status = await maybe.getMessageStatus('id');
  void [local, typed, all, awaited, status?.state];
}

export function addresses(): void {
  // Its own server: { port } or null.
  const own = new WhatsAppGateway({ validateApiKey, port: 0 });
  const port: number | undefined = own.address()?.port;

  // Attached: the server's address(), which may be a pipe's name.
  const attached = new WhatsAppGateway({ validateApiKey, server: httpServer });
  const answer = attached.address();
  // @ts-expect-error a string for a pipe or Unix socket
  void answer?.port;
  if (answer !== null && typeof answer === 'object') {
    const where: string = answer.address;
    const family: string = answer.family;
    void [where, family, answer.port];
  }
  // @ts-expect-error attached, address() is the server's, not { port } alone
  const narrowed: { port: number } | null = attached.address();

  // Decided at run time: either.
  const maybe = new WhatsAppGateway({ validateApiKey, server: redisUrl ? httpServer : undefined });
  // @ts-expect-error may be a string (attached to a pipe)
  void maybe.address()?.port;
  void [port, narrowed];
}
`;

test('index.d.ts: address() when attached and session queries of a run-time cluster are typed as the runtime answers', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-types-'));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'whatsapp-ws-extension-gateway'), 'dir');
    fs.writeFileSync(path.join(dir, 'shapes.ts'), SOURCE);
    const tsc = require.resolve('typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
    execFileSync(process.execPath, [tsc, ...flags, 'shapes.ts'], { cwd: dir, stdio: 'pipe' });
  } catch (error) {
    assert.fail(`tsc failed:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
