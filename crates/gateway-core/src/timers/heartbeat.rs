//! One sweep per interval over every session: ping the live ones, close the silent
//! ones and those that stopped reading. Cheaper than a timer per connection when
//! thousands are idle.

use std::sync::Arc;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::clock::monotonic_ms;
use crate::protocol::{Frame, PING};
use crate::state::link::{lock, CloseRequest};
use crate::state::Shared;

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = shared.config.heartbeat_interval;
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => sweep(&shared),
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
        if link.silent_for(now) > silence_limit {
            link.request_close(CloseRequest::HeartbeatTimeout);
        } else if link.stalled(now, silence_limit) {
            link.request_close(CloseRequest::Stalled);
        } else {
            link.push(Frame::Text(ping.clone()));
        }
    }
}
