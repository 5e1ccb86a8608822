'use strict';
const { addon } = require('./native');

/**
 * Every `code` a gateway error can carry (v1's codes plus the new ones), as the addon
 * lists them (crates/gateway-core/src/error.rs): `{ CODE: 'CODE' }`.
 * @type {Readonly<Record<string, string>>}
 */
const ERROR_CODES = Object.freeze(Object.fromEntries(addon.errorCodes().map((code) => [code, code])));

/** Frame types the gateway sends to extensions. */
const SERVER_MESSAGE_TYPES = Object.freeze({
  SEND_MESSAGE: 'send-message',
  SEND_IMAGE: 'send-image',
  SEND_VIDEO: 'send-video',
  SEND_DOCUMENT: 'send-document',
  PING: 'ping',
  AUTH_SUCCESS: 'auth-success',
  AUTHENTICATED: 'authenticated',
  ERROR: 'error',
  // Delivery (README): the answer to an incoming-message.
  INCOMING_ACK: 'incoming-ack',
});

/** Frame types extensions send to the gateway. */
const EXTENSION_MESSAGE_TYPES = Object.freeze({
  AUTH: 'auth',
  AUTHENTICATE: 'authenticate',
  STATUS: 'status',
  MESSAGE_RESULT: 'message-result',
  HEARTBEAT: 'heartbeat',
  // Delivery (README): acks and incoming messages.
  MESSAGE_ACK: 'message-ack',
  INCOMING_MESSAGE: 'incoming-message',
  // The answer to a custom command (README: "Beyond the four commands").
  COMMAND_RESULT: 'command-result',
});

class GatewayError extends Error {
  constructor(code, message, details = null) {
    super(message);
    this.name = 'GatewayError';
    this.code = code;
    this.details = details;
  }
}

/** Rebuilds an error the Rust core delivered as `{ code, message, details }`. */
function fromNative({ code, message, details }) {
  return new GatewayError(code, message, details ?? null);
}

/**
 * API keys are secrets: errors and the debug log show the first min(8, half its
 * length) characters, so that a short key keeps most of itself hidden (a
 * 9-character key shows 4). The core (crates/gateway-core/src/error.rs) masks the same way.
 */
function maskApiKey(apiKey) {
  if (typeof apiKey !== 'string') return '***';
  const chars = [...apiKey];
  const shown = Math.min(8, Math.floor(chars.length / 2));
  return shown > 0 ? `${chars.slice(0, shown).join('')}***` : '***';
}

module.exports = {
  ERROR_CODES,
  SERVER_MESSAGE_TYPES,
  EXTENSION_MESSAGE_TYPES,
  GatewayError,
  fromNative,
  maskApiKey,
};
