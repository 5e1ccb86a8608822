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
function decode(batch, sessions = new Set()) {
  const out = [];
  readBatch(batch, {
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
  const items = addon.testSampleBatch();
  assert.deepEqual(decode(items), addon.testSampleBatchDecoded());
});

test('the sample has every kind of delivery, and successes of two sessions (one session tag each)', () => {
  const decoded = addon.testSampleBatchDecoded();
  const tagged = Object.keys(BATCH).filter(
    (name) => typeof BATCH[name] === 'number' && !['session', 'inValues', 'null'].includes(name),
  );
  assert.deepEqual([...new Set(decoded.map((d) => d.kind))].sort(), [...tagged].sort());
  const items = addon.testSampleBatch();
  const sessions = new Set(decoded.filter((d) => d.kind === 'resolved').map((d) => d.session.sessionId));
  assert.equal(sessions.size, 2);
  // One session record per run of successes from one session (read once, shared).
  const records = new Set();
  decode(items, records);
  assert.ok(records.size >= 2);
  const tags = tagged.map((name) => BATCH[name]).concat(BATCH.session);
  assert.ok(items[0] instanceof Float64Array && typeof items[1] === 'string', 'numbers and text lead the batch');
  assert.equal(new Set(tags).size, tags.length, 'every delivery kind has its own tag');
});
