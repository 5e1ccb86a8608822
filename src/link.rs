//! The part of a session shared between the registry (any thread) and the task
//! that owns its socket: frames waiting to be written, a wake-up, a sign of life.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::clock::now_ms;

/// Frames queued for one extension beyond this mean it stopped reading; the session
/// is closed rather than letting the queue grow without bound.
pub const MAX_QUEUED_FRAMES: usize = 4096;

/// Why the gateway asks a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseRequest {
    HeartbeatTimeout,
    Overflow,
}

impl CloseRequest {
    pub fn code_and_reason(self) -> (u16, &'static str) {
        match self {
            Self::HeartbeatTimeout => (1000, "Heartbeat timeout"),
            Self::Overflow => (1008, "Too many unread frames"),
        }
    }
}

#[derive(Default)]
struct Outbound {
    frames: VecDeque<Utf8Bytes>,
    close: Option<CloseRequest>,
}

pub struct SessionLink {
    outbound: Mutex<Outbound>,
    wake: Notify,
    last_seen_ms: AtomicU64,
}

impl Default for SessionLink {
    fn default() -> Self {
        Self { outbound: Mutex::default(), wake: Notify::new(), last_seen_ms: AtomicU64::new(now_ms()) }
    }
}

impl SessionLink {
    /// Queues a frame for the connection task; false if the session is closing.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        let mut out = lock(&self.outbound);
        if out.close.is_some() {
            return false;
        }
        if out.frames.len() >= MAX_QUEUED_FRAMES {
            out.close = Some(CloseRequest::Overflow);
            out.frames.clear();
        } else {
            out.frames.push_back(frame);
        }
        drop(out);
        self.wake.notify_one();
        true
    }

    pub fn request_close(&self, why: CloseRequest) {
        lock(&self.outbound).close.get_or_insert(why);
        self.wake.notify_one();
    }

    /// Everything queued so far, and a close request if there is one.
    pub fn take(&self) -> (VecDeque<Utf8Bytes>, Option<CloseRequest>) {
        let mut out = lock(&self.outbound);
        (std::mem::take(&mut out.frames), out.close)
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }

    pub fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data;
/// the data is still usable, and a gateway must keep serving.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_turns_into_a_close_request() {
        let link = SessionLink::default();
        for _ in 0..MAX_QUEUED_FRAMES {
            assert!(link.push("x".into()));
        }
        assert!(link.push("one too many".into()));
        let (frames, close) = link.take();
        assert!(frames.is_empty());
        assert_eq!(close, Some(CloseRequest::Overflow));
        assert!(!link.push("after close".into()));
    }
}
