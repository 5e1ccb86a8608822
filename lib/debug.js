'use strict';
// The debug log (README "Seeing inside"): NODE_DEBUG=wa-gateway switches it on; lines go through
// util.debuglog, so they read `WA-GATEWAY <pid>: ...` on stderr. API keys show masked.
const util = require('node:util');
const { maskApiKey } = require('./errors');

const write = util.debuglog('wa-gateway');

function enabled() {
  return write.enabled;
}

function debug(format, ...args) {
  write(format, ...args);
}

/** One line for each event that says something about connections. */
function debugEvent(event) {
  if (!write.enabled) return;
  const who = `session ${event.sessionId} (key ${maskApiKey(event.apiKey)})`;
  const d = event.details ?? {};
  switch (event.type) {
    case 'session-connected':
      return debug('%s authenticated from %s (extension %s, %s)', who, d.ip, d.extensionVersion, d.browser);
    case 'session-status':
      return debug('%s status: %s (ready %s)', who, d.status, d.ready);
    case 'session-disconnected':
      return debug('%s closed: code %d, %s', who, d.code, d.reason);
    case 'heartbeat-timeout':
      return debug('%s silent since %s: dropped', who, new Date(d.lastHeartbeat).toISOString());
    case 'send-failed':
      return debug('%s send %s failed: %s', who, event.requestId, d.code);
    default:
  }
}

function debugError(error) {
  if (!write.enabled) return;
  const d = error.details ?? {};
  if (error.code === 'AUTHENTICATION_FAILED' || error.code === 'MAX_SESSIONS_EXCEEDED') {
    return debug('auth refused from %s (key %s): %s, reason %s', d.ip ?? 'unknown address', d.apiKey, error.message, d.reason ?? 'none given');
  }
  return debug('error %s: %s', error.code, error.message);
}

module.exports = { debug, debugEvent, debugError, enabled };
