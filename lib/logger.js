'use strict';
// The `logger` option (README "Deploying"): the gateway's own lines for any object with
// debug, info, warn and error (pino, winston, console), called pino-style as
// `(fields, message)`. API keys are masked as in errors; a logger that throws is ignored.
const { maskApiKey } = require('./errors');

/** Errors that are a refusal of a peer, not a failure of the gateway. */
const REFUSALS = new Set(['AUTHENTICATION_FAILED', 'MAX_SESSIONS_EXCEEDED']);

class Log {
  #logger;

  constructor(logger) {
    this.#logger = logger;
  }

  write(level, fields, message) {
    try {
      this.#logger[level](fields, message);
    } catch {
      // Logging must never break a send or a session.
    }
  }

  /** Session connects and closes (debug): the events that say something about connections. */
  event(event) {
    const { type } = event;
    if (type !== 'session-connected' && type !== 'session-disconnected' && type !== 'heartbeat-timeout') return;
    const d = event.details ?? {};
    const fields = { event: type, sessionId: event.sessionId, apiKey: maskApiKey(event.apiKey) };
    if (type === 'session-connected') {
      this.write('debug', { ...fields, ip: d.ip, extensionVersion: d.extensionVersion, browser: d.browser }, 'session connected');
    } else if (type === 'session-disconnected') {
      this.write('debug', { ...fields, code: d.code, reason: d.reason }, 'session closed');
    } else {
      this.write('debug', { ...fields, lastHeartbeat: d.lastHeartbeat }, 'session silent: dropped');
    }
  }

  /**
   * A refused connection or a failed send (warn), or a failure of the gateway (error).
   * The core masks the API keys in its errors' details already.
   */
  error(error, { send = false } = {}) {
    const fields = { code: error.code };
    const d = error.details && typeof error.details === 'object' ? error.details : {};
    for (const name of ['requestId', 'sessionId', 'apiKey', 'ip', 'reason', 'cause', 'nodeId', 'callback']) {
      if (d[name] !== undefined && d[name] !== null) fields[name] = d[name];
    }
    if (send) return this.write('warn', fields, `send failed: ${error.message}`);
    if (REFUSALS.has(error.code)) return this.write('warn', fields, `connection refused: ${error.message}`);
    this.write('error', fields, error.message);
  }
}

module.exports = { Log };
