//! One sweep per interval over every session: ping the live ones, close the silent
//! ones and those that stopped reading. Cheaper than a timer per connection when thousands are idle.

use std::sync::Arc;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::gateway::Shared;
use crate::link::{lock, CloseRequest};
use crate::protocol::{Frame, PING};

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
    let now = now_ms();
    let ping = Utf8Bytes::from_static(PING);
    let registry = lock(&shared.registry);
    for link in registry.links() {
        if now.saturating_sub(link.last_seen_ms()) > silence_limit {
            link.request_close(CloseRequest::HeartbeatTimeout);
        } else if link.stalled(now, silence_limit) {
            link.request_close(CloseRequest::Stalled);
        } else {
            link.push(Frame::Text(ping.clone()));
        }
    }
}
