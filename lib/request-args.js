'use strict';
// Checks the arguments of `gateway.request(apiKey, type, data, options)` (README:
// "Beyond the four commands") before they cross into Rust.
const { SERVER_MESSAGE_TYPES, EXTENSION_MESSAGE_TYPES } = require('./errors');
const { callOptions, invalid, checkApiKey } = require('./send-args');
const { waitForDeviceArg } = require('./delivery');

const CUSTOM_TYPE = /^[a-z][a-z0-9-]{0,63}$/;
/**
 * Frame types of the protocol itself, in either direction: never a custom command.
 * @type {Set<string>}
 */
const BUILT_IN_TYPES = new Set([...Object.values(SERVER_MESSAGE_TYPES), ...Object.values(EXTENSION_MESSAGE_TYPES)]);

function typeArg(type) {
  if (typeof type !== 'string' || !CUSTOM_TYPE.test(type)) {
    throw invalid('type', type, 'type must match ^[a-z][a-z0-9-]{0,63}$ (lower-case letters, digits and dashes, starting with a letter)');
  }
  if (BUILT_IN_TYPES.has(type)) {
    throw invalid('type', type, `type '${type}' is a frame type of the protocol itself; use the send methods for the built-in commands, and another name for a custom one`);
  }
  return type;
}

/** `data` as JSON text, at most `maxPayload` bytes (what an extension is sent). */
function dataArg(data, maxPayload) {
  let text;
  try {
    text = data === undefined ? 'null' : JSON.stringify(data);
  } catch (error) {
    throw invalid('data', typeof data, `data must be a JSON value: ${error.message}`);
  }
  if (text === undefined) throw invalid('data', typeof data, `data must be a JSON value, got a ${typeof data}`);
  const bytes = Buffer.byteLength(text);
  if (bytes > maxPayload) {
    throw invalid('data', `<${bytes} bytes as JSON>`, `data must be at most maxPayload (${maxPayload}) bytes as JSON, got ${bytes}`);
  }
  return text;
}

/** What the native `send` needs for one custom command, or throws a VALIDATION_ERROR. */
function requestArgs(apiKey, type, data, options, maxPayload) {
  checkApiKey(apiKey);
  typeArg(type);
  if (options != null && typeof options !== 'object') {
    throw invalid('options', options, 'request options must be an object');
  }
  const given = options ?? {};
  if (given.paced != null && typeof given.paced !== 'boolean') {
    throw invalid('paced', given.paced, 'paced must be true or false');
  }
  return {
    command: type,
    text: dataArg(data, maxPayload),
    ...callOptions(given),
    delivery: given.waitForDevice == null ? undefined : { waitForDevice: waitForDeviceArg(given.waitForDevice, invalid) },
    paced: given.paced === true,
  };
}

module.exports = { requestArgs };
