'use strict';
// Checks the constructor's config and fills in defaults (README "new WhatsAppGateway(config)";
// the addon owns them, src/options.rs). Every mistake is a TypeError that names the option.
const path = require('node:path');
const { deliveryOptions } = require('./delivery');
const { configError: fail } = require('./config-error');
const { DEFAULTS } = require('./native');

const STRATEGIES = ['round-robin', 'random', 'least-busy'];
const DIALECTS = ['compat', 'v1', 'doc'];

function optionalFunction(config, name) {
  const value = config[name];
  if (value == null) return undefined;
  if (typeof value !== 'function') throw fail(name, 'a function', typeof value);
  return value;
}

function positiveNumber(config, name, fallback) {
  const value = config[name];
  if (value == null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw fail(name, 'a positive number', value);
  }
  return value;
}

function port(value) {
  if (value == null) return DEFAULTS.port;
  // The guide passes `process.env.PORT || 3000`, a string when PORT is set.
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw fail('port', 'an integer from 0 to 65535', value);
  return n;
}

function oneOf(config, name, allowed, fallback) {
  const value = config[name];
  if (value == null) return fallback;
  if (!allowed.includes(value)) throw fail(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  return value;
}

function stringList(config, name) {
  const value = config[name];
  if (value == null) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw fail(name, 'an array of strings', value);
  }
  return value;
}

function server(value) {
  if (value == null) return undefined;
  if (typeof value === 'function' && typeof value.listen === 'function') {
    // An Express, Koa or Connect app is a request handler, not a server.
    throw fail(
      'server',
      'an http.Server or https.Server',
      value,
      ' (an Express-style app?): pass `http.createServer(app)`, or the server that `app.listen()` returns',
    );
  }
  if (typeof value !== 'object' || typeof value.on !== 'function') {
    throw fail('server', 'an http.Server or https.Server', value);
  }
  return value;
}

/** The options v1 read as `config.x || default` (README "new WhatsAppGateway(config)"). */
const V1_OR_DEFAULT = ['port', 'path', 'server', 'heartbeatInterval', 'requestTimeout', 'maxSessionsPerKey', 'deviceSelectionStrategy'];

/**
 * v1 code keeps starting: for the options v1 had, any value v1's `||` skipped (0,
 * NaN, '', null, undefined, false) means the default, as it did there. So
 * `requestTimeout: Number(process.env.UNSET)` is 30000, and `port: 0` is 3000 (a
 * free port is `port: '0'`, as in v1).
 */
function withV1Defaults(config) {
  let copy = null;
  for (const name of V1_OR_DEFAULT) {
    if (name in config && !config[name]) {
      copy ??= { ...config };
      delete copy[name];
    }
  }
  return copy ?? config;
}

/** Durations that must be positive (README "new WhatsAppGateway(config)"); durations where 0 means "off" are not here. */
const POSITIVE_DURATIONS = ['heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'authTimeout', 'mediaFetchTimeout'];

/**
 * Every positive duration, after defaults, is a finite number of at least 1 ms: below
 * that the core would round to a timer period of zero.
 */
function checkPositiveDurations(settings) {
  for (const name of POSITIVE_DURATIONS) {
    const value = settings[name];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 1) {
      throw fail(name, 'a positive, finite number of milliseconds (at least 1)', value);
    }
  }
}

function positiveInteger(config, name, fallback) {
  const value = config[name];
  if (value == null) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > 2 ** 32 - 1) {
    throw fail(name, 'a positive integer', value);
  }
  return value;
}

/** The limits that keep hostile, slow and broken peers in check (README "new WhatsAppGateway(config)"). */
function peerLimits(config) {
  return {
    maxPendingAuth: positiveInteger(config, 'maxPendingAuth', DEFAULTS.maxPendingAuth),
    maxPendingAuthPerIp: positiveInteger(config, 'maxPendingAuthPerIp', DEFAULTS.maxPendingAuthPerIp),
    maxPreAuthPayload: positiveInteger(config, 'maxPreAuthPayload', DEFAULTS.maxPreAuthPayload),
    maxQueuedBytes: positiveNumber(config, 'maxQueuedBytes', DEFAULTS.maxQueuedBytes),
  };
}

/**
 * 5.3 `cluster: { redis, nodeId?, keyPrefix?, leaseMs? }`, with 6.3's Sentinel, `tls` and
 * `secret`. Neither the URL nor a password is ever echoed in an error.
 */
function clusterOptions(cluster) {
  if (cluster == null) return undefined;
  if (typeof cluster !== 'object') throw fail('cluster', 'an object like { redis: "redis://host:6379" }', typeof cluster);
  const { redis, nodeId, keyPrefix, leaseMs, tls, secret } = cluster;
  let url = '';
  let sentinel;
  if (typeof redis === 'string') {
    if (!/^rediss?:\/\/./.test(redis)) throw fail('cluster.redis', 'a redis:// or rediss:// URL', '(not a Redis URL)');
    url = redis;
  } else if (redis !== null && typeof redis === 'object' && !Array.isArray(redis)) {
    sentinel = sentinelOptions(redis);
  } else {
    throw fail('cluster.redis', "a redis:// or rediss:// URL, or { sentinels: ['host:port'], name }", typeof redis);
  }
  if (nodeId != null && (typeof nodeId !== 'string' || nodeId === '' || nodeId.length > 200)) {
    throw fail('cluster.nodeId', 'a non-empty string', nodeId);
  }
  if (keyPrefix != null && typeof keyPrefix !== 'string') throw fail('cluster.keyPrefix', 'a string', keyPrefix);
  if (leaseMs != null && (typeof leaseMs !== 'number' || !Number.isFinite(leaseMs) || leaseMs < 300)) {
    throw fail('cluster.leaseMs', 'a finite number of milliseconds, at least 300', leaseMs);
  }
  if (secret != null && (typeof secret !== 'string' || secret === '')) throw fail('cluster.secret', 'a non-empty string', typeof secret);
  return {
    redis: url,
    nodeId: nodeId ?? undefined,
    keyPrefix: keyPrefix ?? DEFAULTS.cluster.keyPrefix,
    leaseMs: leaseMs ?? DEFAULTS.cluster.leaseMs,
    sentinel,
    tls: tlsOptions(tls),
    secret: secret ?? undefined,
  };
}

/** 6.3 `cluster.redis: { sentinels, name, username?, password?, sentinelUsername?, sentinelPassword?, db? }`. */
function sentinelOptions(redis) {
  const { sentinels, name, db } = redis;
  const hostPort = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/;
  if (!Array.isArray(sentinels) || sentinels.length === 0 || !sentinels.every((s) => typeof s === 'string' && hostPort.test(s))) {
    throw fail('cluster.redis.sentinels', "a non-empty array of 'host:port' strings", sentinels);
  }
  if (typeof name !== 'string' || name === '') throw fail('cluster.redis.name', "the master's name in Sentinel (a non-empty string)", name);
  const secrets = {};
  for (const field of ['username', 'password', 'sentinelUsername', 'sentinelPassword']) {
    const value = redis[field];
    if (value != null && typeof value !== 'string') throw fail(`cluster.redis.${field}`, 'a string', typeof value);
    secrets[field] = value ?? undefined;
  }
  if (db != null && (!Number.isInteger(db) || db < 0 || db > 2 ** 31 - 1)) throw fail('cluster.redis.db', 'a non-negative integer', db);
  return { sentinels, name, ...secrets, db: db ?? 0 };
}

/** PEM as a string, a Buffer (any Uint8Array), or an array of them: bytes for the core. */
function pem(value, option) {
  if (value == null) return undefined;
  const parts = Array.isArray(value) ? value : [value];
  if (parts.length === 0 || !parts.every((p) => typeof p === 'string' || p instanceof Uint8Array)) {
    throw fail(option, 'PEM text: a string or a Buffer (or an array of them)', Array.isArray(value) ? value : typeof value);
  }
  return Buffer.concat(parts.map((p) => Buffer.concat([Buffer.from(p), Buffer.from('\n')])));
}

/** 6.3 `cluster.tls: { ca?, cert?, key?, servername?, rejectUnauthorized? }`. */
function tlsOptions(tls) {
  if (tls == null) return undefined;
  if (typeof tls !== 'object' || Array.isArray(tls)) throw fail('cluster.tls', 'an object like { ca }', typeof tls);
  const { servername, rejectUnauthorized } = tls;
  if (servername != null && (typeof servername !== 'string' || servername === '')) throw fail('cluster.tls.servername', 'a non-empty string', servername);
  if (rejectUnauthorized != null && typeof rejectUnauthorized !== 'boolean') throw fail('cluster.tls.rejectUnauthorized', 'a boolean', rejectUnauthorized);
  const cert = pem(tls.cert, 'cluster.tls.cert');
  const key = pem(tls.key, 'cluster.tls.key');
  if ((cert === undefined) !== (key === undefined)) throw fail('cluster.tls', 'both cert and key (a client certificate), or neither', 'only one of them');
  return {
    ca: pem(tls.ca, 'cluster.tls.ca'),
    cert,
    key,
    servername: servername ?? undefined,
    rejectUnauthorized: rejectUnauthorized ?? true,
  };
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'];

/** 6.3 `logger`: any object with debug, info, warn and error (pino, winston, console). */
function loggerOption(logger) {
  if (logger == null) return undefined;
  const missing = LOG_LEVELS.filter((level) => typeof logger?.[level] !== 'function');
  if ((typeof logger !== 'object' && typeof logger !== 'function') || missing.length > 0) {
    throw fail('logger', `an object with ${LOG_LEVELS.join(', ')} methods (pino, winston, console)`, logger, missing.length < 4 ? ` (missing: ${missing.join(', ')})` : '');
  }
  return logger;
}

/**
 * Durable mode: `store: '<path>'` (an SQLite file the gateway owns) and
 * `storeSync: 'normal' | 'full'`. Not with `cluster` (Redis keeps its records).
 */
function storeOptions(config) {
  const { store, storeSync } = config;
  if (storeSync != null && storeSync !== 'normal' && storeSync !== 'full') {
    throw fail('storeSync', "'normal' or 'full'", storeSync);
  }
  if (store == null) return {};
  if (typeof store !== 'string' || store.trim() === '' || store.includes('\0')) {
    throw fail('store', 'the path of a file (a non-empty string)', store);
  }
  if (config.cluster != null) {
    throw fail('store', 'unset when cluster is set (in cluster mode Redis keeps the records)', store);
  }
  return { store: path.resolve(store), storeFullSync: storeSync === 'full' };
}

/** Returns the settings for the Rust core and the user's callbacks. */
function normalizeConfig(userConfig) {
  if (userConfig === null || typeof userConfig !== 'object') {
    throw new TypeError('WhatsAppGateway needs a config object with at least validateApiKey');
  }
  const config = withV1Defaults(userConfig);
  if (typeof config.validateApiKey !== 'function') {
    throw fail('validateApiKey', 'a function', typeof config.validateApiKey);
  }
  const callbacks = {
    validateApiKey: config.validateApiKey,
    onMessageLog: optionalFunction(config, 'onMessageLog'),
    onError: optionalFunction(config, 'onError'),
    logger: loggerOption(config.logger),
  };
  if (config.host != null && typeof config.host !== 'string') throw fail('host', 'a string', config.host);
  if (config.path != null && (typeof config.path !== 'string' || !config.path.startsWith('/'))) {
    throw fail('path', "a string starting with '/'", config.path);
  }
  const maxSessions = config.maxSessionsPerKey;
  if (maxSessions != null && (!Number.isInteger(maxSessions) || maxSessions < 1)) {
    throw fail('maxSessionsPerKey', 'a positive integer', maxSessions);
  }
  for (const flag of ['mediaAllowPrivateHosts', 'trustProxy', 'reusePort']) {
    if (config[flag] != null && typeof config[flag] !== 'boolean') throw fail(flag, 'a boolean', config[flag]);
  }
  if (config.reusePort && process.platform === 'win32') {
    throw fail('reusePort', 'false on this platform (it has no SO_REUSEPORT)', config.reusePort);
  }
  const heartbeatInterval = positiveNumber(config, 'heartbeatInterval', DEFAULTS.heartbeatInterval);
  /** @type {import('../native').NativeConfig} */
  const native = {
    port: port(config.port),
    host: config.host ?? undefined,
    path: config.path ?? DEFAULTS.path,
    heartbeatInterval,
    heartbeatTimeout: positiveNumber(config, 'heartbeatTimeout', DEFAULTS.heartbeatTimeoutIntervals * heartbeatInterval),
    requestTimeout: positiveNumber(config, 'requestTimeout', DEFAULTS.requestTimeout),
    maxSessionsPerKey: maxSessions ?? DEFAULTS.maxSessionsPerKey,
    deviceSelectionStrategy: oneOf(config, 'deviceSelectionStrategy', STRATEGIES, DEFAULTS.deviceSelectionStrategy),
    authTimeout: positiveNumber(config, 'authTimeout', DEFAULTS.authTimeout),
    maxPayload: positiveNumber(config, 'maxPayload', DEFAULTS.maxPayload),
    maxMediaBytes: positiveNumber(config, 'maxMediaBytes', DEFAULTS.maxMediaBytes),
    allowedOrigins: stringList(config, 'allowedOrigins'),
    mediaFileRoots: (stringList(config, 'mediaFileRoots') ?? []).map((root) => path.resolve(root)),
    mediaAllowPrivateHosts: config.mediaAllowPrivateHosts ?? DEFAULTS.mediaAllowPrivateHosts,
    mediaFetchTimeout: positiveNumber(config, 'mediaFetchTimeout', DEFAULTS.mediaFetchTimeout),
    dialect: oneOf(config, 'dialect', DIALECTS, DEFAULTS.dialect),
    // Always: listeners may be added at any time, and the debug log wants session events too.
    logEvents: true,
    trustProxy: config.trustProxy ?? DEFAULTS.trustProxy,
    // Delivery options (README "Delivery", lib/delivery.js).
    ...deliveryOptions(config),
    reusePort: config.reusePort ?? DEFAULTS.reusePort,
    ...peerLimits(config),
    cluster: clusterOptions(config.cluster),
    ...storeOptions(config),
  };
  checkPositiveDurations(native);
  // Whether the user chose requestTimeout (v1's unset values do not count).
  const requestTimeoutGiven = config.requestTimeout != null;
  return { native, callbacks, server: server(config.server), requestTimeoutGiven };
}

module.exports = { normalizeConfig, STRATEGIES };
