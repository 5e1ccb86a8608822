'use strict';
// The JavaScript face of the gateway: the v1 API on top of the Rust core. It checks
// arguments, keeps one promise per send call, and dispatches what the core
// delivers (results, events, errors) in batches.
const {
  ERROR_CODES,
  SERVER_MESSAGE_TYPES,
  EXTENSION_MESSAGE_TYPES,
  GatewayError,
  fromNative,
} = require('./lib/errors');
const { attach } = require('./lib/attach');
const { normalizeConfig } = require('./lib/options');
const { sendArgs } = require('./lib/send-args');

function loadNative() {
  try {
    return require('./gateway.node');
  } catch (error) {
    throw new Error(
      `whatsapp-ws-extension-gateway: the native addon is missing or broken (${error.message}). ` +
        'Build it with `npm run build` (needs a Rust toolchain).',
    );
  }
}
const { NativeGateway, batchLayout } = loadNative();

/** Makes whatever validateApiKey returns (value or promise) into what Rust reads. */
function wrapValidator(validateApiKey) {
  const normalize = (answer) => {
    if (answer === null || typeof answer !== 'object') {
      throw new TypeError(`validateApiKey must return an object like { valid: true }, got ${answer}`);
    }
    const reason = answer.reason == null ? undefined : String(answer.reason);
    return { valid: Boolean(answer.valid), userId: jsonSafe(answer.userId), reason };
  };
  return (apiKey) => {
    try {
      return Promise.resolve(validateApiKey(apiKey)).then(normalize);
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/**
 * `userId` may be any JSON value; anything JSON cannot hold (a BigInt, a function, a
 * cycle) is kept as its string form rather than failing the authentication.
 */
function jsonSafe(value) {
  if (value === undefined || value === null) return undefined;
  const type = typeof value;
  if (type === 'string' || type === 'boolean' || (type === 'number' && Number.isFinite(value))) return value;
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : JSON.parse(text);
  } catch {
    return String(value);
  }
}

/** How a delivered batch is laid out: tags, and the slots of a success (src/deliveries.rs). */
const BATCH = batchLayout();
const RESOLVED_SLOTS = BATCH.resolvedFields.length;
const AT = Object.fromEntries(BATCH.resolvedFields.map((name, i) => [name, i + 1]));

const SENT_EVENTS = { message: 'message-sent', image: 'image-sent', video: 'video-sent', document: 'document-sent' };

function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

class WhatsAppGateway {
  #native;
  #callbacks;
  #server;
  #path;
  #port;
  /** Undoes attaching to `server`, while attached. */
  #detach = null;
  /** Send calls in flight: id -> { resolve, reject }. */
  #calls = new Map();
  #nextCall = 0;
  #running = false;
  #stopping = null;
  #stopped = null;
  /** Whether the core currently keeps the event loop alive. */
  #held = false;
  /** Whether a flush of queued commands is due at the end of this tick. */
  #flushDue = false;

  constructor(config) {
    const { native, callbacks, server } = normalizeConfig(config);
    this.#callbacks = callbacks;
    this.#server = server;
    this.#path = native.path;
    this.#port = native.port;
    this.#native = new NativeGateway(native, wrapValidator(callbacks.validateApiKey), (batch) =>
      this.#onBatch(batch),
    );
  }

  get isRunning() {
    return this.#running;
  }

  async start() {
    if (this.#stopping) await this.#stopping;
    try {
      if (this.#server) {
        this.#native.startAttached();
        this.#detach = attach(this.#server, this.#native, this.#path, () => this.#native.closeSessions());
      } else {
        this.#native.start();
      }
    } catch (error) {
      throw new GatewayError(error.code ?? 'SERVER_ERROR', `Cannot start the gateway: ${error.message}`, {
        port: this.#server ? undefined : this.#port,
      });
    }
    this.#running = true;
    this.#updateHold();
  }

  stop() {
    if (this.#stopping) return this.#stopping;
    if (!this.#running) return Promise.resolve();
    this.#running = false;
    this.#stopping = new Promise((resolve) => {
      this.#stopped = resolve;
    });
    this.#detach?.();
    this.#detach = null;
    this.#updateHold();
    this.#native.stop();
    return this.#stopping;
  }

  sendMessage(apiKey, data) {
    return this.#send('message', apiKey, data);
  }

  sendImage(apiKey, data) {
    return this.#send('image', apiKey, data);
  }

  sendVideo(apiKey, data) {
    return this.#send('video', apiKey, data);
  }

  sendDocument(apiKey, data) {
    return this.#send('document', apiKey, data);
  }

  getActiveSessions(apiKey) {
    if (typeof apiKey !== 'string') return [];
    return this.#native.sessions(apiKey);
  }

  getHealth() {
    return this.#native.health();
  }

  /** `{ port }` while listening on its own port; attached, the server's address(). */
  address() {
    if (this.#server) return this.#running ? this.#server.address() : null;
    const { port } = this.getHealth();
    return port === undefined ? null : { port };
  }

  #send(kind, apiKey, data) {
    let args;
    try {
      args = sendArgs(kind, apiKey, data);
    } catch (error) {
      this.#reportError(error);
      return Promise.reject(error);
    }
    const id = (this.#nextCall = (this.#nextCall + 1) >>> 0);
    return new Promise((resolve, reject) => {
      // What the `*-sent` event needs besides what the core reports.
      this.#calls.set(id, { resolve, reject, kind, apiKey, phoneNumber: args.phoneNumber });
      this.#updateHold();
      try {
        const { phoneNumber, text, media, documentName, strategy, timeout } = args;
        this.#native.send(id, { kind, apiKey, phoneNumber, text, mediaSource: media, documentName, strategy, timeout });
        // Every command queued in this tick leaves in one write per extension.
        if (!this.#flushDue) {
          this.#flushDue = true;
          queueMicrotask(() => {
            this.#flushDue = false;
            this.#native.flush();
          });
        }
      } catch (error) {
        this.#calls.delete(id);
        this.#updateHold();
        reject(new GatewayError('SERVER_ERROR', describe(error), null));
      }
    });
  }

  /** What the core delivered since the last call, in order, as one flat array (BATCH). */
  #onBatch(items) {
    for (let i = 0; i < items.length; ) {
      const tag = items[i];
      if (tag === BATCH.resolved) {
        this.#resolved(items, i);
        i += 1 + RESOLVED_SLOTS;
      } else if (tag === BATCH.rejected) {
        const error = fromNative(items[i + 2]);
        this.#reportError(error);
        this.#settle(items[i + 1])?.reject(error);
        i += 3;
      } else if (tag === BATCH.log) {
        this.#log(items[i + 1]);
        i += 2;
      } else if (tag === BATCH.error) {
        this.#reportError(fromNative(items[i + 1]));
        i += 2;
      } else {
        this.#stopping = null;
        this.#stopped?.();
        this.#stopped = null;
        i += 1;
      }
    }
    this.#updateHold();
  }

  #resolved(items, at) {
    const call = this.#settle(items[at + AT.call]);
    if (!call) return;
    const requestId = items[at + AT.requestId];
    const messageId = items[at + AT.messageId];
    const sessionId = items[at + AT.sessionId];
    const deviceInfo = { sessionId, extensionVersion: items[at + AT.extensionVersion], browser: items[at + AT.browser] };
    call.resolve({ success: true, requestId, messageId, timestamp: items[at + AT.timestamp], deviceInfo });
    if (this.#callbacks.onMessageLog) {
      this.#log({
        type: SENT_EVENTS[call.kind],
        apiKey: call.apiKey,
        sessionId,
        userId: items[at + AT.userId],
        timestamp: Date.now(),
        phoneNumber: call.phoneNumber,
        requestId,
        messageId,
        status: 'success',
      });
    }
  }

  #settle(id) {
    const call = this.#calls.get(id);
    this.#calls.delete(id);
    return call;
  }

  /**
   * Keeps Node alive while listening on its own port, stopping, or with sends in
   * flight. Attached, the user's server decides.
   */
  #updateHold() {
    const listening = this.#running && !this.#server;
    const wanted = listening || this.#stopping !== null || this.#calls.size > 0;
    if (wanted !== this.#held) {
      this.#native.keepAlive(wanted);
      this.#held = wanted;
    }
  }

  #log(event) {
    const { onMessageLog } = this.#callbacks;
    if (!onMessageLog) return;
    try {
      const returned = onMessageLog(event);
      if (returned && typeof returned.then === 'function') {
        returned.then(undefined, (error) => this.#callbackFailed('onMessageLog', error));
      }
    } catch (error) {
      this.#callbackFailed('onMessageLog', error);
    }
  }

  #callbackFailed(callback, error) {
    this.#reportError(
      new GatewayError('CALLBACK_ERROR', `${callback} failed: ${describe(error)}`, {
        callback,
        error: describe(error),
      }),
    );
  }

  /** onError never breaks the gateway: what it throws is swallowed. */
  #reportError(error) {
    const { onError } = this.#callbacks;
    if (!onError) return;
    try {
      const returned = onError(error);
      if (returned && typeof returned.then === 'function') returned.then(undefined, () => {});
    } catch {
      // Reporting a failure of the error handler to itself would recurse.
    }
  }
}

module.exports = {
  WhatsAppGateway,
  GatewayError,
  ERROR_CODES,
  SERVER_MESSAGE_TYPES,
  EXTENSION_MESSAGE_TYPES,
};
