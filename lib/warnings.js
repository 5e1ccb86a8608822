'use strict';
// Process warnings (SPEC 5.1): the gateway prints nothing by itself, but a misspelt
// option or a failing validator with nobody listening would otherwise go unseen.
// Both go through process.emitWarning, which the host can route or silence.

const WARNING_TYPE = 'WhatsAppGatewayWarning';

/** Every option of SPEC 2.1 and 5, whether or not this build acts on it yet. */
const KNOWN_OPTIONS = [
  'port', 'host', 'path', 'server', 'validateApiKey', 'onMessageLog', 'onError',
  'heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'maxSessionsPerKey',
  'deviceSelectionStrategy', 'authTimeout', 'maxPayload', 'maxMediaBytes', 'allowedOrigins',
  'mediaFileRoots', 'mediaAllowPrivateHosts', 'mediaFetchTimeout', 'trustProxy', 'reusePort',
  'cluster', 'dialect', 'maxPendingAuth', 'maxPendingAuthPerIp', 'maxPreAuthPayload',
  'maxQueuedBytes', 'pacing', 'maxQueuedSends', 'waitForDevice', 'idempotencyTtl',
  'logger', 'maxMessageStatuses',
];

/** Option names already warned about: once per name per process. */
const warnedOptions = new Set();

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

/** The known option closest to `name`, if one is within edit distance 2. */
function closestOption(name) {
  let best = null;
  let bestDistance = 3;
  for (const option of KNOWN_OPTIONS) {
    const distance = editDistance(name.toLowerCase(), option.toLowerCase());
    if (distance < bestDistance) {
      best = option;
      bestDistance = distance;
    }
  }
  return best;
}

/** Unknown options are not errors (v1 code may pass extra keys) but are worth a word. */
function warnUnknownOptions(config) {
  for (const name of Object.keys(config)) {
    if (KNOWN_OPTIONS.includes(name) || warnedOptions.has(name)) continue;
    warnedOptions.add(name);
    const suggestion = closestOption(name);
    const hint = suggestion ? `; did you mean '${suggestion}'?` : '; it is ignored';
    process.emitWarning(`WhatsAppGateway config: unknown option '${name}'${hint}`, {
      type: WARNING_TYPE,
      code: 'WA_GATEWAY_UNKNOWN_OPTION',
    });
  }
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

module.exports = { warnUnknownOptions, warnUnhandled, closestOption, KNOWN_OPTIONS };
