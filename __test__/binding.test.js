'use strict';
// The addon's class as index.js drives it: values it cannot take are refused. (How a
// batch is laid out and read is batch.test.js's.)
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const native = require(path.join(__dirname, '..', 'gateway.node'));
const { normalizeConfig } = require('../lib/options');

test('kinds and strategies are typed: an unknown one is refused, not turned into a text message', () => {
  const { native: config } = normalizeConfig({ validateApiKey: () => ({ valid: false }) });
  const core = new native.NativeGateway(config, () => {});
  assert.throws(() => native.sendCall(core.handle, 1, 'sticker', 'k', '+1234567', 'x'), /sticker|kind|enum/i);
  assert.throws(() => native.sendCall(core.handle, 2, 'message', 'k', '+1234567', 'x', { strategy: 'fastest' }), /fastest|strategy|enum/i);
  assert.throws(() => new native.NativeGateway({ ...config, dialect: 'v9' }, () => {}), /v9|dialect|enum/i);
});
