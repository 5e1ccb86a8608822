'use strict';
// Checks the arguments of the four send methods (SPEC 2.2) before they cross into
// Rust, so that a mistake is reported with the caller's own value.
const { GatewayError, maskApiKey } = require('./errors');
const { STRATEGIES } = require('./options');

const E164 = /^\+[1-9]\d{1,14}$/;

function invalid(field, value, message) {
  return new GatewayError('VALIDATION_ERROR', message, { field, value });
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
  };
}

/** A call's own `timeout`: a finite number of milliseconds, at least 1 (SPEC 5.1). */
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
    if (typeof value !== 'string') throw invalid(field, value, `${field} must be a string`);
    return value;
  }
  const label = kind[0].toUpperCase() + kind.slice(1);
  throw invalid('dataUrl', undefined, `${label} needs one of dataUrl, ${kind}DataUrl or ${kind}Url`);
}

module.exports = { sendArgs };
