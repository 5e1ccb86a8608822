'use strict';
// `idempotencyKey` (SPEC 5.2): a key is reserved by the first call that carries it
// and used once that send was written to an extension. A later call with the same
// API key and key settles like the first (when the first settles) and sends nothing;
// if the first failed before being written, the key is free and the later call sends.
const { GatewayError } = require('./errors');

/** Failures that prove the command never reached an extension. */
const NEVER_WRITTEN = new Set([
  'VALIDATION_ERROR',
  'NO_ACTIVE_DEVICE',
  'QUEUE_FULL',
  'BACKPRESSURE',
  'FETCH_ERROR',
  'FILE_TOO_LARGE',
  'MEDIA_NOT_ALLOWED',
  'SERVER_ERROR',
]);

function neverWritten(error) {
  return NEVER_WRITTEN.has(error?.code) || error?.details?.sent === false;
}

/** Keys remembered at most; the oldest settled ones are forgotten first. */
const MAX_KEYS = 100_000;

class IdempotencyKeys {
  /**
   * API key + '\0' + idempotency key -> { expiresAt, settled, freed, promise, result, error },
   * oldest first. Once settled an entry keeps the outcome, not the promise.
   */
  #entries = new Map();
  #ttl;
  #capacity;
  #now;

  constructor(ttl, { capacity = MAX_KEYS, now = () => performance.now() } = {}) {
    this.#ttl = ttl;
    this.#capacity = capacity;
    this.#now = now;
  }

  /** Runs `send()` unless the key is taken; a duplicate settles like the first. */
  run(apiKey, key, send) {
    const id = `${apiKey}\u0000${key}`;
    const first = this.#live(id);
    if (!first) return this.#reserve(id, send);
    if (first.settled) {
      return first.error ? Promise.reject(duplicateOf(first.error)) : Promise.resolve({ ...first.result, duplicate: true });
    }
    return first.promise.then(
      (result) => ({ ...result, duplicate: true }),
      (error) => (first.freed ? this.run(apiKey, key, send) : Promise.reject(duplicateOf(error))),
    );
  }

  get size() {
    return this.#entries.size;
  }

  #live(id) {
    const entry = this.#entries.get(id);
    if (!entry) return null;
    if (entry.settled && this.#now() >= entry.expiresAt) {
      this.#entries.delete(id);
      return null;
    }
    return entry;
  }

  #reserve(id, send) {
    const entry = { expiresAt: this.#now() + this.#ttl, settled: false, freed: false, promise: null, result: null, error: null };
    this.#entries.set(id, entry);
    this.#trim();
    const promise = send().then(
      (result) => {
        entry.settled = true;
        entry.result = result;
        entry.promise = null;
        return result;
      },
      (error) => {
        entry.settled = true;
        entry.promise = null;
        if (neverWritten(error)) {
          entry.freed = true;
          if (this.#entries.get(id) === entry) this.#entries.delete(id);
        } else {
          entry.error = error;
        }
        throw error;
      },
    );
    entry.promise = promise;
    return promise;
  }

  /**
   * Forgets the oldest settled keys over capacity; keys in flight are kept. Runs once
   * the store is a tenth over capacity, so that its walk from the oldest is paid rarely.
   */
  #trim() {
    if (this.#entries.size <= this.#capacity + Math.ceil(this.#capacity / 10)) return;
    for (const [id, entry] of this.#entries) {
      if (this.#entries.size <= this.#capacity) break;
      if (entry.settled) this.#entries.delete(id);
    }
  }
}

function duplicateOf(error) {
  if (!(error instanceof GatewayError)) return error;
  const details = error.details && typeof error.details === 'object' ? error.details : {};
  return new GatewayError(error.code, error.message, { ...details, duplicate: true });
}

module.exports = { IdempotencyKeys, neverWritten, duplicateOf };
