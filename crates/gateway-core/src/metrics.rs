//! Counters of what only the core sees, for `gateway.metrics()` (README "Seeing inside"): auth
//! failures by reason, bytes written to extensions, media fetch durations. Process-wide
//! atomics, so that recording costs one relaxed add and needs no handle to a gateway;
//! several gateways in one process share them (`metrics()` is per process anyway).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Why a connection did not become a session; the `reason` label of
/// `wa_gateway_auth_failures_total`.
#[derive(Clone, Copy, Debug)]
pub enum AuthFailure {
    InvalidKey,
    ValidatorError,
    AuthTimeout,
    MaxSessions,
    Origin,
    PreAuthLimit,
}

const REASONS: [&str; 6] = [
    "invalid_key",
    "validator_error",
    "auth_timeout",
    "max_sessions",
    "origin",
    "pre_auth_limit",
];

/// Upper bounds in seconds of the media fetch histogram's buckets (`+Inf` implied).
pub const FETCH_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static AUTH_FAILURES: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static FETCH_COUNTS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];
static FETCH_COUNT: AtomicU64 = AtomicU64::new(0);
static FETCH_MICROS: AtomicU64 = AtomicU64::new(0);
static STATUS_EVICTIONS: AtomicU64 = AtomicU64::new(0);

pub fn auth_failed(reason: AuthFailure) {
    AUTH_FAILURES[reason as usize].fetch_add(1, Ordering::Relaxed);
}

pub fn bytes_written(bytes: usize) {
    BYTES_WRITTEN.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// A settled record with an `idempotencyKey` dropped for room before its TTL
/// (`wa_gateway_status_evictions_total`): its key is forgotten early.
pub fn status_evicted() {
    STATUS_EVICTIONS.fetch_add(1, Ordering::Relaxed);
}

/// One `http(s)` media fetch, successful or not.
pub fn media_fetched(took: Duration) {
    let seconds = took.as_secs_f64();
    // Non-cumulative per bucket here; the exposition sums them up.
    if let Some(bucket) = FETCH_BUCKETS.iter().position(|&bound| seconds <= bound) {
        FETCH_COUNTS[bucket].fetch_add(1, Ordering::Relaxed);
    }
    FETCH_COUNT.fetch_add(1, Ordering::Relaxed);
    FETCH_MICROS.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// `[reason, count]` for every reason, zeros included.
    pub auth_failures: Vec<(&'static str, u64)>,
    pub bytes_written: u64,
    pub media_fetch: Histogram,
    pub status_evictions: u64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds in seconds, matching `counts` (not cumulative; `+Inf` excluded).
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

pub fn snapshot() -> MetricsSnapshot {
    let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
    MetricsSnapshot {
        auth_failures: REASONS
            .iter()
            .zip(&AUTH_FAILURES)
            .map(|(r, n)| (*r, read(n)))
            .collect(),
        bytes_written: read(&BYTES_WRITTEN),
        media_fetch: Histogram {
            bounds: FETCH_BUCKETS.to_vec(),
            counts: FETCH_COUNTS.iter().map(read).collect(),
            count: read(&FETCH_COUNT),
            sum: read(&FETCH_MICROS) as f64 / 1e6,
        },
        status_evictions: read(&STATUS_EVICTIONS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The counters are process-wide and other tests run in parallel: compare deltas.
    #[test]
    fn records_show_in_the_snapshot() {
        let before = snapshot();
        auth_failed(AuthFailure::Origin);
        bytes_written(42);
        media_fetched(Duration::from_millis(30));
        media_fetched(Duration::from_secs(60));
        let after = snapshot();
        let origin = |s: &MetricsSnapshot| {
            s.auth_failures
                .iter()
                .find(|(r, _)| *r == "origin")
                .map(|(_, n)| *n)
        };
        assert_eq!(origin(&after).unwrap() - origin(&before).unwrap(), 1);
        assert!(after.bytes_written - before.bytes_written >= 42);
        assert!(after.media_fetch.count - before.media_fetch.count >= 2);
        // 30 ms falls in the 0.05 s bucket; 60 s only in +Inf.
        assert!(after.media_fetch.counts[2] > before.media_fetch.counts[2]);
        assert!(after.media_fetch.sum - before.media_fetch.sum >= 60.0);
    }
}
