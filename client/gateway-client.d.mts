// Types of whatsapp-ws-extension-gateway/client (client/gateway-client.mjs).

export type CommandType = 'send-message' | 'send-image' | 'send-video' | 'send-document';
export type Ack = 'server' | 'delivered' | 'read' | 'played';

/** What a command handler receives; media, whichever field carried it, is in `dataUrl`. */
export interface CommandData {
  /** The recipient: a phone number (E.164), or `chatId` instead. */
  phoneNumber?: string;
  /** '<digits>@c.us' (a person), '<digits>-<digits>@g.us' or '<id>@g.us' (a group), when the backend named a chat. */
  chatId?: string;
  /** send-message */
  message?: string;
  /** send-image, send-video, send-document: a data: URL */
  dataUrl?: string;
  caption?: string;
  mimeType?: string;
  /** send-document */
  documentName?: string;
  [field: string]: unknown;
}

export interface CommandContext<Type extends string = CommandType> {
  requestId: string;
  type: Type;
}

/**
 * Why a command failed, as the backend sees it in EXTENSION_ERROR's details.extensionCode:
 * one of these or any other upper-case word (RATE_LIMITED and LOGGED_OUT are retryable).
 */
export type FailureCode = 'NOT_ON_WHATSAPP' | 'LOGGED_OUT' | 'RATE_LIMITED' | 'INVALID_MEDIA' | 'CHAT_NOT_FOUND' | (string & {});

/**
 * What a handler returns: success (with WhatsApp's id of the message, if known) or a
 * failure. A handler may also throw; an error with a `code` (one upper-case word) reports it.
 */
export type CommandOutcome =
  | { success?: true; messageId?: string | null }
  | { success: false; error?: string | Error; code?: FailureCode }
  | void;

export type CommandHandler = (data: CommandData, context: CommandContext) => CommandOutcome | Promise<CommandOutcome>;

/**
 * A custom command's handler: gets the `data` the backend passed to `request()`; its return
 * value (anything JSON can carry) is the `data` the backend's promise resolves with. To fail,
 * throw (an error with a `code` reports it).
 */
export type CustomCommandHandler<Data = any, Answer = unknown> = (
  data: Data,
  context: CommandContext<string>,
) => Answer | Promise<Answer>;

export interface Status {
  whatsappLoggedIn: boolean;
  ready: boolean;
  /** Free text shown in the gateway's session list. */
  status?: string;
}

export interface IncomingMessage {
  /** WhatsApp's id of the message; the gateway de-duplicates by it. */
  messageId: string;
  from: string;
  chatId?: string;
  body?: string;
  /** ms since the epoch */
  timestamp: number;
  media?: { mimeType: string; dataUrl?: string; fileName?: string };
  [field: string]: unknown;
}

/**
 * A WebSocket class with the browser's API (`onopen`, `onmessage`, `onclose`, `send`,
 * `close`, `readyState`): `globalThis.WebSocket`, or `ws`'s default export in Node.
 */
export type WebSocketClass = new (url: string) => any;

export interface GatewayClientOptions {
  /** `ws://host:port/wa-ext-ws` or `wss://...` */
  url: string;
  apiKey: string;
  /** Reported to the gateway and listed by `getActiveSessions()`. */
  extensionVersion?: string;
  browser?: string;
  /** Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketClass;
  /** ms between unprompted heartbeats while authenticated. Default 25000. */
  heartbeatInterval?: number;
  /** ms; the reconnect delay is uniform in [0, min(maxReconnectDelay, reconnectBaseDelay × 2^attempt)). Default 1000. */
  reconnectBaseDelay?: number;
  /** ms; also the wait after a 1008 close (refused key, session limit, auth timeout). Default 30000. */
  maxReconnectDelay?: number;
  /** ms between re-sends of an unacknowledged `receive()`. Default 5000. */
  receiveRetryInterval?: number;
  /** Acks kept while disconnected; the oldest are dropped beyond it. Default 1000. */
  maxQueuedAcks?: number;
  /** `receive()` calls waiting for the gateway; one more rejects with `QUEUE_FULL`. Default 100. */
  maxPendingReceives?: number;
  /** Source of the reconnect jitter, returning a number in [0, 1). Default `Math.random`. */
  random?: () => number;
}

/** An `Error` with a `code`: `AUTHENTICATION_FAILED`, `MAX_SESSIONS_EXCEEDED`, `CONNECTION_REFUSED`, any gateway error code, `LISTENER_ERROR`, `CONNECTION_FAILED`... */
export interface GatewayClientError extends Error {
  code: string;
  /** The gateway's error frame, when the error came from one. */
  frame?: Record<string, unknown>;
  /** 1008 when the gateway refused the connection. */
  closeCode?: number;
  /**
   * `CONNECTION_FAILED`: the HTTP status the gateway answered the upgrade with (404 wrong
   * path, 403 refused Origin), or null where it is not known (browsers hide it).
   */
  status?: number | null;
  /** `CONNECTION_FAILED`: connects in a row that ended without an open. */
  failedConnects?: number;
  /** The message a `receive()` rejected with `INVALID_MESSAGE` was for. */
  messageId?: string;
}

export interface CloseEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
  /** ms until the next try, or null when not reconnecting. */
  reconnectDelay: number | null;
}

/** What the gateway takes, from its auth reply. */
export interface GatewayLimits {
  /** The largest frame in bytes; a larger one closes the connection (1009). */
  maxPayload: number;
  /** The largest media of an incoming message, in bytes. */
  maxMediaBytes: number;
}

export interface GatewayClientEvents {
  open: () => void;
  /** `limits` is null from a gateway that does not send them. */
  authenticated: (event: { sessionId: string; limits: GatewayLimits | null }) => void;
  close: (event: CloseEvent) => void;
  error: (error: GatewayClientError) => void;
}

export class GatewayClient {
  constructor(options: GatewayClientOptions);
  /** The gateway's id of the current session; null while not authenticated. */
  readonly sessionId: string | null;
  /** True while a session is authenticated. */
  readonly connected: boolean;
  /** What the gateway takes, from its last auth reply; null before it (or from a gateway that does not say). */
  readonly limits: GatewayLimits | null;
  on<E extends keyof GatewayClientEvents>(name: E, listener: GatewayClientEvents[E]): this;
  off<E extends keyof GatewayClientEvents>(name: E, listener: GatewayClientEvents[E]): this;
  /** A built-in command's handler. */
  handle(type: CommandType, handler: CommandHandler): this;
  /**
   * A custom command's handler (`^[a-z][a-z0-9-]{0,63}$`, not a frame type of the protocol):
   * listed to the gateway at the next authentication, so register it before `connect()`.
   * A name one or two letters off a built-in command is taken for a typo of it (a TypeError);
   * in the types, any `send-…` name other than the built-in ones is (a compile error: to name
   * a custom command so, pass its type as a `string`).
   */
  handle<Type extends string, Data = any, Answer = unknown>(
    type: Type extends `send-${string}` ? never : Type,
    handler: CustomCommandHandler<Data, Answer>,
  ): this;
  /** Connects and stays connected (reconnecting with backoff) until `close()`. */
  connect(): this;
  /** Closes with 1000, stops reconnecting, rejects pending `receive()` calls (`CLIENT_CLOSED`). */
  close(): Promise<void>;
  /** Sent now if connected, and again after every authentication. */
  setStatus(status: Status): void;
  /** Sent now if connected, else queued until the next authentication. */
  ack(requestId: string, ack: Ack, messageId?: string): void;
  /**
   * Resolves when the gateway answers `incoming-ack`; re-sent every `receiveRetryInterval` and after each reconnect.
   * Rejects with `INVALID_MESSAGE` (never sent) if its frame would be larger than the gateway's `maxPayload`.
   */
  receive(message: IncomingMessage): Promise<{ messageId: string }>;
}
