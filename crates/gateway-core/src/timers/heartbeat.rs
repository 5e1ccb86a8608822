//! One sweep per interval over every session: ping the live ones, close the silent
//! ones and those that stopped reading. Cheaper than a timer per connection when
//! thousands are idle.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::clock::monotonic_ms;
use crate::protocol::{Frame, PING};
use crate::state::link::{lock, CloseRequest};
use crate::state::Shared;
use crate::supervise::{catch_panic_sync, panic_error};

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    // At least a millisecond: a zero period would panic the interval.
    let every = shared
        .config
        .heartbeat_interval
        .max(Duration::from_millis(1));
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                // A panic in one sweep is reported; the next sweep runs as usual.
                if let Err(panic) = catch_panic_sync(|| sweep(&shared)) {
                    shared.report(panic_error("heartbeat timer", &panic));
                }
            }
        }
    }
}

fn sweep(shared: &Shared) {
    let silence_limit = shared.config.heartbeat_timeout.as_millis() as u64;
    let now = monotonic_ms();
    let ping = Utf8Bytes::from_static(PING);
    // Copied out so that sends and auths are not held up while thousands are visited.
    let links: Vec<_> = lock(&shared.registry).links().cloned().collect();
    for link in links {
        if link.stalled(now, silence_limit) {
            link.request_close(CloseRequest::Stalled);
        } else if link.silent_for(now) > silence_limit && !link.writing(now, silence_limit) {
            // A socket that keeps taking the bytes of a long command is alive, even if
            // the extension's own frames are late.
            link.request_close(CloseRequest::HeartbeatTimeout);
        } else {
            link.push(Frame::Text(ping.clone()), shared.config.max_queued_bytes);
        }
    }
}
