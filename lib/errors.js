'use strict';

/** Every `code` a gateway error can carry (v1's codes plus the new ones). */
const ERROR_CODES = Object.freeze({
  AUTHENTICATION_FAILED: 'AUTHENTICATION_FAILED',
  NO_ACTIVE_DEVICE: 'NO_ACTIVE_DEVICE',
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  CONNECTION_LOST: 'CONNECTION_LOST',
  VALIDATION_ERROR: 'VALIDATION_ERROR',
  EXTENSION_ERROR: 'EXTENSION_ERROR',
  INVALID_API_KEY: 'INVALID_API_KEY',
  MAX_SESSIONS_EXCEEDED: 'MAX_SESSIONS_EXCEEDED',
  INVALID_PHONE_NUMBER: 'INVALID_PHONE_NUMBER',
  INVALID_DATA: 'INVALID_DATA',
  FETCH_ERROR: 'FETCH_ERROR',
  FILE_TOO_LARGE: 'FILE_TOO_LARGE',
  GATEWAY_SHUTDOWN: 'GATEWAY_SHUTDOWN',
  MEDIA_NOT_ALLOWED: 'MEDIA_NOT_ALLOWED',
  CALLBACK_ERROR: 'CALLBACK_ERROR',
  SERVER_ERROR: 'SERVER_ERROR',
  // Delivery, hostile peers, cluster mode (README), and the wire codes.
  QUEUE_FULL: 'QUEUE_FULL',
  BACKPRESSURE: 'BACKPRESSURE',
  CLUSTER_UNAVAILABLE: 'CLUSTER_UNAVAILABLE',
  INVALID_MESSAGE: 'INVALID_MESSAGE',
  UNKNOWN_MESSAGE_TYPE: 'UNKNOWN_MESSAGE_TYPE',
  NOT_AUTHENTICATED: 'NOT_AUTHENTICATED',
  // An idempotencyKey already used for another message.
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  // Durable mode: start() found the store open in another gateway.
  STORE_LOCKED: 'STORE_LOCKED',
  // request(): the key has active devices, but none handles the custom command.
  UNSUPPORTED_COMMAND: 'UNSUPPORTED_COMMAND',
  // start(): already running, or the port cannot be bound (errno names, as Node's servers).
  ALREADY_RUNNING: 'ALREADY_RUNNING',
  EADDRINUSE: 'EADDRINUSE',
  EADDRNOTAVAIL: 'EADDRNOTAVAIL',
  EACCES: 'EACCES',
});

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
