'use strict';
// Every key the gateway reads from the objects a user writes: the config, the option
// objects nested in it, and a send call's data. Anything else is reported as a likely
// typo (lib/warnings.js), so a new option is added here, in the list of the object that
// holds it; a new nested option object is a new entry of NESTED_OPTIONS.

/** The constructor's config (README: "new WhatsAppGateway(config)"). */
const CONFIG_OPTIONS = [
  'port', 'host', 'path', 'server', 'validateApiKey', 'onMessageLog', 'onError',
  'heartbeatInterval', 'heartbeatTimeout', 'requestTimeout', 'maxSessionsPerKey',
  'deviceSelectionStrategy', 'authTimeout', 'maxPayload', 'maxMediaBytes', 'allowedOrigins',
  'mediaFileRoots', 'mediaAllowPrivateHosts', 'mediaFetchTimeout', 'trustProxy', 'reusePort',
  'cluster', 'dialect', 'maxPendingAuth', 'maxPendingAuthPerIp', 'maxPreAuthPayload',
  'maxQueuedBytes', 'pacing', 'maxQueuedSends', 'waitForDevice', 'idempotencyTtl', 'logger',
  'maxMessageStatuses', 'store', 'storeSync',
];

/**
 * Option objects inside the config, by their path in it. One that holds another kind of
 * value there (`cluster.redis` is usually a URL string) is not looked into.
 */
const NESTED_OPTIONS = {
  pacing: ['minIntervalMs', 'jitterMs', 'maxPerMinute'],
  cluster: ['redis', 'nodeId', 'keyPrefix', 'leaseMs', 'tls', 'secret'],
  'cluster.redis': ['sentinels', 'name', 'username', 'password', 'sentinelUsername', 'sentinelPassword', 'db'],
  'cluster.tls': ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'],
};

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
