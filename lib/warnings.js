'use strict';
// Process warnings (README "Errors"): the gateway prints nothing by itself, but a misspelt
// option or a failing validator with nobody listening would otherwise go unseen.
// Both go through process.emitWarning, which the host can route or silence.

const { CONFIG_OPTIONS, NESTED_OPTIONS, SEND_FIELDS } = require('./known-options');

const WARNING_TYPE = 'WhatsAppGatewayWarning';

/** Names already warned about (with where they were found): once each per process. */
const warnedOptions = new Set();
/**
 * Send data may come straight from an HTTP request (`req.body`), whose keys a client
 * chooses: past this many names, unknown send fields are no longer remembered nor
 * reported (the config's always are).
 */
const MAX_WARNED_SEND_FIELDS = 200;
let warnedSendFields = 0;
/** Longest part of an unknown name a warning shows. */
const MAX_SHOWN_NAME = 60;

const SEND_KNOWN = Object.fromEntries(Object.entries(SEND_FIELDS).map(([kind, fields]) => [kind, new Set(fields)]));
const SEND_METHODS = { message: 'sendMessage', image: 'sendImage', video: 'sendVideo', document: 'sendDocument' };

function editDistance(a, b) {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

/** The name in `known` closest to `name`, if one is within edit distance 2. */
function closestOption(name, known = CONFIG_OPTIONS) {
  let best = null;
  let bestDistance = 3;
  for (const option of known) {
    // Farther apart in length than the distance allows: no need to compare.
    if (Math.abs(option.length - name.length) >= bestDistance) continue;
    const distance = editDistance(name.toLowerCase(), option.toLowerCase());
    if (distance < bestDistance) {
      best = option;
      bestDistance = distance;
    }
  }
  return best;
}

/** A name as a warning shows it: cut, and without control characters (it may come from a client). */
function shownName(name) {
  const cut = name.length > MAX_SHOWN_NAME ? `${name.slice(0, MAX_SHOWN_NAME)}...` : name;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** Warns of `name`, which `known` lacks, the first time it is seen there. */
function warnUnknown(where, prefix, name, known, fromSend = false) {
  const id = `${where}\0${prefix}${name}`;
  if (warnedOptions.has(id)) return;
  if (fromSend && warnedSendFields++ >= MAX_WARNED_SEND_FIELDS) return;
  warnedOptions.add(id);
  const suggestion = name.length <= MAX_SHOWN_NAME ? closestOption(name, known) : null;
  const hint = suggestion ? `; did you mean '${prefix}${suggestion}'?` : '; it is ignored';
  process.emitWarning(`${where}: unknown option '${prefix}${shownName(name)}'${hint}`, {
    type: WARNING_TYPE,
    code: 'WA_GATEWAY_UNKNOWN_OPTION',
  });
}

function isOptionObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Unknown options are not errors (v1 code may pass extra keys) but are worth a word,
 * at the top level and inside the nested option objects (`pacing`, `cluster`, ...).
 */
function warnUnknownOptions(config) {
  const where = 'WhatsAppGateway config';
  for (const name of Object.keys(config)) {
    if (!CONFIG_OPTIONS.includes(name)) warnUnknown(where, '', name, CONFIG_OPTIONS);
  }
  for (const [path, known] of Object.entries(NESTED_OPTIONS)) {
    const value = path.split('.').reduce((object, key) => (isOptionObject(object) ? object[key] : undefined), config);
    if (!isOptionObject(value)) continue;
    for (const name of Object.keys(value)) {
      if (!known.includes(name)) warnUnknown(where, `${path}.`, name, known);
    }
  }
}

/** The same for a send call's data (`kind`: 'message', 'image', 'video', 'document'). */
function warnUnknownSendFields(kind, data) {
  const known = SEND_KNOWN[kind];
  for (const name in data) {
    if (!known.has(name)) warnUnknown(SEND_METHODS[kind], '', name, SEND_FIELDS[kind], true);
  }
}

/** Codes of the core's warnings already emitted: once each per process. */
const warnedCodes = new Set();

/**
 * A warning the core raised about how the gateway is used (src/deliveries.rs), e.g.
 * PACED_SEND_TIMEOUT: once per code per process.
 */
function warnOnce(code, message) {
  if (warnedCodes.has(code)) return;
  warnedCodes.add(code);
  process.emitWarning(`WhatsAppGateway: ${message}`, { type: WARNING_TYPE, code: `WA_GATEWAY_${code}` });
}

/** Codes worth a warning when the host has no onError and no 'gateway-error' listener. */
const UNHANDLED_WORTH_WARNING = new Set(['CALLBACK_ERROR', 'SERVER_ERROR']);
const WARNING_INTERVAL_MS = 60_000;
/** code -> when it was last warned about (ms): at most once a minute per code. */
const lastWarned = new Map();

/**
 * A failure nobody handles: a validator that throws, rejects or times out, a
 * callback or listener that throws, a panic in the core. Messages come from the
 * gateway, whose errors show API keys masked.
 */
function warnUnhandled(error, now = Date.now()) {
  if (!UNHANDLED_WORTH_WARNING.has(error?.code)) return;
  const last = lastWarned.get(error.code);
  if (last !== undefined && now - last < WARNING_INTERVAL_MS) return;
  lastWarned.set(error.code, now);
  process.emitWarning(
    `${error.code}: ${error.message} (pass onError, or listen to 'gateway-error', to handle these; ` +
      'this warning repeats at most once a minute)',
    { type: WARNING_TYPE, code: `WA_GATEWAY_${error.code}` },
  );
}

module.exports = { warnUnknownOptions, warnUnknownSendFields, warnUnhandled, warnOnce };
