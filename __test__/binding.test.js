'use strict';
// The boundary between index.js and the addon: how a batch of deliveries is laid out
// is defined once in Rust (src/deliveries.rs) and read by index.js; this pins it, so
// that a change on one side cannot silently shift the fields of every result.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const native = require(path.join(__dirname, '..', 'gateway.node'));
const { normalizeConfig } = require('../lib/options');

test('a success is delivered as these slots, in this order', () => {
  const layout = native.batchLayout();
  assert.deepEqual(layout.resolvedFields, ['call', 'requestId', 'messageId', 'timestamp', 'ackStage']);
  // Before the first success of a batch and whenever the session changes.
  assert.deepEqual(layout.sessionFields, ['sessionId', 'extensionVersion', 'browser', 'userId']);
  assert.deepEqual(layout.acks, ['sent', 'server', 'delivered', 'read', 'played']);
  const tags = [layout.resolved, layout.rejected, layout.log, layout.error, layout.stopped, layout.debug, layout.answer, layout.session];
  assert.equal(new Set(tags).size, tags.length, 'every delivery kind has its own tag');
  assert.ok(tags.every((tag) => Number.isInteger(tag) && !layout.resolvedFields.includes(tag)));
});

test('kinds and strategies are typed: an unknown one is refused, not turned into a text message', () => {
  const { native: config } = normalizeConfig({ validateApiKey: () => ({ valid: false }) });
  const core = new native.NativeGateway(config, () => {});
  assert.throws(() => core.send(1, 'sticker', 'k', '+1234567', 'x'), /sticker|kind|enum/i);
  assert.throws(() => core.send(2, 'message', 'k', '+1234567', 'x', { strategy: 'fastest' }), /fastest|strategy|enum/i);
  assert.throws(() => new native.NativeGateway({ ...config, dialect: 'v9' }, () => {}), /v9|dialect|enum/i);
});
