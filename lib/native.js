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
const TEXT = new Set(BATCH.textFields);
/** Where each field is, counted from its tag (a text field takes two slots: start, length). */
function slotsOf(fields) {
  const at = {};
  let slot = 1;
  for (const name of fields) {
    at[name] = slot;
    slot += TEXT.has(name) ? 2 : 1;
  }
  return { at, slots: slot };
}
const { at: AT, slots: RESOLVED_SLOTS } = slotsOf(BATCH.resolvedFields);
const { at: SESSION_AT, slots: SESSION_SLOTS } = slotsOf(BATCH.sessionFields);

/** A text field of the batch: a substring of its text, one of its values, or null. */
function textOf(numbers, text, values, slot) {
  const start = numbers[slot];
  const length = numbers[slot + 1];
  if (length >= 0) return text.substring(start, start + length);
  return length === BATCH.inValues ? values[start] : null;
}

/**
 * Walks what the core delivered since the last call, in order, handing each delivery to
 * `to`. The batch (src/deliveries.rs): `numbers` (how many follow, then each delivery's
 * tag and slots, laid out as BATCH says), `text` (the strings the slots point into) and
 * `values` (the rest, or undefined). `numbers` is reused for the next batch: it is read
 * here and nowhere else. A success is handed as its fields and its session (one object
 * per run of successes from one session). Values sent as JSON text (an event, a
 * duplicate's result, a notice) arrive parsed.
 */
function readBatch(numbers, text, values, to) {
  // Undefined: the core had nothing it could hand over.
  if (numbers === undefined) return;
  let session = null;
  for (let i = 1, end = 1 + numbers[0]; i < end; ) {
    const tag = numbers[i];
    if (tag === BATCH.resolved) {
      to.resolved(
        numbers[i + AT.call],
        textOf(numbers, text, values, i + AT.requestId),
        textOf(numbers, text, values, i + AT.messageId),
        numbers[i + AT.timestamp],
        numbers[i + AT.ackStage],
        session,
      );
      i += RESOLVED_SLOTS;
      continue;
    }
    if (tag === BATCH.session) {
      session = {
        sessionId: textOf(numbers, text, values, i + SESSION_AT.sessionId),
        extensionVersion: textOf(numbers, text, values, i + SESSION_AT.extensionVersion),
        browser: textOf(numbers, text, values, i + SESSION_AT.browser),
        userId: textOf(numbers, text, values, i + SESSION_AT.userId),
      };
      i += SESSION_SLOTS;
      continue;
    }
    // Every other kind: its tag and where its values start.
    const at = numbers[i + 1];
    i += 2;
    if (tag === BATCH.rejected) {
      to.rejected(values[at], values[at + 1]);
    } else if (tag === BATCH.duplicate) {
      to.duplicate(values[at], JSON.parse(values[at + 1]));
    } else if (tag === BATCH.log) {
      const event = values[at];
      to.log(typeof event === 'string' ? JSON.parse(event) : event);
    } else if (tag === BATCH.error) {
      to.error(values[at]);
    } else if (tag === BATCH.debug) {
      to.debug(values[at]);
    } else if (tag === BATCH.warning) {
      to.warning(values[at], values[at + 1]);
    } else if (tag === BATCH.notice) {
      to.notice(JSON.parse(values[at]));
    } else if (tag === BATCH.answer) {
      to.answer(values[at], values[at + 1], values[at + 2]);
    } else {
      to.stopped();
    }
  }
}

module.exports = { addon, DEFAULTS, BATCH, readBatch };
