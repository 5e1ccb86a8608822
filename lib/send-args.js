'use strict';
// Checks the arguments of the four send methods (README "Methods") before they cross into
// Rust, so that a mistake is reported with the caller's own value.
const { GatewayError, maskApiKey } = require('./errors');
const { STRATEGIES } = require('./options');
const { waitForArg, idempotencyKeyArg, waitForDeviceArg, metadataArg } = require('./delivery');
const { warnUnknownSendFields } = require('./warnings');

const E164 = /^\+[1-9]\d{1,14}$/;

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

function optionalString(data, field) {
  const value = data[field];
  if (value == null) return undefined;
  if (typeof value !== 'string') throw invalid(field, value, `${field} must be a string`);
  return value;
}

/** Returns what the native `send` needs for one call, or throws a VALIDATION_ERROR. */
function sendArgs(kind, apiKey, data) {
  if (typeof apiKey !== 'string' || apiKey.length === 0) {
    throw invalid('apiKey', maskApiKey(apiKey), 'API key is required and must be a non-empty string');
  }
  if (data === null || typeof data !== 'object') {
    throw invalid('data', data, 'Send data must be an object');
  }
  // Before the checks: a misspelt `phoneNumber` is then named along with its error.
  warnUnknownSendFields(kind, data);
  const problem = phoneProblem(data.phoneNumber);
  if (problem) throw invalid('phoneNumber', data.phoneNumber, problem);

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

  const strategy = data.deviceSelectionStrategy;
  if (strategy != null && !STRATEGIES.includes(strategy)) {
    throw invalid('deviceSelectionStrategy', strategy, `deviceSelectionStrategy must be one of ${STRATEGIES.join(', ')}`);
  }
  const timeout = callTimeout(data.timeout);
  return {
    phoneNumber: data.phoneNumber,
    text,
    media,
    documentName,
    strategy: strategy ?? undefined,
    timeout,
    // Delivery options (lib/delivery.js): a branch each when absent.
    delivery: data.waitFor == null && data.waitForDevice == null ? undefined : deliveryArg(data),
    idempotencyKey: data.idempotencyKey == null ? undefined : idempotencyKeyArg(data.idempotencyKey, invalid),
    metadata: data.metadata == null ? undefined : metadataArg(data.metadata, invalid),
  };
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

module.exports = { sendArgs };
