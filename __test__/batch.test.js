'use strict';
// The boundary between the addon and lib/native.js: a batch of deliveries is encoded in
// Rust (src/deliveries.rs) and read by lib/native.js's readBatch, which index.js uses.
// One delivery of every kind, with known values, goes through both; each must come out
// as what Rust put in (`testSampleBatchDecoded()` is built from the deliveries, not from the
// encoder), so that a slot moved on either side fails here.
const test = require('node:test');
const assert = require('node:assert/strict');

const { addon, BATCH, readBatch } = require('../lib/native');

/** What readBatch hands over, as plain records: the way index.js reads each kind. */
function decode([numbers, text, values], sessions = new Set()) {
  const out = [];
  readBatch(numbers, text, values, {
    resolved(call, requestId, messageId, timestamp, ackStage, session) {
      sessions.add(session);
      out.push({
        kind: 'resolved',
        call,
        requestId,
        messageId,
        timestamp,
        ack: BATCH.acks[ackStage >> 2],
        stage: ackStage & 3,
        session: {
          sessionId: session.sessionId,
          extensionVersion: session.extensionVersion,
          browser: session.browser,
          userId: session.userId,
        },
      });
    },
    rejected: (call, error) => out.push({ kind: 'rejected', call, error }),
    duplicate: (call, result) => out.push({ kind: 'duplicate', call, result }),
    log: (event) => out.push({ kind: 'log', event }),
    error: (error) => out.push({ kind: 'error', error }),
    debug: (line) => out.push({ kind: 'debug', line }),
    warning: (code, message) => out.push({ kind: 'warning', code, message }),
    notice: (notice) => out.push({ kind: 'notice', notice }),
    answer: (token, ok, value) => out.push({ kind: 'answer', token, ok, value }),
    stopped: () => out.push({ kind: 'stopped' }),
  });
  return out;
}

test('every kind of delivery comes out of readBatch as Rust put it in', () => {
  const [, batch] = addon.testSampleBatches();
  assert.deepEqual(decode(batch), addon.testSampleBatchDecoded());
});

test('a batch reuses the numbers of the one before, longer, and is read only as far as its own count', () => {
  const [first, second] = addon.testSampleBatches();
  const numbers = second[0];
  assert.equal(numbers, first[0], 'one Float64Array for both batches');
  // Past the second batch's count, the array still holds the tail of the first (the
  // sample twice over), which readBatch must not read.
  assert.ok(numbers.length > 1 + numbers[0]);
  assert.ok(numbers.subarray(1 + numbers[0]).some((n) => n !== 0), 'the first batch left numbers past the count');
  assert.deepEqual(decode(second), addon.testSampleBatchDecoded());
});

test('the sample has every kind of delivery, and successes of two sessions (one session tag each)', () => {
  const decoded = addon.testSampleBatchDecoded();
  const tagged = Object.keys(BATCH).filter(
    (name) => typeof BATCH[name] === 'number' && !['session', 'inValues', 'null'].includes(name),
  );
  assert.deepEqual([...new Set(decoded.map((d) => d.kind))].sort(), [...tagged].sort());
  const [, batch] = addon.testSampleBatches();
  const sessions = new Set(decoded.filter((d) => d.kind === 'resolved').map((d) => d.session.sessionId));
  assert.equal(sessions.size, 2);
  // One session record per run of successes from one session (read once, shared).
  const records = new Set();
  decode(batch, records);
  assert.ok(records.size >= 2);
  const tags = tagged.map((name) => BATCH[name]).concat(BATCH.session);
  const [numbers, text, values] = batch;
  assert.ok(numbers instanceof Float64Array && typeof text === 'string' && Array.isArray(values), 'numbers, text and values');
  assert.equal(new Set(tags).size, tags.length, 'every delivery kind has its own tag');
});
