'use strict';
// Every key the gateway reads from the objects a user writes: the config, the option
// objects nested in it (both listed by the addon, src/options.rs: a new option is added
// there, in the list of the object that holds it), and a send call's data. Anything else
// is reported as a likely typo (lib/warnings.js).

const { addon } = require('./native');

const names = addon.optionNames();

/** The constructor's config (README: "new WhatsAppGateway(config)"), as src/options.rs lists it. */
const CONFIG_OPTIONS = names.config;

/**
 * Option objects inside the config, by their path in it. One that holds another kind of
 * value there (`cluster.redis` is usually a URL string) is not looked into.
 * @type {Record<string, string[]>}
 */
const NESTED_OPTIONS = Object.fromEntries(names.nested.map(({ path, names: inside }) => [path, inside]));

/** What every send method reads besides its message or media. */
const SEND_OPTIONS = ['phoneNumber', 'deviceSelectionStrategy', 'timeout', 'idempotencyKey', 'waitFor', 'waitForDevice', 'metadata', 'chatId', 'target'];

/** A send call's data, by the kind of send. */
const SEND_FIELDS = {
  message: [...SEND_OPTIONS, 'message'],
  image: [...SEND_OPTIONS, 'dataUrl', 'imageDataUrl', 'imageUrl', 'caption'],
  video: [...SEND_OPTIONS, 'dataUrl', 'videoDataUrl', 'videoUrl', 'caption'],
  document: [...SEND_OPTIONS, 'dataUrl', 'documentDataUrl', 'documentUrl', 'documentName', 'caption'],
};

module.exports = { CONFIG_OPTIONS, NESTED_OPTIONS, SEND_FIELDS };
