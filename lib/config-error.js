'use strict';
// The one way a bad config value is reported: a TypeError that names the option, says what
// it must be, and shows the value without printing a function's source or a whole object
// (either may hold a secret).

/** A value as an error message shows it. */
function describeValue(value) {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (value !== null && typeof value === 'object') return `an object (${value.constructor?.name ?? 'no prototype'})`;
  return String(value);
}

function configError(option, expected, value, fix = '') {
  return new TypeError(`WhatsAppGateway config: '${option}' must be ${expected}, got ${describeValue(value)}${fix}`);
}

module.exports = { configError };
