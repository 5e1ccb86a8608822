'use strict';
// The JavaScript face of the gateway: the v1 API on top of the Rust core. It checks
// arguments, keeps one promise per send call, and dispatches what the core
// delivers (results, events, errors) in batches, to the callbacks and to listeners.
const EventEmitter = require('node:events');
const { isNativeError } = require('node:util').types;
const {
  ERROR_CODES,
  SERVER_MESSAGE_TYPES,
  EXTENSION_MESSAGE_TYPES,
  GatewayError,
  fromNative,
} = require('./lib/errors');
const { CallTable } = require('./lib/call-table');
const { attach } = require('./lib/attach');
const { normalizeConfig } = require('./lib/options');
const { sendArgs } = require('./lib/send-args');
const { requestArgs } = require('./lib/request-args');
const { debug, debugEvent, debugError, enabled: debugEnabled } = require('./lib/debug');
const { warnUnknownOptions, warnUnhandled, warnOnce } = require('./lib/warnings');
const { SendMetrics, render } = require('./lib/metrics');
const { Log } = require('./lib/logger');
const { createHash } = require('node:crypto');
const { addon, BATCH, readBatch } = require('./lib/native');

const { NativeGateway, sendCall, flushCalls } = addon;

/**
 * Runs validateApiKey for each check the core queued (`[token, apiKey, ...]`, see
 * src/validations.rs) and hands each answer back to `native`, normalised, or why it
 * failed.
 * @param {Array<number | string>} checks
 * @param {(apiKey: string) => unknown} validateApiKey
 * @param {import('./native').NativeGateway} native
 */
function runChecks(checks, validateApiKey, native) {
  for (let i = 0; i < checks.length; i += 2) {
    const token = /** @type {number} */ (checks[i]);
    let answered;
    try {
      answered = Promise.resolve(validateApiKey(/** @type {string} */ (checks[i + 1]))).then(normalizeAnswer);
    } catch (error) {
      answered = Promise.reject(error);
    }
    answered
      .then((answer) => native.validated(token, answer.valid, answer.userId, answer.reason))
      // Also an answer the core cannot take (a userId nested past what it converts):
      // the check fails rather than the process.
      .catch((error) => native.validationFailed(token, problemOf(error)));
  }
}

/** What validateApiKey answered, as the core reads it. */
function normalizeAnswer(answer) {
  if (answer === null || typeof answer !== 'object') {
    throw new TypeError(`validateApiKey must return an object like { valid: true }, got ${answer}`);
  }
  const reason = answer.reason == null ? undefined : String(answer.reason);
  return { valid: Boolean(answer.valid), userId: jsonSafe(answer.userId), reason };
}

/**
 * What a validator's throw or rejection says: an Error's own `message` (read
 * without running a getter), a thrown string itself, else nothing.
 */
function problemOf(error) {
  if (typeof error === 'string') return error;
  if (!isNativeError(error)) return '';
  try {
    // Bounded: a Proxy could hand out a fresh prototype at every step.
    let o = error;
    for (let depth = 0; depth < 32 && o !== null; depth++, o = Object.getPrototypeOf(o)) {
      const own = Object.getOwnPropertyDescriptor(o, 'message');
      if (own) return typeof own.value === 'string' ? own.value : 'JavaScript Error';
    }
  } catch {
    // A Proxy's trap threw.
  }
  return 'JavaScript Error';
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

const SENT_EVENTS = {
  message: 'message-sent',
  image: 'image-sent',
  video: 'video-sent',
  document: 'document-sent',
  // README: "Beyond the four commands".
  command: 'command-result',
};

/** How events name whom a call was for: `phoneNumber`, `chatId`, or a custom command's `command`. */
function recipientOf(call) {
  if (call.command !== undefined) return { command: call.command };
  if (call.chatId !== undefined) return { chatId: call.chatId };
  return { phoneNumber: call.phoneNumber };
}

/** `stop()`'s options: `{ drainMs }`, a finite number of ms (0: no drain). */
function drainOption(options) {
  if (options == null) return undefined;
  if (typeof options !== 'object') throw new TypeError(`stop(): options must be an object like { drainMs: 10000 }, got ${typeof options}`);
  const { drainMs } = options;
  if (drainMs == null) return undefined;
  if (typeof drainMs !== 'number' || !Number.isFinite(drainMs) || drainMs < 0) {
    throw new TypeError(`stop(): 'drainMs' must be a finite number of milliseconds (0 or more), got ${String(drainMs)}`);
  }
  return drainMs;
}

function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Also an EventEmitter (README "Seeing inside"): every event under its `type` and under 'event',
 * every error under 'gateway-error' (never 'error', which would crash an app that
 * does not listen).
 */
class WhatsAppGateway extends EventEmitter {
  #native;
  /** The native gateway's number for `sendCall` (a plain function: cheaper per send than a method). */
  #handle = -1;
  #deliver;
  #callbacks;
  #server;
  #path;
  #port;
  #maxPayload;
  /** Undoes attaching to `server`, while attached. */
  #detach = null;
  /** Send calls in flight: id -> { resolve, reject, ... }. */
  #calls = new CallTable();
  /**
   * Durable mode: calls whose sends stop() left waiting in the store; they do not keep
   * Node alive, and settle if this gateway starts again (README "Durable mode").
   */
  #kept = new Map();
  #durable = false;
  #nextCall = 0;
  /**
   * Media sources of calls in flight: source -> { share, calls }. Calls naming one source
   * (an image sent to many) share one copy of it in the core (src/media_shares.rs).
   */
  #mediaShares = new Map();
  #nextShare = 0;
  #running = false;
  #stopping = null;
  #stopped = null;
  /** Whether the core currently keeps the event loop alive. */
  #held = false;
  /** Whether a flush of queued commands is due at the end of this tick. */
  #flushDue = false;
  /** `performance.now()` when the batch being read arrived; -1 until a call it settles asks. */
  #batchAt = -1;
  #sendMetrics = new SendMetrics();
  /** 5.3 cluster mode: queries answered by the core later, token -> { resolve, reject }. */
  #cluster;
  #answers = new Map();
  #nextAnswer = 0;
  /**
   * Whether a paced send that will time out in its queue is warned about: the user
   * chose pacing but left requestTimeout at its default, which a queue easily outlasts.
   */
  #warnPacedTimeouts;
  /** The `logger` option's lines (6.3), or null. */
  #logger = null;

  constructor(config) {
    super();
    const { native, callbacks, server, requestTimeoutGiven } = normalizeConfig(config);
    warnUnknownOptions(config);
    this.#warnPacedTimeouts = native.pacing !== undefined && !requestTimeoutGiven;
    this.#callbacks = callbacks;
    this.#server = server;
    this.#path = native.path;
    this.#port = native.port;
    this.#maxPayload = native.maxPayload;
    this.#cluster = native.cluster !== undefined;
    this.#durable = native.store !== undefined;
    if (callbacks.logger) this.#logger = new Log(callbacks.logger);
    const settings = { ...native, debugLog: debugEnabled() };
    // Kept here: the native side holds it only while something is pending, so that a
    // gateway nobody uses any more can be collected.
    this.#deliver = (numbers, text, values, checks) => {
      if (checks !== undefined) runChecks(checks, callbacks.validateApiKey, this.#native);
      this.#onBatch(numbers, text, values);
    };
    this.#native = new NativeGateway(settings, this.#deliver);
    this.#handle = this.#native.handle;
  }

  get isRunning() {
    return this.#running;
  }

  async start() {
    if (this.#stopping) await this.#stopping;
    try {
      if (this.#server) {
        this.#native.startAttached();
        // Once the server has closed, nothing can reach the gateway: it stops with it, so
        // that isRunning and getHealth() tell the truth. In cluster mode server.close()
        // only stops new connections: requests under way still send, and stop() then
        // drains the sessions (README "Deploying").
        this.#detach = attach(
          this.#server,
          this.#native,
          this.#path,
          () => {
            if (!this.#cluster) this.#native.closeSessions();
          },
          () => this.stop(),
        );
      } else {
        this.#native.start();
      }
    } catch (error) {
      throw new GatewayError(error.code ?? 'SERVER_ERROR', this.#startFailure(error), {
        port: this.#server ? undefined : this.#port,
      });
    }
    this.#running = true;
    for (const [id, call] of this.#kept) this.#calls.set(id, call);
    this.#kept.clear();
    this.#updateHold();
    if (this.#cluster) {
      try {
        await this.#ask((token) => this.#native.joinCluster(token));
      } catch (error) {
        await this.stop();
        throw error;
      }
    }
    if (this.#server) debug('attached to the server, WebSocket path %s', this.#path);
    else debug('listening on port %d, WebSocket path %s', this.address()?.port, this.#path);
    if (this.#logger) {
      const health = this.getHealth();
      const where = this.#server ? { attached: true } : { port: health.port };
      this.#logger.write('info', { ...where, path: this.#path, nodeId: health.cluster?.nodeId }, 'gateway started');
    }
  }

  /** Why start() failed, naming the port and the fix where there is one. */
  #startFailure(error) {
    const where = `port ${this.#port}`;
    switch (error.code) {
      case 'EADDRINUSE':
        return `Cannot start the gateway: ${where} is already in use (EADDRINUSE); stop whatever listens there or pass another 'port'`;
      case 'EACCES':
        return `Cannot start the gateway: no permission to listen on ${where} (EACCES); ports below 1024 need privileges, pick a higher 'port'`;
      case 'EADDRNOTAVAIL':
        return `Cannot start the gateway on ${where}: the 'host' address is not on this machine (EADDRNOTAVAIL)`;
      default:
        return `Cannot start the gateway: ${error.message}`;
    }
  }

  /**
   * `stop({ drainMs })`: with `drainMs`, sends already written get up to that long to
   * settle first (README "Stopping").
   */
  stop(options) {
    let drainMs;
    try {
      drainMs = drainOption(options);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#stopping) return this.#stopping;
    if (!this.#running) return Promise.resolve();
    this.#running = false;
    this.#stopping = new Promise((resolve) => {
      this.#stopped = resolve;
    });
    this.#detach?.();
    this.#detach = null;
    this.#updateHold();
    this.#logger?.write('info', { pendingRequests: this.#calls.size }, 'gateway stopping');
    this.#native.stop(drainMs);
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

  /**
   * A custom command (README: "Beyond the four commands"): `{type, requestId, data}` to
   * a device that listed `type`; resolves `{ requestId, data, deviceInfo }` with the
   * extension's `command-result`.
   */
  request(apiKey, type, data, options) {
    let args;
    try {
      args = requestArgs(apiKey, type, data, options, this.#maxPayload);
    } catch (error) {
      this.#sendMetrics.settled('command', error.code ?? 'VALIDATION_ERROR', performance.now());
      this.#reportError(error);
      return Promise.reject(error);
    }
    return this.#dispatch('command', apiKey, args);
  }

  /** With `cluster`, a promise of every process's sessions, each with its `nodeId` (5.3). */
  getActiveSessions(apiKey) {
    if (this.#cluster) {
      if (typeof apiKey !== 'string') return Promise.resolve([]);
      return this.#ask((token) => this.#native.clusterSessions(token, apiKey));
    }
    if (typeof apiKey !== 'string') return [];
    return this.#native.sessions(apiKey);
  }

  /**
   * What became of a send (README: "Delivery"): its record, or null. By request id, or
   * by `{ apiKey, idempotencyKey }` or `{ apiKey, messageId }`.
   */
  getMessageStatus(lookup) {
    const none = this.#cluster ? Promise.resolve(null) : null;
    if (typeof lookup === 'string') {
      if (this.#cluster) return this.#ask((token) => this.#native.clusterMessageStatus(token, lookup));
      return this.#native.messageStatus(lookup) ?? null;
    }
    const selector = statusSelector(lookup);
    if (selector === null) return none;
    if (this.#cluster) return this.#ask((token) => this.#native.clusterMessageStatusBy(token, selector));
    return this.#native.messageStatusBy(selector) ?? null;
  }

  /** Every session of every key, each with its `apiKey` (README "Seeing inside"). */
  getAllSessions() {
    if (this.#cluster) return this.#ask((token) => this.#native.clusterAllSessions(token));
    return this.#localSessions();
  }

  #localSessions() {
    return this.#native.allSessions().map(({ apiKey, session }) => ({ ...session, apiKey, apiKeyDigest: sha256(apiKey) }));
  }

  /** Asks the core something it answers later (cluster queries need Redis). */
  #ask(request) {
    const token = (this.#nextAnswer = (this.#nextAnswer + 1) >>> 0);
    return new Promise((resolve, reject) => {
      this.#answers.set(token, { resolve, reject });
      this.#updateHold();
      request(token);
    });
  }

  /** Counters, gauges and histograms in the Prometheus text format 0.0.4 (README "Seeing inside"). */
  metrics() {
    return render({
      // Per process, also in cluster mode (5.3).
      sessions: this.#localSessions(),
      health: this.getHealth(),
      pendingSends: this.#calls.size,
      sends: this.#sendMetrics,
      core: this.#native.coreMetrics(),
    });
  }

  getHealth() {
    const health = this.#native.health();
    // Attached, the port is the server's, once it listens (a pipe has no port).
    if (this.#server && this.#running) {
      const port = this.#server.address()?.port;
      if (port !== undefined) health.port = port;
    }
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
      // Counted in the duration histogram too (it settles as it is called), so that the
      // histogram's count agrees with wa_gateway_sends_total.
      this.#sendMetrics.settled(kind, error.code ?? 'VALIDATION_ERROR', performance.now());
      this.#reportError(error, true);
      return Promise.reject(error);
    }
    return this.#dispatch(kind, apiKey, args);
  }

  #dispatch(kind, apiKey, args) {
    const id = (this.#nextCall = (this.#nextCall + 1) >>> 0);
    const startedAt = performance.now();
    return new Promise((resolve, reject) => {
      // What the `*-sent` event and the metrics need besides what the core reports:
      // who it is for (phoneNumber, chatId, or a custom command's type).
      const { phoneNumber, chatId, command } = args;
      const { media } = args;
      this.#calls.set(id, { resolve, reject, kind, apiKey, phoneNumber, chatId, command, startedAt, metadata: args.metadata, media });
      this.#updateHold();
      try {
        const { text, documentName, strategy, timeout, delivery, idempotencyKey, metadata, target, paced } = args;
        // A plain text send passes no options object: each of its properties is a napi read.
        const options =
          media === undefined &&
          documentName === undefined &&
          strategy === undefined &&
          timeout === undefined &&
          delivery === undefined &&
          idempotencyKey === undefined &&
          metadata === undefined &&
          target === undefined &&
          !paced
            ? undefined
            : {
                ...(media === undefined ? undefined : this.#shareMedia(media)),
                documentName,
                strategy,
                timeout,
                waitFor: delivery?.waitFor,
                waitForDevice: delivery?.waitForDevice,
                idempotencyKey,
                metadata: metadata?.text,
                target,
                paced,
              };
        const to = command ?? chatId ?? phoneNumber;
        if (!sendCall(this.#handle, id, kind, apiKey, to, text, options)) {
          // Every command that held this media is written: the core has no copy left.
          options.mediaSource = media;
          sendCall(this.#handle, id, kind, apiKey, to, text, options);
        }
        // Every command queued in this tick leaves in one write per extension.
        if (!this.#flushDue) {
          this.#flushDue = true;
          queueMicrotask(() => {
            this.#flushDue = false;
            flushCalls(this.#handle);
          });
        }
      } catch (error) {
        this.#settle(id);
        this.#updateHold();
        this.#sendMetrics.settled(kind, 'SERVER_ERROR', startedAt);
        reject(new GatewayError('SERVER_ERROR', describe(error), null));
      }
    });
  }

  /** What the core delivered since the last call, in order (lib/native.js reads the batch). */
  #onBatch(numbers, text, values) {
    this.#batchAt = -1;
    readBatch(numbers, text, values, this.#reader);
    this.#updateHold();
  }

  /** What each kind of delivery does here, as readBatch hands them over. */
  #reader = {
    resolved: (call, requestId, messageId, timestamp, ackStage, session) =>
      this.#resolved(call, requestId, messageId, timestamp, ackStage, session),
    rejected: (id, plainError) => {
      const error = fromNative(plainError);
      // A duplicate's rejection repeats the first call's error, reported then.
      if (error.details?.duplicate !== true) this.#reportError(error, true);
      const call = this.#settle(id);
      if (call) {
        this.#sendMetrics.settled(call.kind, error.code, call.startedAt, this.#settledAt());
        call.reject(error);
      }
    },
    duplicate: (id, result) => {
      // Settled by an earlier call with its idempotencyKey: no event again.
      const call = this.#settle(id);
      if (call) {
        this.#sendMetrics.settled(call.kind, 'success', call.startedAt, this.#settledAt());
        call.resolve(result);
      }
    },
    log: (event) => this.#log(event),
    error: (plainError) => this.#reportError(fromNative(plainError)),
    debug: (line) => debug('%s', line),
    warning: (code, message) => {
      if (code !== 'PACED_SEND_TIMEOUT' || this.#warnPacedTimeouts) {
        warnOnce(code, message);
        this.#logger?.write('warn', { code }, message);
      }
    },
    notice: ({ level, message, fields }) => {
      debug('%s', message);
      this.#logger?.write(level, fields, message);
    },
    answer: (token, ok, value) => {
      const waiting = this.#answers.get(token);
      this.#answers.delete(token);
      if (ok) waiting?.resolve(value);
      else waiting?.reject(fromNative(value));
    },
    stopped: () => {
      debug('stopped');
      // Durable mode: what is still pending now waits in the store (end_waiting).
      if (this.#durable) {
        for (const [id, call] of this.#calls) this.#kept.set(id, call);
        this.#calls.clear();
      }
      this.#logger?.write('info', {}, 'gateway stopped');
      this.#stopping = null;
      this.#stopped?.();
      this.#stopped = null;
    },
  };

  /** `messageId`: a custom command's `data` comes where a send's message id does. */
  #resolved(id, requestId, messageId, timestamp, ackStage, session) {
    // src/deliveries.rs: ack index * 4 + stage (0 result, 1 result while waiting for an ack, 2 that ack).
    const stage = ackStage & 3;
    const call = stage === 1 ? this.#calls.get(id) : this.#settle(id);
    if (!call) return;
    const sessionId = session.sessionId;
    const command = call.kind === 'command';
    if (stage !== 1) {
      const deviceInfo = { sessionId, extensionVersion: session.extensionVersion, browser: session.browser };
      this.#sendMetrics.settled(call.kind, 'success', call.startedAt, this.#settledAt());
      if (command) call.resolve({ requestId, data: messageId, deviceInfo });
      else {
        const ack = BATCH.acks[ackStage >> 2];
        call.resolve({ success: true, requestId, messageId, timestamp, deviceInfo, ack });
      }
    }
    if (stage === 2) return;
    const type = SENT_EVENTS[call.kind];
    // Built only when someone takes it: this is the hot path.
    if (this.#callbacks.onMessageLog || this.listenerCount(type) > 0 || this.listenerCount('event') > 0) {
      const userId = session.userId;
      // The common event (a phone number, no metadata) as one literal: spreading the
      // optional fields in costs the hot path microseconds.
      const plain = !command && call.chatId === undefined && call.metadata === undefined;
      this.#log(
        plain
          ? { type, apiKey: call.apiKey, sessionId, userId, timestamp: Date.now(), phoneNumber: call.phoneNumber, requestId, messageId, status: 'success' }
          : {
              type,
              apiKey: call.apiKey,
              sessionId,
              userId,
              timestamp: Date.now(),
              ...recipientOf(call),
              requestId,
              ...(command ? undefined : { messageId }),
              status: 'success',
              ...(call.metadata === undefined ? undefined : { metadata: call.metadata.value }),
            },
      );
    }
  }

  /**
   * One clock reading times every call a batch settles: they all arrived by then. Read
   * only once one does, so a batch of other deliveries never loads the performance API.
   */
  #settledAt() {
    if (this.#batchAt < 0) this.#batchAt = performance.now();
    return this.#batchAt;
  }

  #settle(id) {
    const call = this.#calls.take(id);
    if (call?.media !== undefined) this.#unshareMedia(call.media);
    return call;
  }

  /**
   * The media options of a call: the source itself only if no call in flight names it
   * (else the core may still hold its copy: `send` says when it does not).
   */
  #shareMedia(source) {
    let shared = this.#mediaShares.get(source);
    if (shared !== undefined) {
      shared.calls++;
      return { mediaShare: shared.share };
    }
    shared = { share: (this.#nextShare = (this.#nextShare + 1) >>> 0), calls: 1 };
    this.#mediaShares.set(source, shared);
    return { mediaSource: source, mediaShare: shared.share };
  }

  /** A call naming `source` settled; the last one releases the core's copy. */
  #unshareMedia(source) {
    const shared = this.#mediaShares.get(source);
    if (shared === undefined || --shared.calls > 0) return;
    this.#mediaShares.delete(source);
    this.#native.releaseMedia(shared.share);
  }

  /**
   * Keeps Node alive while listening on its own port, stopping, or with sends in
   * flight. Attached, the user's server decides.
   */
  #updateHold() {
    const listening = this.#running && !this.#server;
    const wanted = listening || this.#stopping !== null || this.#calls.size > 0 || this.#answers.size > 0;
    if (wanted !== this.#held) {
      this.#native.keepAlive(wanted);
      this.#held = wanted;
    }
  }

  #log(event) {
    debugEvent(event);
    this.#logger?.event(event);
    const { onMessageLog } = this.#callbacks;
    if (onMessageLog) call(onMessageLog, this, event, (error) => this.#callbackFailed('onMessageLog', error));
    this.#emitSafely(event.type, event);
    this.#emitSafely('event', event);
  }

  /**
   * `emit`, except that a listener that throws or rejects is a CALLBACK_ERROR and
   * the listeners after it still run.
   */
  #emitSafely(name, value) {
    if (this.listenerCount(name) === 0) return;
    for (const listener of this.rawListeners(name)) {
      call(listener, this, value, (error) => this.#callbackFailed(`'${name}' listener`, error));
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

  /**
   * To onError and 'gateway-error' listeners; what they throw is swallowed (reporting
   * a failure of the error handler to itself would recurse). With neither, failures
   * the host would want to know about become process warnings.
   */
  #reportError(error, send = false) {
    debugError(error);
    this.#logger?.error(error, { send });
    const { onError } = this.#callbacks;
    const listening = this.listenerCount('gateway-error') > 0;
    if (onError) call(onError, this, error, ignore);
    if (listening) {
      for (const listener of this.rawListeners('gateway-error')) call(listener, this, error, ignore);
    }
    if (!onError && !listening) warnUnhandled(error);
  }
}

function ignore() {}

/** `{ apiKey, idempotencyKey }` or `{ apiKey, messageId }` as the core takes it, or null. */
function statusSelector(lookup) {
  if (lookup === null || typeof lookup !== 'object' || typeof lookup.apiKey !== 'string') return null;
  if (typeof lookup.idempotencyKey === 'string') return { apiKey: lookup.apiKey, idempotencyKey: lookup.idempotencyKey };
  if (lookup.messageId !== undefined && lookup.messageId !== null) {
    const text = JSON.stringify(lookup.messageId);
    return text === undefined ? null : { apiKey: lookup.apiKey, messageId: text };
  }
  return null;
}

/** `apiKeyDigest` without cluster mode: SHA-256 of the key, in hex (as Redis would hold it without `cluster.secret`). */
function sha256(text) {
  return createHash('sha256').update(text).digest('hex');
}

/** Calls a user's function; a throw or a rejected promise goes to `failed`. */
function call(fn, self, value, failed) {
  try {
    const returned = fn.call(self, value);
    if (returned && typeof returned.then === 'function') returned.then(undefined, failed);
  } catch (error) {
    failed(error);
  }
}

module.exports = {
  WhatsAppGateway,
  GatewayError,
  ERROR_CODES,
  SERVER_MESSAGE_TYPES,
  EXTENSION_MESSAGE_TYPES,
};
