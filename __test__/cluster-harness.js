'use strict';
// What the cluster tests share (cluster.test.js, cluster-guarantees.test.js): a Redis per
// test with gateways in this process or in child processes, simulated extensions, and
// waits bounded for a busy machine.
const { startGateway, FakeExtension, eventually } = require('./helpers');
const { startRedis, redisSkipReason, sleep } = require('./redis');
const { startNodeProcess } = require('./cluster-node');

const skip = redisSkipReason() ?? false;
const LEASE_MS = 1500;
/** How stale a cluster-wide view may be ("a few seconds"), with room for a busy machine. */
const PROPAGATION_MS = 10_000;
const PHONE = '+15550001111';
/** Every test here needs redis-server (skipped without it outside CI; see redis.js). */
const CLUSTER_TEST = { timeout: 90_000, skip };


/** How a promise settled, bounded: { ok, value } / { ok: false, error }, or throws after `ms`. */
async function settle(promise, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise.then((value) => ({ ok: true, value }), (error) => ({ ok: false, error })), guard]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Per test: a Redis, and whatever the test starts, undone in reverse order afterwards
 * (gateways stop before their Redis goes), each undo bounded.
 */
async function setUp(t) {
  const cleanups = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) {
      await settle(Promise.resolve().then(cleanup), 10_000, 'a cleanup').catch(() => {});
    }
  });
  const redis = await startRedis();
  cleanups.push(() => redis.dispose());

  const clusterOption = ({ nodeId, keyPrefix, leaseMs = LEASE_MS, url = redis.url }) => {
    const cluster = { redis: url, leaseMs };
    if (nodeId !== undefined) cluster.nodeId = nodeId;
    if (keyPrefix !== undefined) cluster.keyPrefix = keyPrefix;
    return cluster;
  };

  return {
    redis,
    cleanups,
    clusterOption,
    /** A gateway in this process, started, with its events and errors recorded. */
    async node({ nodeId, keyPrefix, leaseMs, url, ...options } = {}) {
      const node = await startGateway({ cluster: clusterOption({ nodeId, keyPrefix, leaseMs, url }), ...options });
      cleanups.push(() => node.gateway.stop());
      node.nodeId = nodeId;
      return node;
    },
    /** A gateway in a child process (see cluster-node.js). */
    async nodeProcess({ nodeId, keyPrefix, leaseMs, url, ...options } = {}) {
      const node = await startNodeProcess(null, { cluster: clusterOption({ nodeId, keyPrefix, leaseMs, url }), ...options });
      cleanups.push(() => node.kill());
      node.url = `ws://127.0.0.1:${node.port}/wa-ext-ws`;
      return node;
    },
    /** An extension on `node`, authenticated and ready (not yet waited for anywhere). */
    async extension(node, options = {}) {
      const extension = new FakeExtension(node.url, options);
      cleanups.push(() => extension.ws && extension.ws.terminate());
      await extension.open();
      await extension.authenticate();
      extension.sendStatus(true);
      return extension;
    },
  };
}

/** The cluster-wide active sessions of `apiKey` as `node` sees them (in-process or child). */
function sessionsOn(node, apiKey) {
  return node.gateway ? node.gateway.getActiveSessions(apiKey) : node.request('sessions', { apiKey });
}

/** Waits until every node in `nodes` lists `extension`'s session as active. */
async function visibleOn(nodes, extension, apiKey = extension.apiKey) {
  for (const node of nodes) {
    await eventually(
      async () => (await sessionsOn(node, apiKey)).some((s) => s.sessionId === extension.sessionId && s.deviceActive),
      PROPAGATION_MS,
      `session ${extension.sessionId} to be active as seen from ${node.nodeId}`,
    );
  }
}

module.exports = { LEASE_MS, PROPAGATION_MS, PHONE, CLUSTER_TEST, sleep, eventually, settle, setUp, sessionsOn, visibleOn };
