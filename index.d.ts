// Types of whatsapp-ws-extension-gateway v2. The runtime is index.js over the Rust
// addon; these declarations describe the JavaScript API only.

export type DeviceSelectionStrategy = 'round-robin' | 'random' | 'least-busy';

/** How far a sent message got, lowest first (README "Delivery"). `'sent'` is the extension's result. */
export type AckLevel = 'sent' | 'server' | 'delivered' | 'read' | 'played';

/** Which reply frames and media fields the gateway writes to extensions (README: "Dialects"). */
export type ExtensionDialect = 'compat' | 'v1' | 'doc';

export type ErrorCode =
  | 'AUTHENTICATION_FAILED'
  | 'NO_ACTIVE_DEVICE'
  | 'REQUEST_TIMEOUT'
  | 'CONNECTION_LOST'
  | 'VALIDATION_ERROR'
  | 'EXTENSION_ERROR'
  | 'INVALID_API_KEY'
  | 'MAX_SESSIONS_EXCEEDED'
  | 'INVALID_PHONE_NUMBER'
  | 'INVALID_DATA'
  | 'FETCH_ERROR'
  | 'FILE_TOO_LARGE'
  | 'GATEWAY_SHUTDOWN'
  | 'MEDIA_NOT_ALLOWED'
  | 'CALLBACK_ERROR'
  | 'SERVER_ERROR'
  | 'ALREADY_RUNNING'
  | 'EADDRINUSE'
  | 'EADDRNOTAVAIL'
  | 'EACCES'
  | 'BACKPRESSURE'
  | 'QUEUE_FULL'
  | 'CLUSTER_UNAVAILABLE'
  | 'INVALID_MESSAGE'
  | 'UNKNOWN_MESSAGE_TYPE'
  | 'NOT_AUTHENTICATED'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'STORE_LOCKED'
  | 'UNSUPPORTED_COMMAND';

/** What `validateApiKey` returns; extra fields are allowed and ignored. */
export interface ApiKeyValidation {
  valid: boolean;
  userId?: string | number | null;
  /** Sent to the extension in the AUTHENTICATION_FAILED frame. */
  reason?: string;
  [key: string]: unknown;
}

/** `stop()`'s options. */
export interface StopOptions {
  /** ms that sends already written get to settle before the gateway closes (default 0; cluster mode: requestTimeout). */
  drainMs?: number;
}

export interface GatewayConfig {
  /** Port of the standalone server (default 3000; '0' picks a free port, while 0, NaN and '' mean 3000 as in v1). Ignored with `server`. */
  port?: number | string;
  /** Address to bind (default: every interface). */
  host?: string;
  /** WebSocket route (default '/wa-ext-ws'). */
  path?: string;
  /** An existing http.Server or https.Server to attach to (README: "Attaching"). */
  server?: unknown;
  /**
   * Take the client IP from X-Real-IP, else the right-most X-Forwarded-For entry; values
   * that are not IP addresses are skipped (default false). Only behind a proxy you trust.
   */
  trustProxy?: boolean;
  /** `SO_REUSEPORT` on the standalone port, so several processes can serve it (default `false`; not on Windows). */
  reusePort?: boolean;
  /** Several processes sharing one Redis act as one gateway (README "Cluster mode"). */
  cluster?: ClusterOptions;
  /** Connections upgraded but not yet authenticated, in all; one more gets HTTP 503 (default 1024). */
  maxPendingAuth?: number;
  /**
   * The same per client address, after trustProxy (default 64). Without trustProxy,
   * loopback peers (a local reverse proxy) count only in maxPendingAuth.
   */
  maxPendingAuthPerIp?: number;
  /** Largest frame accepted before auth succeeds, in bytes; more closes with 1009 (default 16384). */
  maxPreAuthPayload?: number;
  /**
   * Bytes of commands waiting to be written to one session's socket (its pacing queue
   * included); a send that would pass it waits for room, in order, and rejects with
   * BACKPRESSURE (details.sent: false) only if its timeout ends while it waits; a single
   * larger command goes once nothing is queued (default 64 MiB).
   */
  maxQueuedBytes?: number;
  /** Required. Sync or async; a throw, a rejection or no answer within authTimeout counts as invalid. */
  validateApiKey(apiKey: string): ApiKeyValidation | Promise<ApiKeyValidation>;
  /** Every event of the gateway; may be async. */
  onMessageLog?(logData: MessageLogData): void | Promise<void>;
  /** Every error, including those also thrown to callers. */
  onError?(error: GatewayError): void | Promise<void>;
  /** ms between server pings (default 30000). */
  heartbeatInterval?: number;
  /** ms of silence after which a session is dropped (default 2 x heartbeatInterval). */
  heartbeatTimeout?: number;
  /** Default ms a send waits for the extension's result (default 30000). */
  requestTimeout?: number;
  /** Sessions allowed per API key (default 10). */
  maxSessionsPerKey?: number;
  /** Default device selection (default 'round-robin'). */
  deviceSelectionStrategy?: DeviceSelectionStrategy;
  /** ms an unauthenticated connection may stay open (default 10000). */
  authTimeout?: number;
  /** Largest frame accepted from an extension, bytes (default 1 MiB). */
  maxPayload?: number;
  /** Largest decoded media of a send, bytes (default 10 MiB). */
  maxMediaBytes?: number;
  /** `Origin` values accepted on upgrade, e.g. 'chrome-extension://<id>' (default: any). */
  allowedOrigins?: string[];
  /** Directories from which file:// media may be read (default: none). */
  mediaFileRoots?: string[];
  /** Allow http(s) media from loopback, private and link-local addresses (default false). */
  mediaAllowPrivateHosts?: boolean;
  /** ms for fetching one media URL, redirects included (default 30000). */
  mediaFetchTimeout?: number;
  /** Frames written to extensions (default 'compat': every dialect at once). */
  dialect?: ExtensionDialect;
  /** ms an idempotencyKey, and a send's getMessageStatus, is remembered after its call settled (default 86400000). */
  idempotencyTtl?: number;
  /** Records of sends kept at most; the oldest settled go first, pending ones never (default 200000). */
  maxMessageStatuses?: number;
  /**
   * Durable mode (README "Durable mode"): the path of an SQLite file the gateway creates and
   * owns. It keeps idempotency keys, status records, incoming ids and every send not yet
   * written, so that start() after a crash or a deploy takes them up again. API keys are in
   * it in clear: protect it like a credential. Not with `cluster` (a TypeError).
   */
  store?: string;
  /** 'normal' (default): survives a crash of the process; 'full': also a power loss, slower. */
  storeSync?: 'normal' | 'full';
  /**
   * Space out sends per device (default off: commands leave at once). The first send to an
   * idle device leaves at once; the others wait their turn in that device's queue.
   */
  pacing?: PacingOptions;
  /** Sends waiting on one device (in its pacing queue or for room on its socket), and sends of one key waiting for a device (default 1000). */
  maxQueuedSends?: number;
  /** ms a send waits for an active device of its key before NO_ACTIVE_DEVICE (default 0). */
  waitForDevice?: number;
  /** Start/stop, Redis up/down, sessions (debug), refusals and failures, pino-style. */
  logger?: GatewayLogger;
}

export interface PacingOptions {
  /** At least this many ms between two departures to one device. */
  minIntervalMs: number;
  /** Plus a random 0..jitterMs ms (default 0). */
  jitterMs?: number;
  /** At most this many departures to one device in any 60 s (default Infinity). */
  maxPerMinute?: number;
}

interface SendOptions {
  /** Overrides the config's deviceSelectionStrategy for this call. */
  deviceSelectionStrategy?: DeviceSelectionStrategy;
  /** ms to wait for this call's result (default: config requestTimeout), counted from the call. */
  timeout?: number;
  /**
   * 1 to 200 characters. A later call with the same API key and key within
   * idempotencyTtl sends nothing and settles by the first call's state (README: "Delivery"):
   * like its success with `duplicate: true`, or like its rejection with
   * `details.duplicate` (and `details.state: 'unknown'` when it may have gone out). The
   * key with another recipient, kind, text, caption or media rejects IDEMPOTENCY_KEY_REUSED.
   */
  idempotencyKey?: string;
  /**
   * Any JSON value of at most 4096 bytes as JSON: echoed in this send's events, its
   * getMessageStatus record and a duplicate's result.
   */
  metadata?: unknown;
  /** Resolve on this ack or a higher one (default 'sent': the extension's result). */
  waitFor?: AckLevel;
  /** ms to wait for an active device, counted from the call (default: config waitForDevice; 0 turns it off). */
  waitForDevice?: number;
  /**
   * A sessionId (getActiveSessions): only that session is used, with its pacing; if it is
   * not connected and active, NO_ACTIVE_DEVICE with details.reason 'target-unavailable'
   * (after waitForDevice, which then waits for that session only).
   */
  target?: string;
}

/** Who a send is for: a phone number or a chat, exactly one of the two. */
export type SendRecipient =
  | {
      /** E.164: '+' then 2 to 15 digits, e.g. '+1234567890'. */
      phoneNumber: string;
      chatId?: undefined;
    }
  | {
      /** '<digits>@c.us' (a person), '<digits>-<digits>@g.us' or '<id>@g.us' (a group). */
      chatId: string;
      phoneNumber?: undefined;
    };

export type SendMessageData = SendOptions &
  SendRecipient & {
    message: string;
  };

export type SendImageData = SendOptions &
  SendRecipient & {
    /** A data: URL, an http(s):// URL or a file:// URL (inside mediaFileRoots). */
    dataUrl?: string;
    imageDataUrl?: string;
    imageUrl?: string;
    caption?: string;
  };

export type SendVideoData = SendOptions &
  SendRecipient & {
    dataUrl?: string;
    videoDataUrl?: string;
    videoUrl?: string;
    caption?: string;
  };

export type SendDocumentData = SendOptions &
  SendRecipient & {
    dataUrl?: string;
    documentDataUrl?: string;
    documentUrl?: string;
    /** Defaults to the URL's file name, else 'document.<ext>'. */
    documentName?: string;
    caption?: string;
  };

/** The options of `request()` (README: "Beyond the four commands"). */
export interface RequestOptions {
  /** Overrides the config's deviceSelectionStrategy for this call. */
  deviceSelectionStrategy?: DeviceSelectionStrategy;
  /** A sessionId: that session only (see SendOptions.target). */
  target?: string;
  /** ms to wait for the command-result (default: config requestTimeout), counted from the call. */
  timeout?: number;
  /** ms to wait for an active device that handles the command (default: config waitForDevice). */
  waitForDevice?: number;
  /** As for sends: a retry with the same key within idempotencyTtl is not sent again. */
  idempotencyKey?: string;
  /** Any JSON value of at most 4096 bytes as JSON, echoed in events and the status record. */
  metadata?: unknown;
  /** Space it out with the device's sends under `pacing` (default false: custom commands leave at once). */
  paced?: boolean;
}

/** What `request()` resolves with: the extension's `command-result` data. */
export interface CommandResult<T = unknown> {
  requestId: string;
  /** The `data` of the extension's command-result (null if it sent none). */
  data: T;
  deviceInfo: DeviceInfo;
  /** Present (true) when an earlier call with the same idempotencyKey settled this one. */
  duplicate?: true;
}

export interface DeviceInfo {
  sessionId: string;
  extensionVersion: string;
  browser: string;
}

export interface MessageResult {
  success: true;
  requestId: string;
  /** The extension's message id, or null. */
  messageId: string | number | null;
  timestamp: number;
  deviceInfo: DeviceInfo;
  /** The highest ack known when it resolved ('sent' on the extension's result). */
  ack: AckLevel;
  /** Present (true) when an earlier call with the same idempotencyKey settled this one. */
  duplicate?: true;
  /** On a duplicate: the first call's metadata, if it had one. */
  metadata?: unknown;
  /** Durable mode: stop() kept this send in the store and a later start() sent it. */
  recovered?: true;
}

/**
 * Where a send is: 'queued' (waiting for a device, its pace or room), 'in-flight' (its
 * command handed to a device), 'sent', 'failed' (known not to have gone out: refused
 * before writing, or the extension said it failed) or 'unknown' (it may have been
 * written, but no result came before the call settled; a late result still moves it).
 */
export type MessageState = 'queued' | 'in-flight' | 'sent' | 'failed' | 'unknown';

/** `getMessageStatus(...)`: a send's record. */
export interface MessageStatus {
  requestId: string;
  state: MessageState;
  /** null until the extension's result. */
  ack: AckLevel | null;
  /** null while it waits for a device. */
  sessionId: string | null;
  /** ms since the epoch. */
  updatedAt: number;
  /** The extension's message id, or null. */
  messageId: string | number | null;
  idempotencyKey: string | null;
  metadata: unknown;
  /** Why its call rejected, or null; `extensionCode` when the extension said why. */
  error: { code: ErrorCode; message: string; extensionCode?: string } | null;
  /** 'command': a custom command (request()). */
  kind: 'message' | 'image' | 'video' | 'document' | 'command';
  /** The recipient's phone number; null for a send to a chat, and for a custom command. */
  phoneNumber: string | null;
  /** A send to a chat: its chat id. */
  chatId?: string;
  /** A custom command: its type. */
  command?: string;
}

/** What getMessageStatus looks a send up by: its requestId, or within one API key. */
export type MessageLookup = string | { apiKey: string; idempotencyKey: string } | { apiKey: string; messageId: string | number };

/** What an extension forwards in an `incoming-message` frame; passed through as sent. */
export interface IncomingMessage {
  messageId: string;
  from: string;
  chatId?: string;
  body?: string;
  timestamp: number;
  media?: { mimeType: string; dataUrl?: string; fileName?: string };
  [key: string]: unknown;
}

export interface SessionInfo {
  sessionId: string;
  /** The extension's own status text, else 'WhatsApp Web logged in' / 'Not ready'. */
  status: string;
  ready: boolean;
  whatsappLoggedIn: boolean;
  deviceActive: boolean;
  connectedAt: number;
  lastHeartbeat: number;
  lastStatusUpdate: number | null;
  extensionVersion: string;
  browser: string;
  ip: string;
  userId: any;
  /** The custom command types it handles (listed by the extension at auth). */
  commands: string[];
}

/** v1's name for SessionInfo. */
export type ActiveSessionInfo = SessionInfo;

export type MessageLogType =
  | 'session-connected'
  | 'session-status'
  | 'session-disconnected'
  | 'heartbeat-timeout'
  | 'message-sent'
  | 'image-sent'
  | 'video-sent'
  | 'document-sent'
  | 'send-failed'
  | 'message-ack'
  | 'message-received'
  | 'command-result';

export interface MessageLogData {
  type: MessageLogType;
  /** The API key itself (the host's own callback). */
  apiKey: string;
  sessionId: string;
  userId?: any;
  timestamp: number;
  /** The recipient of a send to a phone number. */
  phoneNumber?: string;
  /** The recipient of a send to a chat (instead of phoneNumber). */
  chatId?: string;
  /** `command-result`: the custom command's type. */
  command?: string;
  requestId?: string;
  messageId?: string | number | null;
  status?: 'success' | 'failure';
  error?: string;
  details?: any;
  /** `message-ack`: the ack that arrived. */
  ack?: Exclude<AckLevel, 'sent'>;
  /** `message-received`: the incoming message. */
  data?: IncomingMessage;
  /** `*-sent` for a result that came after its call settled (it may follow its send-failed). */
  late?: true;
  /** The outcome of a send taken up again after a restart. */
  recovered?: true;
  /** `*-sent`, `send-failed`, `message-ack`: the call's metadata, if it had one. */
  metadata?: unknown;
}

/** PEM text: a string or a Buffer (any Uint8Array), or several of them. */
export type Pem = string | Uint8Array | Array<string | Uint8Array>;

/** `cluster.redis` for a master found through Redis Sentinel (README "Deploying"). */
export interface SentinelOptions {
  /** `'host:port'` of each Sentinel. */
  sentinels: string[];
  /** The master's name in Sentinel (`sentinel monitor <name> ...`). */
  name: string;
  /** ACL user and password on the Redis servers. */
  username?: string;
  password?: string;
  /** ACL user and password on the Sentinels, if they ask for one. */
  sentinelUsername?: string;
  sentinelPassword?: string;
  db?: number;
}

/** `cluster.tls`: TLS to Redis (and to the Sentinels) with a private CA or client certificates. */
export interface ClusterTlsOptions {
  /** Trusted CA certificates instead of the bundled Mozilla list. */
  ca?: Pem;
  /** A client certificate (with `key`), for `tls-auth-clients yes`. */
  cert?: Pem;
  key?: Pem;
  /** The name the server's certificate must carry (and SNI), instead of the host's. */
  servername?: string;
  /** `false` accepts any certificate: for tests only (default true). */
  rejectUnauthorized?: boolean;
}

/** Anything with these four methods: pino, winston, `console`. Called as `(fields, message)`. */
export interface GatewayLogger {
  debug(fields: Record<string, unknown>, message: string): unknown;
  info(fields: Record<string, unknown>, message: string): unknown;
  warn(fields: Record<string, unknown>, message: string): unknown;
  error(fields: Record<string, unknown>, message: string): unknown;
}

export interface ClusterOptions {
  /**
   * `redis://[user:password@]host:port[/db]` or `rediss://...` (Redis 7.0 or later), or
   * `{ sentinels, name, ... }` for a master found through Sentinel.
   */
  redis: string | SentinelOptions;
  /** TLS settings: `rediss://` alone uses the bundled Mozilla roots. */
  tls?: ClusterTlsOptions;
  /**
   * API keys stand in Redis as an HMAC-SHA-256 with this secret (recommended; the same on
   * every process), else as a SHA-256 digest.
   */
  secret?: string;
  /** Unique per live process; default host-pid-random. */
  nodeId?: string;
  /** Isolates clusters sharing one Redis (default `'wa-gw:'`). */
  keyPrefix?: string;
  /** ms after which a process that stopped renewing its lease is out (default 10000, at least 300). */
  leaseMs?: number;
}

/** A session as cluster mode lists it: which process holds it. */
export interface ClusterSessionInfo extends SessionInfo {
  nodeId: string;
}

export interface ClusterHealth {
  nodeId: string;
  /** Live processes, this one included. */
  nodes: number;
  redis: 'connected' | 'reconnecting';
}

/**
 * With `cluster` in the config, the session queries answer promises (README "Cluster mode").
 * A config whose `cluster` is decided at run time (`cluster: url ? { redis: url } : undefined`)
 * gets either, so `await` the answer. A variable typed as plain `GatewayConfig` is taken to be
 * without `cluster`, as in v1: type it `GatewayConfig & { cluster: ClusterOptions }` otherwise.
 */
type Clustered<Config, Local, Cluster> = Config extends { cluster: ClusterOptions }
  ? Promise<Cluster>
  : Config extends { cluster?: undefined }
    ? Local
    : Config extends { cluster: unknown }
      ? Local | Promise<Cluster>
      : Local;

/** What Node's `server.address()` answers for a server listening on TCP. */
export interface ServerAddress {
  address: string;
  family: string;
  port: number;
}

/**
 * `address()`: `{ port }` on the gateway's own server; attached, the server's own answer (a
 * string for a pipe or Unix socket). A `server` decided at run time gets either.
 */
type AddressOf<Config> = Config extends { server: object }
  ? ServerAddress | string | null
  : Config extends { server?: undefined | null | false | 0 | '' }
    ? { port: number } | null
    : Config extends { server: unknown }
      ? { port: number } | ServerAddress | string | null
      : { port: number } | null;

/**
 * The option objects whose keys are checked: an unknown key in one of them is a compile
 * error (the runtime warns of it too). A new nested option object is added here.
 */
type OptionObject = GatewayConfig | PacingOptions | ClusterOptions | SentinelOptions | ClusterTlsOptions;

/** What an unknown key's value must be: nothing can be, and the error names the key. */
type UnknownOption<Key> = `unknown option '${Key & string}' (a typo?)`;

/** Keys of every member of a union. */
type KeysOfAny<T> = T extends unknown ? keyof T : never;
/** The type of `Key` in whichever members of a union have it. */
type ValueAt<T, Key> = T extends unknown ? (Key extends keyof T ? T[Key] : never) : never;

/**
 * `Given` (the config as written) with each key that `Known` lacks typed as an
 * `UnknownOption`, inside nested option objects too. The constructor is generic (its
 * type says whether `cluster` is set), which turns off TypeScript's own check of excess
 * properties; this restores it. Values that are not option objects (functions, arrays,
 * servers, buffers) are left as they are.
 */
type CheckedOptions<Given, Known> = [Extract<Known, OptionObject>] extends [never]
  ? Given
  : Given extends (...args: any[]) => unknown
    ? Given
    : Given extends object
      ? {
          [Key in keyof Given]: Key extends KeysOfAny<Extract<Known, OptionObject>>
            ? CheckedOptions<Given[Key], ValueAt<Extract<Known, OptionObject>, Key>>
            : UnknownOption<Key>;
        }
      : Given;

export interface HealthCheckResponse {
  status: 'running' | 'stopped';
  activeSessions: number;
  /** ms since start(), 0 when stopped. */
  uptime: number;
  /** ms since the epoch. */
  timestamp: number;
  /** Open WebSocket connections, authenticated or not. */
  connections: number;
  /** Sends waiting for their result. */
  pendingRequests: number;
  /** Sends in pacing queues or waiting for a device (README "Delivery"). */
  queuedSends: number;
  /** The port listened on, while running; attached, the server's port once it listens. */
  port?: number;
  /** Sessions of this process (`activeSessions` is cluster-wide in cluster mode). */
  localSessions: number;
  /** Only in cluster mode. */
  cluster?: ClusterHealth;
  /** Running, not draining, and Redis connected in cluster mode: take traffic (`/readyz`). */
  ready: boolean;
  /** The core answers (`/healthz`): false means restart the process. */
  live: boolean;
}

export declare class GatewayError extends Error {
  constructor(code: ErrorCode, message: string, details?: any);
  code: ErrorCode;
  details: any;
}

/** Names the gateway emits (README "Seeing inside"); never 'error'. */
export type GatewayEventName =
  | 'event'
  | 'session-connected'
  | 'session-status'
  | 'session-disconnected'
  | 'heartbeat-timeout'
  | 'message-sent'
  | 'image-sent'
  | 'video-sent'
  | 'document-sent'
  | 'send-failed'
  | 'message-ack'
  | 'message-received'
  | 'command-result';

/** A session of getAllSessions(): the getActiveSessions fields plus its API key. */
export interface SessionWithKey extends SessionInfo {
  apiKey: string;
  /** SHA-256 of the API key, in hex (in cluster mode: see ClusterSessionWithKey). */
  apiKeyDigest: string;
}

/** A session of getAllSessions() in cluster mode. */
export interface ClusterSessionWithKey extends ClusterSessionInfo {
  /** Null for a session of another process whose key this process does not know (Redis holds digests only). */
  apiKey: string | null;
  /** HMAC-SHA-256 of the API key with `cluster.secret`, else its SHA-256, in hex. */
  apiKeyDigest: string;
}

/**
 * Also an EventEmitter: every onMessageLog event under its `type` and under 'event',
 * every error under 'gateway-error'. A listener that throws is reported as
 * CALLBACK_ERROR; a throw in a 'gateway-error' listener is swallowed.
 */
// The EventEmitter methods are declared here rather than inherited from
// 'node:events' so that the types need no @types/node.
export declare class WhatsAppGateway<Config extends GatewayConfig = GatewayConfig> {
  /** An object literal with an unknown option, at any depth, does not compile. */
  constructor(config: CheckedOptions<Config, GatewayConfig>);
  on(event: GatewayEventName, listener: (event: MessageLogData) => void | Promise<void>): this;
  on(event: 'gateway-error', listener: (error: GatewayError) => void | Promise<void>): this;
  once(event: GatewayEventName, listener: (event: MessageLogData) => void | Promise<void>): this;
  once(event: 'gateway-error', listener: (error: GatewayError) => void | Promise<void>): this;
  addListener(event: GatewayEventName | 'gateway-error', listener: (value: any) => void | Promise<void>): this;
  off(event: GatewayEventName | 'gateway-error', listener: (value: any) => void | Promise<void>): this;
  removeListener(event: GatewayEventName | 'gateway-error', listener: (value: any) => void | Promise<void>): this;
  removeAllListeners(event?: GatewayEventName | 'gateway-error'): this;
  listenerCount(event: GatewayEventName | 'gateway-error'): number;
  /** Every session of every key, with its full apiKey (cluster mode: every process's, with nodeId). */
  getAllSessions(): Clustered<Config, SessionWithKey[], ClusterSessionWithKey[]>;
  /** Prometheus text exposition format 0.0.4; synchronous; works while stopped. */
  metrics(): string;
  /** True from start() until stop(), or until the attached server has closed. */
  readonly isRunning: boolean;
  start(): Promise<void>;
  /**
   * Closes every session and frees the port. With `drainMs`, first takes no new sends and
   * gives sends already written up to that long to settle (resolves within drainMs + 5 s);
   * in durable mode, sends not yet written stay in the store for the next start().
   */
  stop(options?: StopOptions): Promise<void>;
  sendMessage(apiKey: string, data: SendMessageData): Promise<MessageResult>;
  sendImage(apiKey: string, data: SendImageData): Promise<MessageResult>;
  sendVideo(apiKey: string, data: SendVideoData): Promise<MessageResult>;
  sendDocument(apiKey: string, data: SendDocumentData): Promise<MessageResult>;
  /**
   * A custom command: `{type, requestId, data}` to a device whose extension listed `type`
   * at auth; resolves with its command-result's data, or rejects EXTENSION_ERROR,
   * UNSUPPORTED_COMMAND, NO_ACTIVE_DEVICE, REQUEST_TIMEOUT... like a send.
   */
  request<T = unknown>(apiKey: string, type: string, data?: unknown, options?: RequestOptions): Promise<CommandResult<T>>;
  /** Cluster mode: every process's sessions of the key, each with its nodeId. */
  getActiveSessions(apiKey: string): Clustered<Config, SessionInfo[], ClusterSessionInfo[]>;
  getHealth(): HealthCheckResponse;
  /**
   * A send's record (by requestId, or by { apiKey, idempotencyKey } or { apiKey, messageId })
   * for idempotencyTtl after its call settled, or null (at most maxMessageStatuses: the
   * oldest settled are forgotten first).
   */
  getMessageStatus(lookup: MessageLookup): Clustered<Config, MessageStatus | null, MessageStatus | null>;
  /** `{ port }` while listening on its own port; attached, the server's `address()`; else null. */
  address(): AddressOf<Config>;
}

export declare const ERROR_CODES: { readonly [K in ErrorCode]: K };

export declare const SERVER_MESSAGE_TYPES: {
  readonly SEND_MESSAGE: 'send-message';
  readonly SEND_IMAGE: 'send-image';
  readonly SEND_VIDEO: 'send-video';
  readonly SEND_DOCUMENT: 'send-document';
  readonly PING: 'ping';
  readonly AUTH_SUCCESS: 'auth-success';
  readonly AUTHENTICATED: 'authenticated';
  readonly ERROR: 'error';
  readonly INCOMING_ACK: 'incoming-ack';
};

export declare const EXTENSION_MESSAGE_TYPES: {
  readonly AUTH: 'auth';
  readonly AUTHENTICATE: 'authenticate';
  readonly STATUS: 'status';
  readonly MESSAGE_RESULT: 'message-result';
  readonly HEARTBEAT: 'heartbeat';
  readonly MESSAGE_ACK: 'message-ack';
  readonly INCOMING_MESSAGE: 'incoming-message';
  readonly COMMAND_RESULT: 'command-result';
};
