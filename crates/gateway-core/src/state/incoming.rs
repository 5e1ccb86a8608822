//! Incoming messages forwarded by extensions (5.2): acknowledged so the extension
//! can stop retrying, emitted once per API key and message id within ten minutes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::link::lock;
use super::registry::SessionKey;
use super::Shared;
use crate::clock::monotonic_ms;
use crate::events::LogEvent;
use crate::host::Delivery;
use crate::protocol::delivery::{
    incoming_ack_frame, refused_incoming_frame, IncomingFrame, RefusedIncoming,
};

/// How long a message id is remembered per API key.
pub const DEDUP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// At most this many ids are remembered in all; the oldest go first.
pub const MAX_REMEMBERED: usize = 100_000;

type Seen = (Arc<str>, String);

pub struct SeenIncoming {
    seen: HashMap<Seen, u64>,
    order: VecDeque<(Seen, u64)>,
    window_ms: u64,
    capacity: usize,
}

impl Default for SeenIncoming {
    fn default() -> Self {
        Self::new(DEDUP_WINDOW_MS, MAX_REMEMBERED)
    }
}

impl SeenIncoming {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            window_ms,
            capacity: capacity.max(1),
        }
    }

    /// True the first time `message_id` comes for `api_key` within the window.
    pub fn first_time(&mut self, api_key: &Arc<str>, message_id: &str, now: u64) -> bool {
        while let Some((id, at)) = self.order.front() {
            if now.saturating_sub(*at) <= self.window_ms && self.order.len() < self.capacity {
                break;
            }
            // Only the entry this queue slot recorded; a newer sighting keeps its own.
            if self.seen.get(id) == Some(at) {
                self.seen.remove(id);
            }
            self.order.pop_front();
        }
        let id: Seen = (api_key.clone(), message_id.to_string());
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id.clone(), now);
        self.order.push_back((id, now));
        true
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

impl Shared {
    /// Answers an `incoming-message` from session `key` with the frame to send back.
    pub fn on_incoming(
        &self,
        key: SessionKey,
        incoming: Result<IncomingFrame, RefusedIncoming>,
    ) -> Option<String> {
        let IncomingFrame { message_id, data } = match incoming {
            Ok(frame) => frame,
            Err(refused) => return Some(refused_incoming_frame(&refused)),
        };
        let identity = lock(&self.registry).identity_of(key)?;
        let first = lock(&self.incoming).first_time(&identity.api_key, &message_id, monotonic_ms());
        if let (true, Some(journal)) = (first, self.journal.get()) {
            journal.incoming(&identity.api_key, &message_id, crate::clock::now_ms());
        }
        match (first, self.directory.get()) {
            (false, _) => {}
            (true, None) => self.log(|| LogEvent::message_received(&identity, data)),
            (true, Some(directory)) => {
                let across = directory.first_incoming(&identity.api_key, &message_id);
                let (host, wanted) = (self.host.clone(), self.config.log_events);
                tokio::spawn(async move {
                    if across.await && wanted {
                        let event = LogEvent::message_received(&identity, data);
                        host.deliver(Delivery::Log(event));
                    }
                });
            }
        }
        Some(incoming_ack_frame(&message_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_not_new() {
        let mut seen = SeenIncoming::new(1000, 100);
        let a: Arc<str> = "key-a".into();
        let b: Arc<str> = "key-b".into();
        assert!(seen.first_time(&a, "m1", 0));
        assert!(!seen.first_time(&a, "m1", 500));
        assert!(seen.first_time(&b, "m1", 500), "per API key");
        assert!(
            seen.first_time(&a, "m1", 1600),
            "forgotten after the window"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut seen = SeenIncoming::new(u64::MAX, 3);
        let a: Arc<str> = "k".into();
        for n in 0..10 {
            assert!(seen.first_time(&a, &format!("m{n}"), 0));
        }
        assert!(seen.remembered() <= 3);
    }
}
