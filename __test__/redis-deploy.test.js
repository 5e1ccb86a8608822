'use strict';
// Redis as deployed (README "Deploying"): ACL users, TLS with a private CA (made by
// openssl here) and client certificates, causes that retrying cannot fix failing start()
// (and reported once when found later), API keys never in clear in Redis, and nothing
// left behind by processes that are gone. Debian's redis-server on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { WhatsAppGateway } = require('..');
const { startGateway, FakeExtension, GOOD_KEY, eventually } = require('./helpers');
const { startRedis, redisSkipReason, sleep } = require('./redis');
const { freePort } = require('./free-port');
const { startNodeProcess } = require('./cluster-node');
const { makeCertificates } = require('./tls-certs');

const skip = redisSkipReason() ?? false;
const REDIS_TEST = { timeout: 60_000, skip };

/** Every key of the server with its whole content, as text: what an operator can read. */
async function dump(redis) {
  const out = [];
  for (const key of await redis.command('KEYS', '*')) {
    const type = await redis.command('TYPE', key);
    const value =
      type === 'string' ? await redis.command('GET', key)
        : type === 'hash' ? await redis.command('HGETALL', key)
          : type === 'set' ? await redis.command('SMEMBERS', key)
            : type === 'zset' ? await redis.command('ZRANGE', key, '0', '-1', 'WITHSCORES')
              : type === 'stream' ? await redis.command('XRANGE', key, '-', '+')
                : null;
    out.push(`${key} ${JSON.stringify(value)}`);
  }
  return out.join('\n');
}

/** A gateway that must fail to start: its error. */
async function startFails(cluster) {
  const gateway = new WhatsAppGateway({ port: '0', host: '127.0.0.1', validateApiKey: () => ({ valid: true }), onError: () => {}, cluster });
  const started = Date.now();
  const error = await gateway.start().then(
    () => null,
    (e) => e,
  );
  if (error === null) await gateway.stop();
  return { error, ms: Date.now() - started, gateway };
}

const ACL_USER = 'gateway';
const ACL_PASSWORD = 'acl-pass-0123456789';
/** The README's ACL recipe (its own keys, the commands it uses), with the test's password. */
const ACL_RULE = (() => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const line = /^redis-cli ACL SETUSER gateway (.*)$/m.exec(readme);
  assert.ok(line, 'the README has the ACL recipe');
  return line[1].replace(/'/g, '').replace('>a-long-password', `>${ACL_PASSWORD}`);
})();

/** `ACL SETUSER name ...rule`. */
function setUser(redis, name, rule) {
  return redis.command('ACL', 'SETUSER', name, ...rule.split(' '));
}

test('an ACL user with the README rule works; a wrong password, a missing permission and an unknown host make start() reject at once, naming the cause', REDIS_TEST, async (t) => {
  const redis = await startRedis(t);
  await setUser(redis, ACL_USER, ACL_RULE);
  await setUser(redis, 'narrow', `on >${ACL_PASSWORD} ~other:* +@all`);
  await setUser(redis, 'noscripts', `on >${ACL_PASSWORD} ~* +@all -@scripting`);
  const at = `127.0.0.1:${redis.port}`;

  const node = await startGateway({ cluster: { redis: `redis://${ACL_USER}:${ACL_PASSWORD}@${at}`, leaseMs: 1000 } });
  t.after(() => node.gateway.stop());
  assert.equal(node.gateway.getHealth().cluster.redis, 'connected');
  assert.deepEqual(node.errors, []);

  const cases = [
    [`redis://${ACL_USER}:wrong-password@${at}`, 'auth', /auth/],
    [`redis://narrow:${ACL_PASSWORD}@${at}`, 'permission', /permission/],
    [`redis://noscripts:${ACL_PASSWORD}@${at}`, 'permission', /permission/],
    ['redis://no-such-host.invalid:6379', 'dns', /dns|does not exist/],
  ];
  for (const [url, cause, message] of cases) {
    const { error, ms } = await startFails({ redis: url, leaseMs: 1000 });
    assert.ok(error, `${cause}: start() should reject`);
    assert.equal(error.code, 'CLUSTER_UNAVAILABLE', `${cause}: ${error.message}`);
    assert.equal(error.details?.cause, cause, error.message);
    assert.match(error.message, message);
    assert.ok(ms < 5000, `${cause}: rejected after ${ms} ms, not at once`);
    assert.doesNotMatch(error.message, new RegExp(ACL_PASSWORD), 'no password in the message');
  }
});

test('a cause found later (the password changed while running) goes to onError once, with details.cause', REDIS_TEST, async (t) => {
  const redis = await startRedis(t);
  await setUser(redis, ACL_USER, ACL_RULE);
  const node = await startGateway({ cluster: { redis: `redis://${ACL_USER}:${ACL_PASSWORD}@127.0.0.1:${redis.port}`, leaseMs: 600 } });
  t.after(() => node.gateway.stop());
  await redis.command('ACL', 'SETUSER', ACL_USER, 'resetpass', '>a-new-password-000');
  await redis.command('CLIENT', 'KILL', 'USER', ACL_USER);
  await eventually(() => node.errors.some((e) => e.details?.cause === 'auth'), 10_000, 'an auth error on onError');
  await eventually(() => node.gateway.getHealth().cluster.redis === 'reconnecting', 5000, 'health to say reconnecting');
  assert.equal(node.gateway.getHealth().ready, false);
  // Several lease rounds later: still one report for the cause.
  await sleep(2000);
  const auth = node.errors.filter((e) => e.details?.cause === 'auth');
  assert.equal(auth.length, 1, JSON.stringify(node.errors.map((e) => e.message)));
  assert.equal(auth[0].code, 'CLUSTER_UNAVAILABLE');
});

test('TLS: rediss:// with a private CA, the name checked (servername), client certificates; an unknown CA is the cause tls', REDIS_TEST, async (t) => {
  const certs = makeCertificates(t, ['redis.internal', '127.0.0.1']);
  let tlsPort;
  let mtlsPort;
  const redis = await startRedis(t, {
    args: async () => {
      tlsPort = await freePort();
      return ['--tls-port', String(tlsPort), '--tls-cert-file', certs.paths.cert, '--tls-key-file', certs.paths.key, '--tls-ca-cert-file', certs.paths.ca, '--tls-auth-clients', 'no'];
    },
  });
  const mutual = await startRedis(t, {
    args: async () => {
      mtlsPort = await freePort();
      return ['--tls-port', String(mtlsPort), '--tls-cert-file', certs.paths.cert, '--tls-key-file', certs.paths.key, '--tls-ca-cert-file', certs.paths.ca, '--tls-auth-clients', 'yes'];
    },
  });

  // The CA as a string; the address an IP in the certificate.
  const a = await startGateway({ cluster: { redis: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: certs.ca }, leaseMs: 1000 } });
  t.after(() => a.gateway.stop());
  assert.equal(a.gateway.getHealth().cluster.redis, 'connected');
  assert.ok((await redis.command('KEYS', 'wa-gw:node:*')).length === 1, 'the lease was written over TLS');

  // The CA as a Buffer, the name checked is not the host's.
  const b = await startGateway({ cluster: { redis: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: Buffer.from(certs.ca), servername: 'redis.internal' }, leaseMs: 1000 } });
  t.after(() => b.gateway.stop());
  assert.equal(b.gateway.getHealth().cluster.nodes, 2);

  // Client certificates, for tls-auth-clients yes.
  const c = await startGateway({ cluster: { redis: `rediss://127.0.0.1:${mtlsPort}`, tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }, leaseMs: 1000 } });
  t.after(() => c.gateway.stop());
  assert.equal(c.gateway.getHealth().cluster.redis, 'connected');
  assert.equal((await mutual.command('KEYS', 'wa-gw:node:*')).length, 1);

  for (const [what, cluster] of [
    ['no private CA', { redis: `rediss://127.0.0.1:${tlsPort}` }],
    ['a name the certificate does not carry', { redis: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: certs.ca, servername: 'elsewhere.internal' } }],
    ['no client certificate where one is required', { redis: `rediss://127.0.0.1:${mtlsPort}`, tls: { ca: certs.ca } }],
  ]) {
    const { error, ms } = await startFails({ ...cluster, leaseMs: 1000 });
    assert.ok(error, `${what}: start() should reject`);
    assert.equal(error.code, 'CLUSTER_UNAVAILABLE', `${what}: ${error.message}`);
    assert.equal(error.details?.cause, 'tls', `${what}: ${error.message}`);
    assert.match(error.message, /tls/i);
    assert.ok(ms < 5000, `${what}: ${ms} ms`);
  }
  // Testing only: any certificate.
  const d = await startGateway({ cluster: { redis: `rediss://127.0.0.1:${tlsPort}`, tls: { rejectUnauthorized: false }, leaseMs: 1000 } });
  t.after(() => d.gateway.stop());
  assert.equal(d.gateway.getHealth().cluster.redis, 'connected');
});

test('API keys never appear in Redis: digests (HMAC-SHA-256 with cluster.secret) in key names and values; getAllSessions gives apiKeyDigest, and a remote apiKey only once known here', REDIS_TEST, async (t) => {
  const redis = await startRedis(t);
  const secret = 'cluster-secret-for-the-test';
  const cluster = { redis: redis.url, leaseMs: 1000, secret };
  const holder = await startNodeProcess(t, { cluster });
  const caller = await startGateway({ cluster });
  t.after(() => caller.gateway.stop());
  const extension = new FakeExtension(`ws://127.0.0.1:${holder.port}/wa-ext-ws`, { apiKey: GOOD_KEY });
  t.after(() => extension.ws?.terminate());
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  const digest = crypto.createHmac('sha256', secret).update(GOOD_KEY).digest('hex');

  const remote = await eventually(async () => (await caller.gateway.getAllSessions()).find((s) => s.sessionId === extension.sessionId && s.deviceActive), 10_000, 'the remote session');
  assert.equal(remote.apiKey, null, 'this process does not know the key yet');
  assert.equal(remote.apiKeyDigest, digest);
  const local = (await holder.request('all-sessions')).find((s) => s.sessionId === extension.sessionId);
  assert.equal(local.apiKey, GOOD_KEY);
  assert.equal(local.apiKeyDigest, digest);

  // A send through Redis, with an idempotency key: every record of the cluster is written.
  const result = await caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550001111', message: 'hi', idempotencyKey: 'order-1' });
  assert.equal(result.success, true);
  const known = (await caller.gateway.getAllSessions()).find((s) => s.sessionId === extension.sessionId);
  assert.equal(known.apiKey, GOOD_KEY, 'a call here named the key');

  const everything = await dump(redis);
  assert.match(everything, new RegExp(digest), 'the digest stands for the key');
  assert.doesNotMatch(everything, new RegExp(GOOD_KEY), 'the API key itself is nowhere');
  assert.doesNotMatch(everything, new RegExp(GOOD_KEY.slice(0, 8)), 'not even its first characters');
});

test('no leftovers: a killed process\'s inbox, listings and count are gone within 3 x leaseMs; a key whose last session left is deleted; idle listings live as long as their process; with no survivor every key expires', REDIS_TEST, async (t) => {
  const redis = await startRedis(t);
  const leaseMs = 1000;
  const cluster = { redis: redis.url, leaseMs };
  const doomed = await startNodeProcess(t, { cluster });
  const survivor = await startNodeProcess(t, { cluster });
  const connect = async (node, apiKey) => {
    const extension = new FakeExtension(`ws://127.0.0.1:${node.port}/wa-ext-ws`, { apiKey });
    await extension.open();
    await extension.authenticate();
    extension.sendStatus(true);
    return extension;
  };
  const extension = await connect(doomed, GOOD_KEY);
  const leaving = await connect(survivor, 'leaving-key-0123456789');
  const staying = await connect(survivor, 'staying-key-0123456789');
  // Each process lists its sessions in one hash, a field per API key (its digest).
  const listed = async () => {
    const fields = [];
    for (const key of await redis.command('KEYS', 'wa-gw:listings:*')) {
      for (const field of await redis.command('HKEYS', key)) fields.push(`${key.slice('wa-gw:listings:'.length)}/${field}`);
    }
    return fields.sort();
  };
  const digest = (apiKey) => crypto.createHash('sha256').update(apiKey).digest('hex');
  await eventually(async () => (await listed()).length === 3, 10_000, 'three keys listed');
  const mine = (key) => key.includes(doomed.nodeId);
  assert.ok((await redis.command('KEYS', '*')).some(mine), 'the process has keys of its own while it lives');

  // The last session of a key leaves: its entry goes.
  await leaving.close();
  await eventually(async () => !(await listed()).includes(`${survivor.nodeId}/${digest('leaving-key-0123456789')}`), 5000, 'the empty key deleted');
  assert.deepEqual(await listed(), [`${doomed.nodeId}/${digest(GOOD_KEY)}`, `${survivor.nodeId}/${digest('staying-key-0123456789')}`].sort());

  await doomed.kill();
  const killedAt = Date.now();
  await eventually(
    async () => {
      const keys = await redis.command('KEYS', '*');
      const counts = await redis.command('HKEYS', 'wa-gw:counts');
      const left = await listed();
      return !keys.some(mine) && left.every((l) => !mine(l)) && !counts.includes(doomed.nodeId) ? keys : null;
    },
    // Its lease runs out within leaseMs of the kill; then 3 x leaseMs at most.
    4 * leaseMs + 2000,
    "the killed process's keys to be gone",
  );
  assert.ok(Date.now() - killedAt <= 4 * leaseMs + 2000);

  // Listings are not rewritten while nothing changes, yet an idle session stays listed
  // for as long as its process lives (past 3 x leaseMs of idleness).
  await sleep(4 * leaseMs);
  assert.deepEqual(await listed(), [`${survivor.nodeId}/${digest('staying-key-0123456789')}`]);
  const ttl = await redis.command('PTTL', `wa-gw:listings:${survivor.nodeId}`);
  assert.ok(ttl > 0 && ttl <= 3 * leaseMs, `the listings expire with the lease (PTTL ${ttl})`);

  // No survivor: what is left expires by itself.
  await survivor.kill();
  extension.ws.terminate();
  staying.ws.terminate();
  await eventually(async () => (await redis.command('KEYS', 'wa-gw:*')).length === 0 || null, 4 * leaseMs + 3000, 'every key to expire (left: see last)');
});

test('waitForDevice is cluster-wide: a send waiting on one process is served by a device that connects to another', REDIS_TEST, async (t) => {
  const redis = await startRedis(t);
  const cluster = { redis: redis.url, leaseMs: 1000 };
  const holder = await startNodeProcess(t, { cluster });
  const caller = await startGateway({ cluster, waitForDevice: 8000 });
  t.after(() => caller.gateway.stop());
  const waiting = caller.gateway.sendMessage(GOOD_KEY, { phoneNumber: '+15550001111', message: 'waits for a device' });
  const early = await Promise.race([waiting.then(() => 'settled', () => 'settled'), sleep(300).then(() => 'waiting')]);
  assert.equal(early, 'waiting');
  const extension = new FakeExtension(`ws://127.0.0.1:${holder.port}/wa-ext-ws`, { apiKey: GOOD_KEY });
  t.after(() => extension.ws?.terminate());
  await extension.open();
  await extension.authenticate();
  extension.sendStatus(true);
  const result = await waiting;
  assert.equal(result.success, true);
  assert.equal(result.deviceInfo.sessionId, extension.sessionId);
  assert.equal(extension.commands.length, 1);
  assert.equal(extension.commands[0].requestId, result.requestId, 'the request id it waited with');
});
