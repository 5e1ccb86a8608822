//! Two clocks: wall-clock milliseconds for every timestamp the API shows, and a
//! monotonic one for liveness and stalls, so that moving the wall clock changes nothing.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where `monotonic_ms()` starts: far enough from zero that a time read back from a
/// store (durable mode), from before this process began, still has a reading.
const ORIGIN_MS: u64 = 1000 * 86_400_000;

/// Milliseconds since the first reading in this process (plus `ORIGIN_MS`), on tokio's
/// monotonic clock (which tests can pause and advance).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    ORIGIN_MS + Instant::now().saturating_duration_since(start).as_millis() as u64
}

/// The `monotonic_ms()` reading of a past wall-clock time (a time read from a store).
pub fn monotonic_at(wall: u64) -> u64 {
    monotonic_ms().saturating_sub(now_ms().saturating_sub(wall))
}

/// The wall-clock time at which `monotonic_ms()` read `reading`, for display.
pub fn wall_ms_at(reading: u64) -> u64 {
    now_ms().saturating_sub(monotonic_ms().saturating_sub(reading))
}

/// The wall-clock time of a monotonic `reading` as a fixed point: the same reading
/// always shows the same time (the records' `updatedAt`, read again and again, must not
/// move when nothing changed). The two clocks' offset is taken once per process, so a
/// later step of the wall clock does not show here.
pub fn fixed_wall_ms_at(reading: u64) -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| now_ms().saturating_sub(monotonic_ms()));
    offset + reading
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn monotonic_readings_follow_tokio_time_and_map_to_wall_time() {
        let before = monotonic_ms();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        let after = monotonic_ms();
        assert!(after - before >= 5_000);
        let wall = wall_ms_at(before);
        assert!(
            now_ms() - wall >= 5_000,
            "a reading 5 s old shows as 5 s ago"
        );
    }

    #[test]
    fn a_reading_shows_the_same_wall_time_every_time_it_is_read() {
        let reading = monotonic_ms();
        let first = fixed_wall_ms_at(reading);
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(fixed_wall_ms_at(reading), first);
        assert!(first.abs_diff(wall_ms_at(reading)) < 1_000);
    }
}
