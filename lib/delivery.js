'use strict';
// Delivery (README "Delivery") on the JavaScript side: its options and per-call arguments,
// checked here so that index.js, options.js and send-args.js each call one function.

/** `waitFor` levels, lowest first. */
const ACKS = ['sent', 'server', 'delivered', 'read', 'played'];

const { configError: typeError } = require('./config-error');
const { DEFAULTS } = require('./native');

function duration(value, option, { zeroAllowed }) {
  const min = zeroAllowed ? 0 : 1;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw typeError(option, `a finite number of at least ${min} (ms)`, value);
  }
  return value;
}

function pacing(value) {
  if (value == null) return undefined;
  if (typeof value !== 'object') throw typeError('pacing', 'an object { minIntervalMs, jitterMs?, maxPerMinute? }', value);
  const minIntervalMs = duration(value.minIntervalMs ?? 0, 'pacing.minIntervalMs', { zeroAllowed: true });
  const jitterMs = duration(value.jitterMs ?? DEFAULTS.pacing.jitterMs, 'pacing.jitterMs', { zeroAllowed: true });
  const max = value.maxPerMinute ?? Infinity;
  if (max !== Infinity && (!Number.isInteger(max) || max < 1 || max > 0xffffffff)) {
    throw typeError('pacing.maxPerMinute', 'a positive integer or Infinity', max);
  }
  return { minIntervalMs, jitterMs, maxPerMinute: max === Infinity ? undefined : max };
}

/** The 5.2 config options, with their defaults. */
function deliveryOptions(config) {
  const maxQueued = config.maxQueuedSends;
  if (maxQueued != null && (!Number.isInteger(maxQueued) || maxQueued < 1 || maxQueued > 0xffffffff)) {
    throw typeError('maxQueuedSends', 'a positive integer', maxQueued);
  }
  return {
    idempotencyTtl: config.idempotencyTtl == null ? DEFAULTS.idempotencyTtl : duration(config.idempotencyTtl, 'idempotencyTtl', { zeroAllowed: false }),
    pacing: pacing(config.pacing),
    maxQueuedSends: maxQueued ?? DEFAULTS.maxQueuedSends,
    maxMessageStatuses: messageStatuses(config.maxMessageStatuses),
    waitForDevice: config.waitForDevice == null ? DEFAULTS.waitForDevice : duration(config.waitForDevice, 'waitForDevice', { zeroAllowed: true }),
  };
}

/** `maxMessageStatuses`: records of sends kept at most (absent: the core's default). */
function messageStatuses(value) {
  if (value == null) return undefined;
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) {
    throw typeError('maxMessageStatuses', 'a positive integer', value);
  }
  return value;
}

/** A call's `waitForDevice` (ms; 0 turns the config's off). */
function waitForDeviceArg(value, invalid) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw invalid('waitForDevice', value, 'waitForDevice must be a finite number of milliseconds, at least 0');
  }
  return value;
}

/** A call's `waitFor`, checked; `'sent'` is the default and needs nothing. */
function waitForArg(waitFor, invalid) {
  if (!ACKS.includes(waitFor)) {
    throw invalid('waitFor', waitFor, `waitFor must be one of ${ACKS.map((a) => `'${a}'`).join(', ')}`);
  }
  return waitFor === 'sent' ? undefined : waitFor;
}

/** A call's `idempotencyKey`, checked. */
function idempotencyKeyArg(key, invalid) {
  if (typeof key !== 'string' || key.length < 1 || key.length > 200) {
    throw invalid('idempotencyKey', key, 'idempotencyKey must be a string of 1 to 200 characters');
  }
  return key;
}

/** Largest `metadata`, in bytes of JSON. */
const MAX_METADATA_BYTES = 4096;

/**
 * A call's `metadata`: any JSON value of at most 4096 bytes as JSON. Returns its JSON
 * text (what the core keeps) and the value as JSON gives it back (what events carry).
 */
function metadataArg(metadata, invalid) {
  let text;
  try {
    text = JSON.stringify(metadata);
  } catch (error) {
    throw invalid('metadata', typeof metadata, `metadata must be a JSON value: ${error.message}`);
  }
  if (text === undefined) {
    throw invalid('metadata', typeof metadata, `metadata must be a JSON value, got a ${typeof metadata}`);
  }
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_METADATA_BYTES) {
    throw invalid('metadata', `<${bytes} bytes as JSON>`, `metadata must be at most ${MAX_METADATA_BYTES} bytes as JSON, got ${bytes}`);
  }
  return { text, value: JSON.parse(text) };
}

module.exports = { deliveryOptions, waitForArg, idempotencyKeyArg, waitForDeviceArg, metadataArg };
