//! One task per running gateway fails requests whose timeout has passed. It sleeps
//! until the earliest deadline instead of keeping a timer per request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::state::link::lock;
use crate::state::registry::Expired;
use crate::state::requests::{backpressure, timeout_error};
use crate::state::Shared;
use crate::supervise::{catch_panic_sync, panic_error};

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        // A panic in one round is reported; the timer keeps running.
        let next = catch_panic_sync(|| expire(&shared)).unwrap_or_else(|panic| {
            shared.report(panic_error("request deadline timer", &panic));
            Instant::now() + Duration::from_secs(1)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.deadline_changed.notified() => {}
            _ = sleep_until(next) => {}
        }
    }
}

/// Fails the requests whose deadline has passed; returns when to look again (a send
/// with an earlier deadline wakes the timer before: `Registry::arm_timer`).
fn expire(shared: &Shared) -> Instant {
    let expired = lock(&shared.registry).expire(Instant::now());
    for Expired { settled, room_wait } in expired {
        match room_wait {
            // Its command waited for room on its session until now: never written.
            Some(queued) => {
                let max = shared.config.max_queued_bytes;
                shared.fail(settled, backpressure(queued, max));
            }
            None => {
                let timeout_ms = settled.pending.timeout_ms;
                shared.fail(settled, timeout_error(timeout_ms));
            }
        }
    }
    shared.expire_ack_waits(Instant::now());
    lock(&shared.registry).arm_timer(Instant::now())
}
