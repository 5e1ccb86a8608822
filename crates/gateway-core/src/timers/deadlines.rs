//! One task per running gateway fails requests whose timeout has passed. It sleeps
//! until the earliest deadline instead of keeping a timer per request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::state::link::lock;
use crate::state::requests::timeout_error;
use crate::state::Shared;

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (expired, next) = {
            let mut registry = lock(&shared.registry);
            (registry.expire(Instant::now()), registry.next_deadline())
        };
        for settled in expired {
            let timeout_ms = settled.pending.timeout_ms;
            shared.fail(settled, timeout_error(timeout_ms));
        }
        let next = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.deadline_changed.notified() => {}
            _ = sleep_until(next) => {}
        }
    }
}
