'use strict';
// The table of send calls in flight (lib/call-table.js): a ring by the id's low bits, and
// a Map for a call whose slot is still taken. It must answer as a Map would, whatever the
// ids; and through a gateway, a call that outlives thousands of later ones still settles
// with its own result.
const test = require('node:test');
const assert = require('node:assert/strict');

const { CallTable } = require('../lib/call-table');
const { startGateway, FakeExtension } = require('./helpers');

/** A small deterministic generator (mulberry32), so that a failure repeats. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('the table answers as a Map through random calls, long-lived ones and ids that wrap', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const next = random(seed);
    const table = new CallTable();
    const model = new Map();
    // Near the top of 32 bits, as index.js's counter gets after 4 billion sends.
    let id = (2 ** 32 - 3000 + seed * 97) >>> 0;
    const live = [];
    for (let step = 0; step < 20_000; step++) {
      const roll = next();
      if (roll < 0.5 || live.length === 0) {
        id = (id + 1) >>> 0;
        const call = { id };
        table.set(id, call);
        model.set(id, call);
        live.push(id);
      } else if (roll < 0.9) {
        // Mostly the oldest (calls settle in about the order they were made), now and
        // then any: a call that stays behind while the ring comes round again.
        const at = next() < 0.8 ? 0 : Math.floor(next() * live.length);
        const [gone] = live.splice(at, 1);
        assert.equal(table.take(gone), model.get(gone), `seed ${seed} step ${step}: take ${gone}`);
        model.delete(gone);
        assert.equal(table.take(gone), undefined, 'a call is taken once');
      } else if (roll < 0.97) {
        const probe = next() < 0.5 && live.length > 0 ? live[Math.floor(next() * live.length)] : (id + 1 + 4096) >>> 0;
        assert.equal(table.get(probe), model.get(probe), `seed ${seed} step ${step}: get ${probe}`);
      } else {
        // Skip ids, as a failed dispatch does, so that new ids land on held slots.
        id = (id + 4096 - 1) >>> 0;
      }
      assert.equal(table.size, model.size);
    }
    assert.deepEqual(new Map(table), model, `seed ${seed}: the same calls, by id`);
    table.clear();
    assert.equal(table.size, 0);
    assert.deepEqual([...table], []);
    for (const [held] of model) assert.equal(table.get(held), undefined);
  }
});

test('a call answered after 5000 later calls settled gets its own result, and so does each of them', async (t) => {
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  let held = null;
  const ext = new FakeExtension(url, {
    respond(command) {
      if (held === null) {
        held = command.requestId;
        return null;
      }
      return { success: true, messageId: `msg-${command.requestId}` };
    },
  });
  t.after(() => ext.close());
  await ext.connectReady(gateway);

  const first = gateway.sendMessage(ext.apiKey, { phoneNumber: '+15550000000', message: 'held' });
  for (let round = 0; round < 10; round++) {
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) => gateway.sendMessage(ext.apiKey, { phoneNumber: '+15550000001', message: `m${round}-${i}` })),
    );
    for (const result of results) assert.equal(result.messageId, `msg-${result.requestId}`);
    ext.frames.length = 0;
    ext.commands.length = 0;
  }
  assert.match(gateway.metrics(), /^wa_gateway_pending_sends 1$/m, 'the held call is still in flight');
  ext.result(held, { success: true, messageId: 'msg-held' });
  const result = await first;
  assert.equal(result.requestId, held);
  assert.equal(result.messageId, 'msg-held');
});
