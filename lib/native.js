'use strict';
// The native addon (gateway.node, built from src/): where it is loaded from, and the facts
// the JavaScript side reads from it rather than repeating them (the config's defaults, the
// options' names and the error codes, src/options.rs). Its types are native.d.ts.
const fs = require('node:fs');
const path = require('node:path');
const { prebuiltPath } = require('./prebuilt');

/**
 * The addon the install put next to index.js, else the one the tarball carries for
 * this platform (when install scripts did not run).
 * @returns {typeof import('../native')} as napi-rs generated its types from src/
 */
function loadNative() {
  let problem = 'gateway.node is not there';
  for (const file of [path.join(__dirname, '..', 'gateway.node'), prebuiltPath()]) {
    if (!fs.existsSync(file)) continue;
    try {
      return require(file);
    } catch (error) {
      problem = error.message;
    }
  }
  throw new Error(
    `whatsapp-ws-extension-gateway: the native addon is missing or broken (${problem}). ` +
      'Reinstall it with `npm rebuild whatsapp-ws-extension-gateway` (its install script must be allowed to run); ' +
      'in a clone of the repository, `npm run build`.',
  );
}

const addon = loadNative();

/** The default of each option that has a value when not given (README "new WhatsAppGateway(config)"). */
const DEFAULTS = Object.freeze(addon.defaults());

module.exports = { addon, DEFAULTS };
