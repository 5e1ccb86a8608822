'use strict';
// The native addon (gateway.node, built from src/): where it is loaded from, the facts the
// JavaScript side reads from it rather than repeating them (the config's defaults, the
// options' names and the error codes, src/options.rs), and how the batches it delivers are
// laid out and read (src/deliveries.rs). Its types are native.d.ts.
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

/** How a delivered batch is laid out: tags, and the slots of a success (src/deliveries.rs). */
const BATCH = addon.batchLayout();
const RESOLVED_SLOTS = BATCH.resolvedFields.length;
/** Where each slot of a success is, counted from its tag: `items[at + AT.requestId]`. */
const AT = Object.fromEntries(BATCH.resolvedFields.map((name, i) => [name, i + 1]));
const SESSION_SLOTS = BATCH.sessionFields.length;
/** Where each slot of a session is, counted from its tag. */
const SESSION_AT = Object.fromEntries(BATCH.sessionFields.map((name, i) => [name, i + 1]));

/**
 * Walks what the core delivered since the last call (one flat array, laid out as BATCH
 * says), in order, handing each delivery to `to`. A success is handed as the batch, where
 * its tag is and where its session's tag is (read them with AT and SESSION_AT): on the
 * hot path nothing is copied out that the caller may not need. Values sent as JSON text
 * (an event, a duplicate's result, a notice) arrive parsed.
 */
function readBatch(items, to) {
  // Where the session of the successes that follow was given (BATCH.session).
  let session = -1;
  for (let i = 0; i < items.length; ) {
    const tag = items[i];
    if (tag === BATCH.resolved) {
      to.resolved(items, i, session);
      i += 1 + RESOLVED_SLOTS;
    } else if (tag === BATCH.session) {
      session = i;
      i += 1 + SESSION_SLOTS;
    } else if (tag === BATCH.rejected) {
      to.rejected(items[i + 1], items[i + 2]);
      i += 3;
    } else if (tag === BATCH.duplicate) {
      to.duplicate(items[i + 1], JSON.parse(items[i + 2]));
      i += 3;
    } else if (tag === BATCH.log) {
      const event = items[i + 1];
      to.log(typeof event === 'string' ? JSON.parse(event) : event);
      i += 2;
    } else if (tag === BATCH.error) {
      to.error(items[i + 1]);
      i += 2;
    } else if (tag === BATCH.debug) {
      to.debug(items[i + 1]);
      i += 2;
    } else if (tag === BATCH.warning) {
      to.warning(items[i + 1], items[i + 2]);
      i += 3;
    } else if (tag === BATCH.notice) {
      to.notice(JSON.parse(items[i + 1]));
      i += 2;
    } else if (tag === BATCH.answer) {
      to.answer(items[i + 1], items[i + 2], items[i + 3]);
      i += 4;
    } else {
      to.stopped();
      i += 1;
    }
  }
}

module.exports = { addon, DEFAULTS, BATCH, AT, SESSION_AT, readBatch };
