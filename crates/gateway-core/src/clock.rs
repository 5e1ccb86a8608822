//! Two clocks: wall-clock milliseconds for every timestamp the API shows, and a
//! monotonic one for liveness and stalls, so that moving the wall clock changes nothing.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the first reading in this process, on tokio's monotonic clock
/// (which tests can pause and advance).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(start).as_millis() as u64
}

/// The wall-clock time at which `monotonic_ms()` read `reading`, for display. The two
/// clocks, read a moment apart (and a thread may be preempted between the two reads),
/// round to milliseconds differently from one call to the next: their difference is
/// kept, per thread (a test's paused tokio time moves its own thread's monotonic clock
/// only), while it stays within a second of what they read now, so that a record's
/// times read the same at every look-up, and taken anew when they move further apart
/// (the wall clock was set).
pub fn wall_ms_at(reading: u64) -> u64 {
    thread_local! {
        static OFFSET: Cell<Option<i64>> = const { Cell::new(None) };
    }
    let live = now_ms() as i64 - monotonic_ms() as i64;
    let offset = OFFSET.with(|kept| match kept.get() {
        Some(offset) if (live - offset).abs() < 1000 => offset,
        _ => {
            kept.set(Some(live));
            live
        }
    });
    u64::try_from(offset.saturating_add(reading as i64)).unwrap_or(0)
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
    fn a_reading_shows_the_same_wall_time_at_every_look_up() {
        let reading = monotonic_ms();
        let first = wall_ms_at(reading);
        for _ in 0..200_000 {
            assert_eq!(wall_ms_at(reading), first);
        }
    }
}
