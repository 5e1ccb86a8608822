'use strict';
// `gateway.metrics()` (README "Seeing inside"): Prometheus text exposition format 0.0.4. What the
// JavaScript side sees (send calls, their outcomes and durations) is counted here;
// what only the core sees (auth failures by reason, bytes written, media fetch
// durations) comes from crates/gateway-core/src/metrics.rs.

/** Upper bounds (seconds) of the send duration histogram. */
const SEND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

class Histogram {
  constructor(bounds) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length).fill(0);
    this.count = 0;
    this.sum = 0;
  }

  observe(seconds) {
    const { bounds } = this;
    let bucket = 0;
    while (bucket < bounds.length && seconds > bounds[bucket]) bucket++;
    if (bucket < bounds.length) this.counts[bucket]++;
    this.count++;
    this.sum += seconds;
  }
}

/** One kind's settled calls: successes apart, since nearly every call is one. */
class KindCounts {
  success = 0;
  /** error code -> count */
  failures = new Map();
  durations = new Histogram(SEND_BUCKETS);
}

/** Counters kept by one gateway across start() and stop(). */
class SendMetrics {
  /** kind -> KindCounts (no string built per send: this runs on every one). */
  #kinds = new Map();

  /**
   * A send call settled: `outcome` is 'success' or the error code; `startedAt` is its
   * `performance.now()`, `now` when it settled. Every call counted is also timed, so that
   * the histogram's `_count` per kind is the sum of the counter's outcomes for it.
   */
  settled(kind, outcome, startedAt, now = performance.now()) {
    let counts = this.#kinds.get(kind);
    if (counts === undefined) this.#kinds.set(kind, (counts = new KindCounts()));
    if (outcome === 'success') counts.success++;
    else counts.failures.set(outcome, (counts.failures.get(outcome) ?? 0) + 1);
    counts.durations.observe((now - startedAt) / 1000);
  }

  sends() {
    return [...this.#kinds].flatMap(([kind, { success, failures }]) => [
      ...(success > 0 ? [[{ kind, outcome: 'success' }, success]] : []),
      ...[...failures].map(([outcome, count]) => [{ kind, outcome }, count]),
    ]);
  }

  durations() {
    return [...this.#kinds].map(([kind, counts]) => [kind, counts.durations]);
  }
}

function escapeLabel(value) {
  return String(value).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(set) {
  const entries = Object.entries(set);
  if (entries.length === 0) return '';
  return `{${entries.map(([name, value]) => `${name}="${escapeLabel(value)}"`).join(',')}}`;
}

function number(value) {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return Number.isNaN(value) ? 'NaN' : String(value);
}

/** Builds the exposition text, one family at a time. */
class Exposition {
  #lines = [];
  /** Labels every sample carries (5.3: `node_id` in cluster mode, metrics being per process). */
  #common;

  constructor(common = {}) {
    this.#common = common;
  }

  family(name, type, help, samples) {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labelSet, value] of samples) this.#lines.push(`${name}${this.#labels(labelSet)} ${number(value)}`);
  }

  #labels(labelSet) {
    return labels({ ...this.#common, ...labelSet });
  }

  /** `series`: [labelSet, { bounds, counts (per bucket, not cumulative), count, sum }]. */
  histogram(name, help, series) {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    for (const [labelSet, h] of series) {
      let cumulative = 0;
      h.bounds.forEach((bound, i) => {
        cumulative += h.counts[i];
        this.#lines.push(`${name}_bucket${this.#labels({ ...labelSet, le: number(bound) })} ${cumulative}`);
      });
      this.#lines.push(`${name}_bucket${this.#labels({ ...labelSet, le: '+Inf' })} ${h.count}`);
      this.#lines.push(`${name}_sum${this.#labels(labelSet)} ${number(h.sum)}`);
      this.#lines.push(`${name}_count${this.#labels(labelSet)} ${h.count}`);
    }
  }

  toString() {
    return `${this.#lines.join('\n')}\n`;
  }
}

/**
 * The whole text. `state`: { sessions (getAllSessions), health (getHealth),
 * pendingSends, sends (SendMetrics), core (the core's snapshot) }.
 */
function render({ sessions, health, pendingSends, sends, core }) {
  const nodeId = health.cluster?.nodeId;
  const out = new Exposition(nodeId === undefined ? {} : { node_id: nodeId });
  const ready = sessions.filter((s) => s.deviceActive).length;
  out.family('wa_gateway_sessions', 'gauge', 'Authenticated extension sessions, by whether they can take sends.', [
    [{ state: 'ready' }, ready],
    [{ state: 'not_ready' }, sessions.length - ready],
  ]);
  out.family('wa_gateway_connections', 'gauge', 'Open WebSocket connections, authenticated or not.', [
    [{}, health.connections ?? 0],
  ]);
  out.family('wa_gateway_pending_sends', 'gauge', 'Send calls not settled yet.', [[{}, pendingSends]]);
  out.family('wa_gateway_queued_sends', 'gauge', 'Sends waiting in a pacing queue or for a device.', [
    [{}, health.queuedSends ?? 0],
  ]);
  out.family('wa_gateway_sends_total', 'counter', "Settled send calls, by kind and outcome ('success' or the error code).", sends.sends());
  out.histogram(
    'wa_gateway_send_duration_seconds',
    'Time from a send call to its settlement, by kind.',
    sends.durations().map(([kind, h]) => [{ kind }, h]),
  );
  out.family(
    'wa_gateway_auth_failures_total',
    'counter',
    'Connections that did not become sessions, by reason.',
    core.authFailures.map(({ reason, count }) => [{ reason }, count]),
  );
  out.family('wa_gateway_bytes_written_total', 'counter', 'Bytes of commands written to extensions.', [
    [{}, core.bytesWritten],
  ]);
  out.histogram('wa_gateway_media_fetch_duration_seconds', 'Time to fetch one http(s) media URL, failures included.', [
    [{}, core.mediaFetch],
  ]);
  out.family(
    'wa_gateway_status_evictions_total',
    'counter',
    'Settled records with an idempotencyKey dropped for room (maxMessageStatuses) before idempotencyTtl: their keys were forgotten early.',
    [[{}, core.statusEvictions]],
  );
  out.family('wa_gateway_up', 'gauge', 'Whether the gateway is running (1) or stopped (0).', [
    [{}, health.status === 'stopped' ? 0 : 1],
  ]);
  return out.toString();
}

module.exports = { SendMetrics, render };
