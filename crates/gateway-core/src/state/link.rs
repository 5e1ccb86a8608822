//! The part of a session shared between the registry (any thread) and the task
//! that owns its socket: frames waiting to be written, a wake-up, a sign of life.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::clock::{monotonic_ms, wall_ms_at};
use crate::protocol::Frame;

/// Why the gateway asks a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseRequest {
    HeartbeatTimeout,
    /// Its queued frames could not be written for a whole heartbeat timeout: the
    /// extension stopped reading.
    Stalled,
    /// The Node server the gateway is attached to is closing.
    ServerClosing,
    /// `stop()`.
    Shutdown,
}

impl CloseRequest {
    pub fn code_and_reason(self) -> (u16, &'static str) {
        match self {
            Self::HeartbeatTimeout => (1000, "Heartbeat timeout"),
            Self::Stalled => (1008, "Extension stopped reading"),
            Self::ServerClosing => (1001, "Server closing"),
            Self::Shutdown => (1001, "Server shutting down"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The queue was empty: the connection task needs a wake-up.
    First,
    /// A wake-up is already due for the frames ahead.
    Behind,
    Closing,
}

#[derive(Default)]
struct Outbound {
    frames: VecDeque<Frame>,
    close: Option<CloseRequest>,
}

pub struct SessionLink {
    outbound: Mutex<Outbound>,
    wake: Notify,
    /// `monotonic_ms()` of the last frame from the extension.
    last_seen: AtomicU64,
    /// `monotonic_ms()` of when the connection task last finished writing everything
    /// it had taken.
    last_drained: AtomicU64,
}

impl Default for SessionLink {
    fn default() -> Self {
        let now = monotonic_ms();
        Self {
            outbound: Mutex::default(),
            wake: Notify::new(),
            last_seen: AtomicU64::new(now),
            last_drained: AtomicU64::new(now),
        }
    }
}

impl SessionLink {
    /// Queues a frame for the connection task and wakes it; false if the session is
    /// closing.
    pub fn push(&self, frame: Frame) -> bool {
        match self.enqueue(frame) {
            Enqueued::First => {
                self.wake();
                true
            }
            Enqueued::Behind => true,
            Enqueued::Closing => false,
        }
    }

    /// Queues a frame without waking the connection task: with `Enqueued::First` the
    /// caller owes a `wake()`, which it may save up to send several frames at once.
    pub fn enqueue(&self, frame: Frame) -> Enqueued {
        let mut out = lock(&self.outbound);
        if out.close.is_some() {
            return Enqueued::Closing;
        }
        out.frames.push_back(frame);
        if out.frames.len() == 1 {
            Enqueued::First
        } else {
            Enqueued::Behind
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn request_close(&self, why: CloseRequest) {
        lock(&self.outbound).close.get_or_insert(why);
        self.wake.notify_one();
    }

    /// Everything queued so far, and a close request if there is one.
    pub fn take(&self) -> (VecDeque<Frame>, Option<CloseRequest>) {
        let mut out = lock(&self.outbound);
        (std::mem::take(&mut out.frames), out.close)
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }

    pub fn close_requested(&self) -> Option<CloseRequest> {
        lock(&self.outbound).close
    }

    pub fn drained(&self) {
        self.last_drained.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Frames have waited, unwritten, for longer than `limit_ms` at monotonic time `now`.
    pub fn stalled(&self, now: u64, limit_ms: u64) -> bool {
        let waited = now.saturating_sub(self.last_drained.load(Ordering::Relaxed));
        waited > limit_ms && !lock(&self.outbound).frames.is_empty()
    }

    pub fn touch(&self) {
        self.last_seen.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Milliseconds of silence from the extension at monotonic time `now`.
    pub fn silent_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_seen.load(Ordering::Relaxed))
    }

    /// Wall-clock time of the last frame from the extension, for display.
    pub fn last_seen_wall_ms(&self) -> u64 {
        wall_ms_at(self.last_seen.load(Ordering::Relaxed))
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

    fn text(s: &'static str) -> Frame {
        Frame::Text(s.into())
    }

    #[test]
    fn a_close_request_stops_the_queue() {
        let link = SessionLink::default();
        assert!(link.push(text("x")));
        link.request_close(CloseRequest::Stalled);
        assert!(!link.push(text("after close")));
        let (frames, close) = link.take();
        assert_eq!(frames.len(), 1);
        assert_eq!(close, Some(CloseRequest::Stalled));
    }

    #[test]
    fn only_undrained_frames_count_as_stalled() {
        let link = SessionLink::default();
        let later = monotonic_ms() + 10_000;
        assert!(!link.stalled(later, 5_000), "nothing queued");
        link.push(text("x"));
        assert!(link.stalled(later, 5_000));
        assert!(!link.stalled(later, 20_000));
        link.take();
        assert!(!link.stalled(later, 5_000));
    }
}
