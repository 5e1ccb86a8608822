//! 5.2 delivery timer: lets paced commands leave when due, hands sends waiting for a
//! device to a device that became active, and ends their wait when it is up. One
//! task for the gateway; it sleeps until the next due time or a wake-up.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::state::link::lock;
use crate::state::Shared;
use crate::supervise::{catch_panic_sync, panic_error};

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let wake = lock(&shared.registry).wake_delivery.clone();
    loop {
        // A panic in one round is reported; the timer keeps running.
        let next =
            catch_panic_sync(|| shared.delivery_tick(Instant::now())).unwrap_or_else(|panic| {
                shared.report(panic_error("delivery timer", &panic));
                None
            });
        let next = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep_until(next) => {}
        }
    }
}
