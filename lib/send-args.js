'use strict';
// Checks the arguments of the four send methods (README "Methods") before they cross into
// Rust, so that a mistake is reported with the caller's own value.
const { GatewayError, maskApiKey } = require('./errors');
const { STRATEGIES } = require('./options');
const { waitForArg, idempotencyKeyArg, waitForDeviceArg, metadataArg } = require('./delivery');
const { warnUnknownSendFields } = require('./warnings');

const E164 = /^\+[1-9]\d{1,14}$/;
/** A person's chat, and a group's in both forms WhatsApp uses (README: "Chats and groups"). */
const PERSON_CHAT = /^\d{1,20}@c\.us$/;
const GROUP_CHAT = /^(\d{1,20}-\d{1,20}|[0-9A-Za-z]{1,64})@g\.us$/;

function invalid(field, value, message) {
  return new GatewayError('VALIDATION_ERROR', message, { field, value: shownValue(value) });
}

/**
 * `details.value` as errors carry it: the caller's value, except that binary data
 * is described rather than kept and long strings are cut, so that an error (often
 * logged) never holds a whole file.
 */
function shownValue(value) {
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    return `<${value.constructor.name} of ${value.byteLength} bytes>`;
  }
  if (typeof value === 'string' && value.length > 200) return `${value.slice(0, 100)}... (${value.length} characters)`;
  return value;
}

function phoneProblem(phone) {
  if (typeof phone !== 'string' || phone.length === 0) return 'Phone number is required and must be a string';
  if (!phone.startsWith('+')) return "Phone number must start with '+'";
  if (!/^\+\d+$/.test(phone)) return "Phone number must contain only digits after '+'";
  if (phone[1] === '0') return 'Phone number country code cannot start with 0';
  if (!E164.test(phone)) return "Phone number must have 2 to 15 digits after '+'";
  return null;
}

function chatIdProblem(chatId) {
  if (typeof chatId !== 'string' || chatId.length === 0) return 'chatId must be a non-empty string';
  if (PERSON_CHAT.test(chatId) || GROUP_CHAT.test(chatId)) return null;
  return "chatId must be '<digits>@c.us' (a person) or '<digits>-<digits>@g.us' / '<id>@g.us' (a group)";
}

/**
 * The recipient, `phoneNumber` or `chatId`, exactly one of them, checked: returns the
 * chatId, or undefined when the send names a phone number.
 */
function chatIdArg(data) {
  const hasPhone = data.phoneNumber != null;
  if (data.chatId != null) {
    if (hasPhone) {
      throw invalid('chatId', data.chatId, 'Give phoneNumber or chatId, not both');
    }
    const problem = chatIdProblem(data.chatId);
    if (problem) throw invalid('chatId', data.chatId, problem);
    return data.chatId;
  }
  const problem = phoneProblem(data.phoneNumber);
  if (problem) throw invalid('phoneNumber', data.phoneNumber, hasPhone ? problem : `${problem} (or give chatId)`);
  return undefined;
}

function optionalString(data, field) {
  const value = data[field];
  if (value == null) return undefined;
  if (typeof value !== 'string') throw invalid(field, value, `${field} must be a string`);
  return value;
}

/** Throws the VALIDATION_ERROR of an API key that is not a non-empty string. */
function checkApiKey(apiKey) {
  if (typeof apiKey !== 'string' || apiKey.length === 0) {
    throw invalid('apiKey', maskApiKey(apiKey), 'API key is required and must be a non-empty string');
  }
}

/** Returns what the native `send` needs for one call, or throws a VALIDATION_ERROR. */
function sendArgs(kind, apiKey, data) {
  checkApiKey(apiKey);
  if (data === null || typeof data !== 'object') {
    throw invalid('data', data, 'Send data must be an object');
  }
  // Before the checks: a misspelt `phoneNumber` or `chatId` is then named along with its error.
  warnUnknownSendFields(kind, data);
  const chatId = chatIdArg(data);

  let text;
  let media;
  let documentName;
  if (kind === 'message') {
    const message = data.message;
    if (typeof message !== 'string' || message.trim().length === 0) {
      throw invalid('message', message, 'Message must be a non-empty string');
    }
    text = message;
  } else {
    media = findMedia(kind, data);
    text = optionalString(data, 'caption') ?? '';
    if (kind === 'document') documentName = optionalString(data, 'documentName');
  }

  // One object literal, each option a branch when absent: this runs on every send.
  return {
    phoneNumber: chatId === undefined ? data.phoneNumber : undefined,
    chatId,
    text,
    media,
    documentName,
    strategy: strategyArg(data.deviceSelectionStrategy),
    timeout: callTimeout(data.timeout),
    // Delivery options (lib/delivery.js): a branch each when absent.
    delivery: data.waitFor == null && data.waitForDevice == null ? undefined : deliveryArg(data),
    idempotencyKey: data.idempotencyKey == null ? undefined : idempotencyKeyArg(data.idempotencyKey, invalid),
    metadata: data.metadata == null ? undefined : metadataArg(data.metadata, invalid),
    target: data.target == null ? undefined : targetArg(data.target),
  };
}

/**
 * The options request() shares with the send methods, checked: strategy, timeout,
 * idempotencyKey, metadata, target (each undefined when absent).
 */
function callOptions(options) {
  return {
    strategy: strategyArg(options.deviceSelectionStrategy),
    timeout: callTimeout(options.timeout),
    idempotencyKey: options.idempotencyKey == null ? undefined : idempotencyKeyArg(options.idempotencyKey, invalid),
    metadata: options.metadata == null ? undefined : metadataArg(options.metadata, invalid),
    target: options.target == null ? undefined : targetArg(options.target),
  };
}

function strategyArg(strategy) {
  if (strategy == null) return undefined;
  if (!STRATEGIES.includes(strategy)) {
    throw invalid('deviceSelectionStrategy', strategy, `deviceSelectionStrategy must be one of ${STRATEGIES.join(', ')}`);
  }
  return strategy;
}

/** A call's `target`: the sessionId of one of the key's sessions (getActiveSessions). */
function targetArg(target) {
  if (typeof target !== 'string' || target.length === 0 || target.length > 200) {
    throw invalid('target', target, 'target must be a sessionId (a non-empty string, as getActiveSessions() lists it)');
  }
  return target;
}

/** The native `delivery` field: `waitFor` and `waitForDevice`. */
function deliveryArg(data) {
  return {
    waitFor: data.waitFor == null ? undefined : waitForArg(data.waitFor, invalid),
    waitForDevice: data.waitForDevice == null ? undefined : waitForDeviceArg(data.waitForDevice, invalid),
  };
}

/** A call's own `timeout`: a finite number of milliseconds, at least 1 (README "new WhatsAppGateway(config)"). */
function callTimeout(timeout) {
  if (timeout == null) return undefined;
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 1) {
    throw invalid('timeout', timeout, 'timeout must be a positive, finite number of milliseconds (at least 1)');
  }
  return timeout;
}

/** The media source: `dataUrl`, then `<kind>DataUrl`, then `<kind>Url`. */
function findMedia(kind, data) {
  for (const field of ['dataUrl', `${kind}DataUrl`, `${kind}Url`]) {
    const value = data[field];
    if (value == null || value === '') continue;
    if (typeof value !== 'string') {
      const hint = ArrayBuffer.isView(value) ? ` (for bytes, pass \`data:<mime>;base64,\${buffer.toString('base64')}\`)` : '';
      throw invalid(field, value, `${field} must be a string${hint}`);
    }
    const problem = schemelessProblem(field, value.trim());
    if (problem) throw invalid(field, value, problem);
    return value;
  }
  const label = kind[0].toUpperCase() + kind.slice(1);
  throw invalid('dataUrl', undefined, `${label} needs one of dataUrl, ${kind}DataUrl or ${kind}Url`);
}

/**
 * A media source without a URL scheme cannot be loaded; say what it looks like and
 * how to pass it instead of "relative URL without a base".
 */
function schemelessProblem(field, source) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(source)) return null;
  // Before paths: base64 may start with '/' (JPEG's does), but it never has a '.'.
  if (source.length >= 32 && /^[A-Za-z0-9+/\r\n]+={0,2}$/.test(source)) {
    return `${field} looks like raw base64: prefix it with its MIME type, as in 'data:image/png;base64,' + data`;
  }
  if (/^(\/|\.{1,2}[\\/]|~\/|[a-z]:[\\/])/i.test(source) || /^[\w .-]+([\\/][\w .-]+)*\.[a-z0-9]{1,5}$/i.test(source)) {
    return (
      `${field} looks like a file path, not a URL: pass a file:// URL (e.g. url.pathToFileURL(path).href) ` +
      "and list the file's directory in the 'mediaFileRoots' option"
    );
  }
  return `${field} must be a data: URL or an http://, https:// or file:// URL`;
}

module.exports = { sendArgs, callOptions, invalid, checkApiKey };
