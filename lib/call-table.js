'use strict';
// The send calls in flight, by id (index.js). Ids count up, so a ring indexed by an id's
// low bits holds nearly every call; one whose slot is still taken (the call RING ids
// earlier has not settled) waits in a Map. A Map alone, with ids coming and going,
// rebuilds its table each time deleted entries fill its spare room (every 64 sends at 64
// in flight), and a long-lived Map's table is rebuilt in V8's old generation: under load
// that fed the major collector about 0.8 µs of CPU per call (docs/performance.md, "Calls
// in flight in a ring").

const RING = 4096;
const MASK = RING - 1;

class CallTable {
  /** Allocated with the first call: an idle gateway holds none of it. */
  #ring = null;
  /** The id of the call in each ring slot (ids are 32-bit: index.js counts them so). */
  #ids = null;
  #overflow = new Map();
  #inRing = 0;

  get size() {
    return this.#inRing + this.#overflow.size;
  }

  set(id, call) {
    if (this.#ring === null) {
      this.#ring = new Array(RING).fill(undefined);
      this.#ids = new Uint32Array(RING);
    }
    const slot = id & MASK;
    const held = this.#ring[slot];
    if (held === undefined) {
      this.#ring[slot] = call;
      this.#ids[slot] = id;
      this.#inRing++;
    } else if (this.#ids[slot] === id) {
      this.#ring[slot] = call;
    } else {
      this.#overflow.set(id, call);
    }
  }

  get(id) {
    const slot = id & MASK;
    const call = this.#ring?.[slot];
    if (call !== undefined && this.#ids[slot] === id) return call;
    return this.#overflow.get(id);
  }

  /** The call `id` (undefined if none), no longer in the table. */
  take(id) {
    const slot = id & MASK;
    const call = this.#ring?.[slot];
    if (call !== undefined && this.#ids[slot] === id) {
      this.#ring[slot] = undefined;
      this.#inRing--;
      return call;
    }
    const waiting = this.#overflow.get(id);
    if (waiting !== undefined) this.#overflow.delete(id);
    return waiting;
  }

  /** [id, call] of every call, in no particular order. */
  *[Symbol.iterator]() {
    if (this.#ring !== null) {
      for (let slot = 0; slot < RING; slot++) {
        const call = this.#ring[slot];
        if (call !== undefined) yield [this.#ids[slot], call];
      }
    }
    yield* this.#overflow;
  }

  clear() {
    this.#ring?.fill(undefined);
    this.#inRing = 0;
    this.#overflow.clear();
  }
}

module.exports = { CallTable };
