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
        'Reinstall it with `npm rebuild whatsapp-ws-extension-gateway` (in a clone of the repository: `npm run build`).',
    );
  }
}
const { NativeGateway } = loadNative();

/** Makes whatever validateApiKey returns (value or promise) into what Rust reads. */
function wrapValidator(validateApiKey) {
  const normalize = (answer) => {
    if (answer === null || typeof answer !== 'object') {
      throw new TypeError(`validateApiKey must return an object like { valid: true }, got ${answer}`);
    }
    let userIdJson;
    if (answer.userId !== undefined) {
      try {
        userIdJson = JSON.stringify(answer.userId);
      } catch {
        userIdJson = JSON.stringify(String(answer.userId));
      }
    }
    const reason = answer.reason == null ? undefined : String(answer.reason);
    return { valid: Boolean(answer.valid), userIdJson, reason };
  };
  return (apiKey) => {
    try {
      return Promise.resolve(validateApiKey(apiKey)).then(normalize);
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Tag of a success in a delivered batch (src/binding.rs). */
const RESOLVED = 1;

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
    return JSON.parse(this.#native.sessions(apiKey));
  }

  getHealth() {
    const health = JSON.parse(this.#native.health());
    health.port = health.port ?? undefined;
    return health;
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
        this.#native.send(id, kind, apiKey, phoneNumber, text, media, documentName, strategy, timeout);
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

  /**
   * What the core delivered since the last call, in order, as one flat array (see
   * src/binding.rs): `1, id, requestId, messageId, timestamp, sessionId,
   * extensionVersion, browser, userId` for a success, `2, json` for anything else.
   */
  #onBatch(items) {
    for (let i = 0; i < items.length; ) {
      if (items[i] === RESOLVED) {
        this.#resolved(items[i + 1], items[i + 2], items[i + 3], items[i + 4], items[i + 5], items[i + 6], items[i + 7], items[i + 8]);
        i += 9;
      } else {
        this.#delivered(items[i + 1]);
        i += 2;
      }
    }
    this.#updateHold();
  }

  #resolved(id, requestId, messageId, timestamp, sessionId, extensionVersion, browser, userId) {
    const call = this.#settle(id);
    if (!call) return;
    call.resolve({ success: true, requestId, messageId, timestamp, deviceInfo: { sessionId, extensionVersion, browser } });
    if (this.#callbacks.onMessageLog) {
      this.#log({
        type: SENT_EVENTS[call.kind],
        apiKey: call.apiKey,
        sessionId,
        userId,
        timestamp: Date.now(),
        phoneNumber: call.phoneNumber,
        requestId,
        messageId,
        status: 'success',
      });
    }
  }

  #delivered(json) {
    let item;
    try {
      item = JSON.parse(json);
    } catch (error) {
      this.#reportError(new GatewayError('SERVER_ERROR', `Unreadable delivery from the core: ${describe(error)}`));
      return;
    }
    switch (item.k) {
      case 'fail': {
        const error = fromNative(item.e);
        this.#reportError(error);
        this.#settle(item.id)?.reject(error);
        break;
      }
      case 'log':
        this.#log(item.e);
        break;
      case 'error':
        this.#reportError(fromNative(item.e));
        break;
      case 'stopped':
        this.#stopping = null;
        this.#stopped?.();
        this.#stopped = null;
        break;
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
