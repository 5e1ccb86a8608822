'use strict';
// Test harness: a real gateway on loopback and simulated extensions speaking any of
// the three dialects of docs/extension-protocol.md over real WebSocket connections.
const WebSocket = require('ws');
const { WhatsAppGateway } = require('..');

const GOOD_KEY = 'test-key-0123456789';
const OTHER_KEY = 'other-key-0123456789';

/**
 * Starts a gateway on 127.0.0.1 with an ephemeral port. Every event and error is
 * recorded. `validKeys` decides validation unless `validateApiKey` is given.
 */
async function startGateway(options = {}) {
  const events = [];
  const errors = [];
  const validKeys = options.validKeys ?? [GOOD_KEY, OTHER_KEY];
  const { validKeys: _ignored, ...rest } = options;
  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: async (apiKey) =>
      validKeys.includes(apiKey) ? { valid: true, userId: `user-${apiKey.slice(0, 4)}` } : { valid: false },
    onMessageLog: (event) => events.push(event),
    onError: (error) => errors.push(error),
    ...rest,
  });
  await gateway.start();
  const { port } = gateway.address();
  const url = `ws://127.0.0.1:${port}${options.path ?? '/wa-ext-ws'}`;
  return { gateway, port, url, events, errors };
}

/** Resolves when `predicate()` is truthy; polls, bounded by `ms`. */
async function waitFor(predicate, ms = 3000, what = 'condition') {
  const until = Date.now() + ms;
  for (;;) {
    const value = predicate();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Resolves with the first truthy value of `check()` (sync or async; a throw counts as
 * not yet); bounded by `ms`, the last value or error seen in the timeout's message.
 */
async function eventually(check, ms, what, everyMs = 25) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > until) {
      const seen = last instanceof Error ? `${last.code ?? ''} ${last.message}` : JSON.stringify(last);
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last seen: ${seen})`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * A simulated browser extension.
 * dialect: 'v1' (auth / auth-success / imageDataUrl), 'doc' (auth / authenticated /
 * dataUrl), 'guide' (authenticate / authenticated / status text).
 * respond(command) returns the result fields to send ({ success, messageId, error }),
 * or null to stay silent. `commands` lists custom command types at auth; a custom
 * command is answered with a `command-result` (by default echoing its data).
 */
class FakeExtension {
  constructor(url, { dialect = 'v1', apiKey = GOOD_KEY, respond, origin, commands } = {}) {
    this.url = url;
    this.dialect = dialect;
    this.apiKey = apiKey;
    this.respond =
      respond ??
      ((command) =>
        command.type.startsWith('send-')
          ? { success: true, messageId: `msg-${command.requestId.slice(0, 8)}` }
          : { success: true, data: { echo: command.data ?? null } });
    this.origin = origin;
    this.listed = commands;
    this.frames = [];
    this.commands = [];
    this.sessionId = null;
    this.closed = null;
  }

  /** Opens the socket; resolves on open, rejects if the upgrade is refused. */
  open() {
    this.ws = new WebSocket(this.url, this.origin ? { origin: this.origin } : undefined);
    this.ws.on('message', (data) => this.handleFrame(data.toString()));
    const closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
      });
    });
    this.whenClosed = closed;
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
  }

  send(frame) {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Sends the dialect's auth frame and waits for the reply it expects. */
  async authenticate() {
    const listed = this.listed === undefined ? {} : { commands: this.listed };
    if (this.dialect === 'guide') this.send({ type: 'authenticate', apiKey: this.apiKey, ...(this.listed && { data: listed }) });
    else this.send({ type: 'auth', apiKey: this.apiKey, data: { extensionVersion: '1.0.0', browser: 'Chrome', ...listed } });
    const expected = this.dialect === 'v1' ? 'auth-success' : 'authenticated';
    const reply = await this.next((f) => f.type === expected || f.type === 'error');
    if (reply.type === 'error') throw Object.assign(new Error(reply.message), { frame: reply });
    this.sessionId = reply.sessionId;
    return reply;
  }

  /** Reports WhatsApp Web as logged in and ready (or not), in the dialect's shape. */
  sendStatus(ready = true) {
    if (this.dialect === 'guide') {
      this.send({ type: 'status', status: ready ? 'WhatsApp Web is logged in' : 'WhatsApp Web is not logged in', ready });
    } else {
      this.send({ type: 'status', data: { whatsappLoggedIn: ready, ready } });
    }
  }

  /** open + authenticate + ready status, then waits until the gateway sees it. */
  async connectReady(gateway) {
    await this.open();
    await this.authenticate();
    this.sendStatus(true);
    await waitFor(
      () => gateway.getActiveSessions(this.apiKey).some((s) => s.sessionId === this.sessionId && s.deviceActive),
      3000,
      'session to become active',
    );
    return this;
  }

  /** The first frame (already received or future) matching `predicate`. */
  next(predicate = () => true, ms = 3000) {
    const seen = this.frames.find((f) => !f.consumed && predicate(f.frame));
    if (seen) {
      seen.consumed = true;
      return Promise.resolve(seen.frame);
    }
    return waitFor(() => {
      const found = this.frames.find((f) => !f.consumed && predicate(f.frame));
      if (found) found.consumed = true;
      return found?.frame;
    }, ms, 'a frame from the gateway');
  }

  result(requestId, fields) {
    this.send({ type: 'message-result', requestId, timestamp: Date.now(), ...fields });
  }

  commandResult(requestId, fields) {
    this.send({ type: 'command-result', requestId, ...fields });
  }

  close(code = 1000) {
    this.ws.close(code);
    return this.whenClosed;
  }

  /** Records a frame from the gateway, answers pings and (per `respond`) commands. */
  handleFrame(text) {
    const frame = JSON.parse(text);
    this.frames.push({ frame, consumed: false });
    if (frame.type === 'ping') this.send({ type: 'heartbeat', timestamp: Date.now() });
    if (typeof frame.type === 'string' && frame.type.startsWith('send-')) {
      this.commands.push(frame);
      const answer = this.respond(frame);
      if (answer) this.result(frame.requestId, answer);
    } else if (typeof frame.requestId === 'string' && frame.type !== 'error') {
      this.commands.push(frame);
      const answer = this.respond(frame);
      if (answer) this.commandResult(frame.requestId, answer);
    }
  }
}

const PNG_1x1 =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

module.exports = { startGateway, FakeExtension, waitFor, eventually, GOOD_KEY, OTHER_KEY, PNG_1x1 };
