// whatsapp-ws-extension-gateway/client: the extension's end of the gateway protocol.
//
// One file, no imports, no Node APIs: it runs unchanged in a Manifest V3 service worker,
// in a page, and in Node (22+ has a global WebSocket; older Node passes `ws`).
// docs/extension-protocol.md describes every frame this file reads and writes.

const COMMANDS = ['send-message', 'send-image', 'send-video', 'send-document'];
// A custom command's type (docs/extension-protocol.md, "Custom commands"): never one of
// the protocol's own frame types.
const CUSTOM_TYPE = /^[a-z][a-z0-9-]{0,63}$/;
const FRAME_TYPES = [
  ...COMMANDS,
  'auth', 'authenticate', 'auth-success', 'authenticated', 'status', 'heartbeat', 'ping', 'error',
  'message-result', 'message-ack', 'incoming-message', 'incoming-ack', 'command-result',
];
// An extension's failure code: one upper-case word (NOT_ON_WHATSAPP, RATE_LIMITED...).
const FAILURE_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;
const EVENTS = ['open', 'authenticated', 'close', 'error'];
const MEDIA_FIELDS = ['imageDataUrl', 'videoDataUrl', 'documentDataUrl'];
const OPEN = 1; // WebSocket.OPEN, the same in every implementation
const POLICY_VIOLATION = 1008;
const NORMAL_CLOSURE = 1000;
// Request ids of commands already taken on, so a repeated command is never run again.
const REMEMBERED_COMMANDS = 1000;
// Browsers hide why an upgrade failed (a wrong path, a refused Origin, a gateway that is
// down all look alike): after this many failed connects in a row, `error` says so.
const FAILED_CONNECTS_BEFORE_ERROR = 3;
// Node's errors for a gateway that is down or out of reach: not a refusal, and left to
// the backoff without a word.
const UNREACHABLE = /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|EPIPE)\b/;
// What the gateway's refusal of an upgrade usually means (docs/extension-protocol.md).
const UPGRADE_REFUSALS = {
  400: 'not a valid WebSocket upgrade',
  403: "this Origin is not in the gateway's allowedOrigins",
  404: "wrong path: the gateway's default is /wa-ext-ws",
  426: 'not a WebSocket upgrade',
  503: 'too many connections waiting to authenticate; it will take this one again',
};
// Results that could not be sent (the connection closed while the handler ran), kept
// for the next authentication: the gateway takes a late result from any session of the
// key, so the backend learns what happened.
const MAX_UNDELIVERED_RESULTS = 1000;

const DEFAULTS = {
  heartbeatInterval: 25_000,
  reconnectBaseDelay: 1_000,
  maxReconnectDelay: 30_000,
  receiveRetryInterval: 5_000,
  maxQueuedAcks: 1_000,
  maxPendingReceives: 100,
};

function codedError(code, message, extra) {
  return Object.assign(new Error(message), { code }, extra);
}

function positive(options, name) {
  const value = options[name] ?? DEFAULTS[name];
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    throw new TypeError(`GatewayClient: option '${name}' must be a positive number of milliseconds or items`);
  }
  return value;
}

export class GatewayClient {
  #url;
  #apiKey;
  #extensionVersion;
  #browser;
  #WebSocket;
  #random;
  #timing;

  #listeners = new Map(EVENTS.map((name) => [name, new Set()]));
  #handlers = new Map();
  #running = false;
  #ws = null;
  #sessionId = null;
  #limits = null; // what the gateway said it takes, in its auth reply
  #attempt = 0;
  #failedConnects = 0; // connects in a row that ended without an open
  #reconnectTimer = null;
  #heartbeatTimer = null;
  #refusal = null; // the error frame that preceded a 1008 close, if any
  #status = null;
  #queuedAcks = [];
  #undeliveredResults = [];
  #pendingReceives = new Map();
  #seenCommands = new Set();
  #closeWaiters = new Map(); // socket -> resolvers of close() calls waiting for it

  /**
   * @param {object} options
   *   url, apiKey (required); extensionVersion, browser (reported to the gateway);
   *   WebSocket (a class; default globalThis.WebSocket);
   *   heartbeatInterval, reconnectBaseDelay, maxReconnectDelay, receiveRetryInterval
   *   (ms; defaults 25 s, 1 s, 30 s, 5 s); maxQueuedAcks, maxPendingReceives;
   *   random (a function returning [0, 1), for the reconnect jitter; default Math.random).
   */
  constructor(options = {}) {
    const { url, apiKey, extensionVersion = 'unknown', browser = 'unknown', random = Math.random } = options;
    if (typeof url !== 'string' || !/^wss?:\/\//i.test(url)) {
      throw new TypeError("GatewayClient: option 'url' must be a ws:// or wss:// URL");
    }
    if (typeof apiKey !== 'string' || apiKey === '') {
      throw new TypeError("GatewayClient: option 'apiKey' must be a non-empty string");
    }
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== 'function') {
      throw new TypeError(
        "GatewayClient: no global WebSocket here; pass a WebSocket class as option 'WebSocket' (e.g. from the 'ws' package)",
      );
    }
    if (typeof random !== 'function') throw new TypeError("GatewayClient: option 'random' must be a function");
    this.#url = url;
    this.#apiKey = apiKey;
    this.#extensionVersion = String(extensionVersion);
    this.#browser = String(browser);
    this.#WebSocket = WebSocketClass;
    this.#random = random;
    this.#timing = Object.fromEntries(Object.keys(DEFAULTS).map((name) => [name, positive(options, name)]));
  }

  /** The gateway's id for the current session, or null while not authenticated. */
  get sessionId() {
    return this.#sessionId;
  }

  /** True while a session is authenticated. */
  get connected() {
    return this.#sessionId !== null;
  }

  /**
   * What the gateway takes, from its last auth reply: { maxPayload, maxMediaBytes } in
   * bytes, or null (not authenticated yet, or a gateway that does not say).
   */
  get limits() {
    return this.#limits;
  }

  on(name, listener) {
    this.#listenersOf(name).add(listener);
    return this;
  }

  off(name, listener) {
    this.#listenersOf(name).delete(listener);
    return this;
  }

  /**
   * Registers the function that executes one kind of command: a built-in one
   * (send-message, ...) or a custom one (`^[a-z][a-z0-9-]{0,63}$`, not a frame type of
   * the protocol), which the gateway learns of at the next authentication.
   */
  handle(type, handler) {
    if (!COMMANDS.includes(type) && !isCustomType(type)) {
      throw new TypeError(
        `GatewayClient.handle: '${type}' is neither a built-in command (${COMMANDS.join(', ')}) nor a custom command type (^[a-z][a-z0-9-]{0,63}$, not a frame type of the protocol)`,
      );
    }
    // A custom type one or two letters off a built-in command is taken for a typo of it:
    // registered as custom, the built-in one would have no handler.
    const meant = COMMANDS.find((command) => command !== type && editDistance(command, type) <= 2);
    if (meant) {
      throw new TypeError(`GatewayClient.handle: unknown command '${type}'; did you mean '${meant}'?`);
    }
    if (typeof handler !== 'function') throw new TypeError('GatewayClient.handle: handler must be a function');
    this.#handlers.set(type, handler);
    return this;
  }

  /** Opens the connection and keeps it up (reconnecting) until close(). */
  connect() {
    if (this.#running) return this;
    this.#running = true;
    this.#attempt = 0;
    this.#failedConnects = 0;
    this.#open();
    return this;
  }

  /**
   * Stops for good: closes the socket with 1000, stops reconnecting, rejects pending
   * receive() calls. Resolves once the socket is closed.
   */
  close() {
    this.#running = false;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#endSession();
    for (const [messageId, pending] of this.#pendingReceives) {
      clearTimeout(pending.timer);
      pending.reject(
        codedError('CLIENT_CLOSED', `receive(${messageId}): the client was closed before the gateway acknowledged it`),
      );
    }
    this.#pendingReceives.clear();
    const ws = this.#ws;
    if (!ws) return Promise.resolve();
    const closed = new Promise((resolve) => {
      this.#closeWaiters.set(ws, [...(this.#closeWaiters.get(ws) ?? []), resolve]);
    });
    try {
      ws.close(NORMAL_CLOSURE, 'Client closed');
    } catch {
      // Some implementations throw when closing a socket that is still connecting;
      // its close event follows anyway.
    }
    return closed;
  }

  /** Remembers WhatsApp Web's state and reports it now and after every (re)authentication. */
  setStatus({ whatsappLoggedIn, ready, status } = {}) {
    this.#status = { whatsappLoggedIn: Boolean(whatsappLoggedIn), ready: Boolean(ready) };
    if (typeof status === 'string') this.#status.status = status;
    if (this.connected) this.#sendStatus();
  }

  /** Reports a delivery acknowledgement of a sent message ('server', 'delivered', 'read', 'played'). */
  ack(requestId, ack, messageId) {
    const frame = { type: 'message-ack', requestId: String(requestId), ack: String(ack) };
    if (messageId !== undefined && messageId !== null) frame.messageId = String(messageId);
    if (this.connected && this.#send(frame)) return;
    this.#queuedAcks.push(frame);
    if (this.#queuedAcks.length > this.#timing.maxQueuedAcks) this.#queuedAcks.shift();
  }

  /**
   * Forwards a message WhatsApp Web received; resolves with { messageId } when the
   * gateway acknowledges it, re-sending until then (one made while disconnected goes
   * out after the next authentication). close() rejects it.
   */
  receive(message) {
    const messageId = message?.messageId;
    if (typeof messageId !== 'string' || messageId === '') {
      return Promise.reject(new TypeError('GatewayClient.receive: message.messageId must be a non-empty string'));
    }
    const existing = this.#pendingReceives.get(messageId);
    if (existing) return existing.promise;
    if (this.#pendingReceives.size >= this.#timing.maxPendingReceives) {
      return Promise.reject(
        codedError(
          'QUEUE_FULL',
          `GatewayClient.receive: ${this.#pendingReceives.size} messages already wait for the gateway`,
        ),
      );
    }
    let text;
    try {
      text = JSON.stringify({ type: 'incoming-message', data: message });
    } catch (error) {
      return Promise.reject(new TypeError(`GatewayClient.receive: the message cannot be sent as JSON (${describe(error, 'unknown error')})`));
    }
    const pending = { messageId, text, bytes: utf8Length(text), timer: null };
    const tooBig = this.#tooBig(pending);
    if (tooBig) return Promise.reject(tooBig);
    pending.promise = new Promise((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    this.#pendingReceives.set(messageId, pending);
    if (this.connected) this.#sendReceive(pending);
    return pending.promise;
  }

  /**
   * The INVALID_MESSAGE error for a receive() whose frame the gateway would refuse by its
   * size (it closes the connection, 1009: sending it would only reconnect and send it
   * again), or null. Known once the gateway has said its limits.
   */
  #tooBig(pending) {
    const max = this.#limits?.maxPayload;
    if (max === undefined || pending.bytes <= max) return null;
    return codedError(
      'INVALID_MESSAGE',
      `receive(${pending.messageId}): its frame is ${pending.bytes} bytes, more than the gateway takes (maxPayload ${max})`,
      { messageId: pending.messageId },
    );
  }

  // ---- connection ----

  #open() {
    this.#reconnectTimer = null;
    this.#refusal = null;
    let ws;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (error) {
      this.#emit('error', codedError('CONNECTION_FAILED', `Cannot open ${this.#url}: ${error?.message ?? error}`));
      this.#scheduleReconnect(this.#nextDelay());
      return;
    }
    this.#ws = ws;
    let authenticated = false;
    // Why the upgrade failed, as far as the WebSocket implementation tells.
    const attempt = { opened: false, status: null, unreachable: false };
    ws.onopen = () => {
      attempt.opened = true;
      this.#failedConnects = 0;
      this.#emit('open');
      // `fields`: it reads media from `dataUrl` alone, so the gateway sends it once, there.
      const data = { extensionVersion: this.#extensionVersion, browser: this.#browser, fields: 'dataUrl' };
      // The custom commands it handles: the gateway sends each only to sessions that list it.
      const commands = [...this.#handlers.keys()].filter(isCustomType);
      if (commands.length > 0) data.commands = commands;
      this.#send({ type: 'auth', apiKey: this.#apiKey, data });
    };
    ws.onmessage = (event) => {
      if (this.#ws !== ws || typeof event.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      // The gateway may answer `auth` twice (`auth-success`, then `authenticated`); the first counts.
      if (frame.type === 'auth-success' || frame.type === 'authenticated') {
        if (!authenticated) {
          authenticated = true;
          this.#onAuthenticated(frame.sessionId, frame.limits);
        }
        return;
      }
      if (authenticated) this.#onFrame(ws, frame);
      else if (frame.type === 'error') this.#refusal = frame;
    };
    ws.onerror = (event) => {
      // Always followed by a close event, which reports it. Node's `ws` names the HTTP
      // status the gateway answered the upgrade with, or the network error; browsers
      // say neither.
      if (attempt.opened) return;
      const text = `${event?.message ?? ''} ${event?.error?.message ?? ''} ${event?.error?.code ?? ''}`;
      attempt.status ??= upgradeStatus(text);
      attempt.unreachable ||= UNREACHABLE.test(text);
    };
    ws.onclose = (event) => this.#onClose(ws, event, attempt);
  }

  #onAuthenticated(sessionId, limits) {
    this.#sessionId = typeof sessionId === 'string' ? sessionId : '';
    this.#limits = limitsOf(limits);
    this.#attempt = 0;
    this.#heartbeatTimer = setInterval(() => this.#send({ type: 'heartbeat' }), this.#timing.heartbeatInterval);
    this.#emit('authenticated', { sessionId: this.#sessionId, limits: this.#limits });
    if (this.#status) this.#sendStatus();
    // Results before acks: an ack counts only once its result is in.
    const results = this.#undeliveredResults;
    this.#undeliveredResults = [];
    for (const frame of results) this.#sendOrKeep(frame);
    const acks = this.#queuedAcks;
    this.#queuedAcks = [];
    for (const frame of acks) this.#send(frame);
    for (const pending of this.#pendingReceives.values()) this.#sendReceive(pending);
  }

  #onClose(ws, event, attempt) {
    const waiters = this.#closeWaiters.get(ws) ?? [];
    this.#closeWaiters.delete(ws);
    for (const resolve of waiters) resolve();
    // A socket replaced by connect() after close() has nothing more to report.
    if (this.#ws !== ws) return;
    this.#ws = null;
    this.#endSession();
    const code = event?.code ?? 1006;
    const reason = event?.reason ?? '';
    const willReconnect = this.#running;
    let reconnectDelay = null;
    if (willReconnect) {
      reconnectDelay = code === POLICY_VIOLATION ? this.#timing.maxReconnectDelay : this.#nextDelay();
    }
    this.#emit('close', { code, reason, willReconnect, reconnectDelay });
    if (willReconnect && code === POLICY_VIOLATION) {
      const refusal = this.#refusal;
      const errorCode = refusal ? (refusal.code ?? refusal.error?.code) : undefined;
      const message = refusal ? (refusal.message ?? refusal.error?.message) : undefined;
      this.#emit(
        'error',
        codedError(
          errorCode ?? 'CONNECTION_REFUSED',
          `The gateway refused the connection (1008${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}); next try in ${reconnectDelay} ms`,
          { closeCode: code },
        ),
      );
    }
    // Not after close(): the user stopped it.
    if (!attempt.opened && willReconnect && !attempt.unreachable) this.#connectFailed(attempt.status, reconnectDelay);
    if (willReconnect) this.#scheduleReconnect(reconnectDelay);
  }

  /**
   * A connect that ended without an open, and not because the gateway is known to be
   * down (that the backoff handles quietly): reported at once when the HTTP status is
   * known (a wrong path or Origin will not fix itself), else after a few in a row.
   */
  #connectFailed(status, reconnectDelay) {
    this.#failedConnects += 1;
    if (status === null && this.#failedConnects < FAILED_CONNECTS_BEFORE_ERROR) return;
    // Without its query: whatever a deployment put there stays out of logs.
    const url = this.#url.replace(/[?#].*$/, '');
    const next = `; next try in ${reconnectDelay} ms`;
    const message =
      status === null
        ? `Could not connect to ${url} (${this.#failedConnects} tries in a row): the gateway is down or unreachable, ` +
          `or it refused the upgrade (404 for a wrong path, 403 for an Origin not in allowedOrigins)${next}`
        : `The gateway answered the WebSocket upgrade at ${url} with HTTP ${status}` +
          `${UPGRADE_REFUSALS[status] ? ` (${UPGRADE_REFUSALS[status]})` : ''}${next}`;
    this.#emit('error', codedError('CONNECTION_FAILED', message, { status, failedConnects: this.#failedConnects }));
  }

  #endSession() {
    this.#sessionId = null;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    for (const pending of this.#pendingReceives.values()) clearTimeout(pending.timer);
  }

  // Full jitter: uniform in [0, min(max, base * 2^attempt)), no floor.
  #nextDelay() {
    const { reconnectBaseDelay, maxReconnectDelay } = this.#timing;
    const ceiling = Math.min(maxReconnectDelay, reconnectBaseDelay * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 60);
    return Math.floor(this.#random() * ceiling);
  }

  #scheduleReconnect(delay) {
    this.#reconnectTimer = setTimeout(() => {
      if (this.#running) this.#open();
    }, delay);
  }

  #send(frame) {
    return this.#sendText(JSON.stringify(frame));
  }

  #sendText(text) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  // ---- frames of an authenticated session ----

  #onFrame(ws, frame) {
    switch (frame.type) {
      case 'ping':
        this.#send({ type: 'heartbeat' });
        return;
      case 'incoming-ack':
        this.#settleReceive(frame.messageId, (pending, messageId) => pending.resolve({ messageId }));
        return;
      case 'error':
        this.#onErrorFrame(frame);
        return;
      default:
        if (COMMANDS.includes(frame.type)) this.#runCommand(ws, frame);
        else if (isCustomType(frame.type) && typeof frame.requestId === 'string') this.#runCustom(frame);
    }
  }

  #onErrorFrame(frame) {
    const code = frame.code ?? frame.error?.code ?? 'SERVER_ERROR';
    const message = frame.message ?? frame.error?.message ?? 'The gateway reported an error';
    const messageId = frame.messageId ?? frame.error?.messageId ?? frame.data?.messageId;
    if (code === 'INVALID_MESSAGE' && this.#pendingReceives.has(messageId)) {
      this.#settleReceive(messageId, (pending) => pending.reject(codedError(code, message, { messageId })));
      return;
    }
    this.#emit('error', codedError(code, message, { frame }));
  }

  #settleReceive(messageId, settle) {
    const pending = this.#pendingReceives.get(messageId);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.#pendingReceives.delete(messageId);
    settle(pending, messageId);
  }

  #sendReceive(pending) {
    clearTimeout(pending.timer);
    // Made before the limits were known: refused now rather than sent.
    const tooBig = this.#tooBig(pending);
    if (tooBig) {
      this.#settleReceive(pending.messageId, (waiting) => waiting.reject(tooBig));
      return;
    }
    this.#sendText(pending.text);
    pending.timer = setTimeout(() => {
      if (this.connected) this.#sendReceive(pending);
    }, this.#timing.receiveRetryInterval);
  }

  /** False for a command already taken on (answered at most once). */
  #remember(requestId) {
    if (typeof requestId !== 'string' || this.#seenCommands.has(requestId)) return false;
    this.#seenCommands.add(requestId);
    if (this.#seenCommands.size > REMEMBERED_COMMANDS) {
      this.#seenCommands.delete(this.#seenCommands.values().next().value);
    }
    return true;
  }

  #runCommand(ws, frame) {
    const requestId = frame.requestId;
    if (!this.#remember(requestId)) return;
    const type = frame.type;
    const data = { ...(frame.data ?? {}) };
    const mediaField = MEDIA_FIELDS.find((field) => typeof data[field] === 'string');
    if (data.dataUrl === undefined && mediaField) data.dataUrl = data[mediaField];
    for (const field of MEDIA_FIELDS) delete data[field];
    const handler = this.#handlers.get(type);
    const work = handler
      ? new Promise((resolve) => resolve(handler(data, { requestId, type })))
      : Promise.reject(new Error(`This extension has no handler for '${type}'`));
    work
      .then((outcome) => {
        if (outcome && outcome.success === false) {
          return failure(outcome.error, 'The extension reported a failure', outcome.code ?? outcome.error?.code);
        }
        return { success: true, messageId: outcome?.messageId ?? null };
      })
      .catch((error) => failure(error, 'The handler failed', error?.code))
      .then((result) => this.#sendOrKeep({ type: 'message-result', requestId, ...result, timestamp: Date.now() }));
  }

  /** A custom command: the handler's return value is the result's `data`; a throw, its failure. */
  #runCustom(frame) {
    const { requestId, type } = frame;
    if (!this.#remember(requestId)) return;
    const handler = this.#handlers.get(type);
    const work = handler
      ? new Promise((resolve) => resolve(handler(frame.data ?? null, { requestId, type })))
      : Promise.reject(new Error(`This extension has no handler for '${type}'`));
    work
      .then((data) => this.#answer(requestId, data === undefined ? null : data))
      .catch((error) => ({ type: 'command-result', requestId, ...failure(error, 'The handler failed', error?.code) }))
      .then((frame) => this.#sendOrKeep({ ...frame, timestamp: Date.now() }));
  }

  /**
   * A custom command's successful result, unless its data cannot go: not JSON, or a frame
   * the gateway would refuse by its size (it closes the connection, 1009, and the result
   * would be sent again after every reconnect). Then the command fails, saying why.
   */
  #answer(requestId, data) {
    const frame = { type: 'command-result', requestId, success: true, data };
    let text;
    try {
      text = JSON.stringify(frame);
    } catch (error) {
      throw new Error(`The handler's answer is not JSON: ${describe(error, 'it cannot be serialized')}`);
    }
    const max = this.#limits?.maxPayload;
    const bytes = utf8Length(text);
    if (max !== undefined && bytes > max) {
      throw Object.assign(new Error(`The handler's answer is ${bytes} bytes as a frame, more than the gateway takes (maxPayload ${max})`), {
        code: 'RESULT_TOO_LARGE',
      });
    }
    return frame;
  }

  /** Sends a result now if authenticated, else keeps it for the next authentication. */
  #sendOrKeep(frame) {
    if (this.connected && this.#send(frame)) return;
    this.#undeliveredResults.push(frame);
    if (this.#undeliveredResults.length > MAX_UNDELIVERED_RESULTS) this.#undeliveredResults.shift();
  }

  // ---- events ----

  #listenersOf(name) {
    const set = this.#listeners.get(name);
    if (!set) throw new TypeError(`GatewayClient: unknown event '${name}' (one of ${EVENTS.join(', ')})`);
    return set;
  }

  #emit(name, payload) {
    for (const listener of [...this.#listeners.get(name)]) {
      try {
        listener(payload);
      } catch (error) {
        // A listener's bug must not break the connection; report it, but never in a loop.
        if (name !== 'error') {
          this.#emit(
            'error',
            codedError('LISTENER_ERROR', `A '${name}' listener threw: ${describe(error, 'unknown error')}`, {
              cause: error,
            }),
          );
        }
      }
    }
  }

  #sendStatus() {
    this.#send({ type: 'status', data: { ...this.#status } });
  }
}

/** Insertions, deletions, substitutions and swaps of neighbours from `a` to `b`. */
function editDistance(a, b) {
  const rows = [[...Array(b.length + 1).keys()]];
  for (let i = 1; i <= a.length; i++) {
    rows[i] = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      rows[i][j] = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        rows[i][j] = Math.min(rows[i][j], rows[i - 2][j - 2] + 1);
      }
    }
  }
  return rows[a.length][b.length];
}

function isCustomType(type) {
  return typeof type === 'string' && CUSTOM_TYPE.test(type) && !FRAME_TYPES.includes(type);
}

/** A failed result: the reason's text, and its `code` when it is one upper-case word. */
function failure(reason, fallback, code) {
  const result = { success: false, error: describe(reason, fallback) };
  if (typeof code === 'string' && FAILURE_CODE.test(code)) result.code = code;
  return result;
}

/** The HTTP status in a WebSocket error's text, if the implementation gives one (`ws` does). */
function upgradeStatus(text) {
  const found = /\b(?:response|status)\D{0,20}\b([1-5]\d\d)\b/i.exec(text);
  return found ? Number(found[1]) : null;
}

/** The `limits` of an auth reply, if it has usable ones. */
function limitsOf(limits) {
  const size = (n) => typeof n === 'number' && Number.isFinite(n) && n > 0;
  if (!limits || !size(limits.maxPayload) || !size(limits.maxMediaBytes)) return null;
  return { maxPayload: limits.maxPayload, maxMediaBytes: limits.maxMediaBytes };
}

/** Bytes of `text` in UTF-8, as it goes on the wire. */
function utf8Length(text) {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) {
      bytes += 1;
    } else if (c >= 0xd800 && c <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      // A surrogate pair: 4 bytes for its two units.
      bytes += 2;
      i += 1;
    } else {
      // Also a lone surrogate, which goes out as U+FFFD.
      bytes += 2;
    }
  }
  return bytes;
}

function describe(error, fallback) {
  if (typeof error === 'string' && error !== '') return error;
  if (error && typeof error.message === 'string' && error.message !== '') return error.message;
  return fallback;
}
