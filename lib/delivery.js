'use strict';
// SPEC 5.2 (delivery) on the JavaScript side: its options and per-call arguments,
// checked here so that index.js, options.js and send-args.js each call one function.

/** `waitFor` levels, lowest first. */
const ACKS = ['sent', 'server', 'delivered', 'read', 'played'];
const DAY = 24 * 60 * 60 * 1000;

function typeError(option, expected, value) {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return new TypeError(`WhatsAppGateway config: '${option}' must be ${expected}, got ${shown}`);
}

/** The 5.2 config options, with their defaults. */
function deliveryOptions(config) {
  const ttl = config.idempotencyTtl;
  if (ttl != null && (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 1)) {
    throw typeError('idempotencyTtl', 'a finite number of at least 1 (ms)', ttl);
  }
  return { idempotencyTtl: ttl ?? DAY };
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

module.exports = { ACKS, deliveryOptions, waitForArg, idempotencyKeyArg };
