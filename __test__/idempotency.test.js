'use strict';
// lib/idempotency.js on its own, with an injected clock: TTL and bounded memory.
const test = require('node:test');
const assert = require('node:assert/strict');
const { IdempotencyKeys } = require('../lib/idempotency');
const { GatewayError } = require('../lib/errors');

test('a key is remembered for the TTL after its first use, then sends again', async () => {
  let now = 0;
  const keys = new IdempotencyKeys(1000, { now: () => now });
  let sends = 0;
  const send = () => Promise.resolve({ requestId: `r${++sends}` });
  assert.equal((await keys.run('api', 'k', send)).requestId, 'r1');
  now = 999;
  assert.deepEqual(await keys.run('api', 'k', send), { requestId: 'r1', duplicate: true });
  now = 1000;
  assert.equal((await keys.run('api', 'k', send)).requestId, 'r2');
  assert.equal(sends, 2);
});

test('a send still in flight is never forgotten, whatever its age', async () => {
  let now = 0;
  const keys = new IdempotencyKeys(10, { now: () => now });
  let finish;
  const first = keys.run('api', 'k', () => new Promise((resolve) => (finish = resolve)));
  now = 5000;
  let sends = 0;
  const dup = keys.run('api', 'k', () => Promise.resolve({ requestId: `extra${++sends}` }));
  finish({ requestId: 'r1' });
  assert.equal((await first).requestId, 'r1');
  assert.deepEqual(await dup, { requestId: 'r1', duplicate: true });
  assert.equal(sends, 0);
});

test('memory is bounded: the oldest settled keys go first, keys in flight stay', async () => {
  const keys = new IdempotencyKeys(1e9, { capacity: 3 });
  const pending = keys.run('api', 'in-flight', () => new Promise(() => {}));
  for (let n = 0; n < 10; n++) await keys.run('api', `k${n}`, () => Promise.resolve({ n }));
  assert.ok(keys.size <= 4, `size ${keys.size}`);
  let sends = 0;
  keys.run('api', 'in-flight', () => {
    sends += 1;
    return Promise.resolve({});
  });
  assert.equal(sends, 0, 'the key in flight is still reserved');
  assert.deepEqual(await keys.run('api', 'k9', () => Promise.resolve({ n: 'again' })), { n: 9, duplicate: true });
  assert.deepEqual(await keys.run('api', 'k0', () => Promise.resolve({ n: 'again' })), { n: 'again' });
  void pending;
});

test('a failure before the command was written frees the key; one after it does not', async () => {
  const keys = new IdempotencyKeys(1e9);
  const noDevice = new GatewayError('NO_ACTIVE_DEVICE', 'none', {});
  await assert.rejects(keys.run('api', 'a', () => Promise.reject(noDevice)), { code: 'NO_ACTIVE_DEVICE' });
  assert.deepEqual(await keys.run('api', 'a', () => Promise.resolve({ ok: 1 })), { ok: 1 });

  const unsent = new GatewayError('CONNECTION_LOST', 'gone', { sent: false });
  await assert.rejects(keys.run('api', 'b', () => Promise.reject(unsent)));
  assert.deepEqual(await keys.run('api', 'b', () => Promise.resolve({ ok: 2 })), { ok: 2 });

  const lost = new GatewayError('CONNECTION_LOST', 'gone', { sent: true });
  await assert.rejects(keys.run('api', 'c', () => Promise.reject(lost)));
  await assert.rejects(keys.run('api', 'c', () => Promise.resolve({ ok: 3 })), {
    code: 'CONNECTION_LOST',
    details: { sent: true, duplicate: true },
  });
});
