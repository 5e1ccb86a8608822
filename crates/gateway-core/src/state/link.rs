//! The part of a session shared between the registry (any thread) and the task
//! that owns its socket: frames waiting to be written and their size in bytes, a
//! wake-up, a sign of life, and when the socket last took bytes.
//!
//! Write-through: while the task is parked with nothing of its own to write, the
//! thread that queued commands (JavaScript's, at the end of its tick) writes them to
//! the socket itself, without waking the task: one thread hand-off less per send.
//! What the socket does not take at once is left for the task to finish, woken: the
//! task takes it whenever it next runs (`running`), whatever woke it, and writes it
//! before any other byte; until then nobody writes through (`parked` refuses).
//!
//! Lock order: the registry's lock may be held when a link's is taken, never the
//! other way; nothing is locked while a link's lock is held, and nothing awaits.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::task::AbortHandle;

use crate::clock::{monotonic_ms, wall_ms_at};
use crate::metrics;
use crate::protocol::{frame_len, push_text_frame, Frame};

/// Why the gateway asks a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseRequest {
    HeartbeatTimeout,
    /// Writing to it made no progress for a whole heartbeat timeout: the extension
    /// stopped reading.
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
    /// The frame would take the bytes waiting for this socket past the limit; they
    /// are `queued` now.
    Full {
        queued: usize,
    },
}

/// Where a send's command went (`enqueue_command`).
#[derive(Debug, PartialEq, Eq)]
pub enum CommandQueued {
    /// Into the socket's queue, which was empty: the task needs a wake-up.
    First,
    /// Into the socket's queue, behind frames whose wake-up is due.
    Behind,
    /// Nowhere: the session is closing (it fails its requests as it leaves).
    Closing,
    /// To wait for room (`maxQueuedBytes`) behind those already waiting; it joins the
    /// socket's queue as the socket takes bytes (`wrote`), in order.
    Waiting,
}

/// A command that would wait for room, but `waiting` commands already do.
#[derive(Debug)]
pub struct TooManyWaiting {
    pub waiting: usize,
    pub frame: Frame,
}

/// A command withdrawn while it waited for room: never written.
#[derive(Debug, PartialEq, Eq)]
pub struct Withdrawn {
    /// The bytes queued for the socket then.
    pub queued: usize,
}

/// `Outbound::writable` while the task may be running: no socket.
const NOT_WRITABLE: RawFd = -1;

thread_local! {
    /// A write-through's bytes, kept for the next on the same thread: a batch of
    /// commands is written many times a second, and a buffer of its size each time was
    /// an allocation and a free per write (docs/performance.md).
    static WRITE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest write-through buffer kept for the next: bigger batches are rare.
const KEPT_WRITE_BUFFER: usize = 64 * 1024;

/// Kept within 48 bytes (56 in its mutex), so that the link is a 160-byte malloc chunk
/// rather than 176: every idle session has one. A `Vec` of frames (they are only ever
/// taken all at once) and a bare descriptor rather than an `Option`.
struct Outbound {
    frames: Vec<Frame>,
    close: Option<CloseRequest>,
    /// Ends the session's task without waiting for it (a `stop()` out of patience).
    abort: Option<AbortHandle>,
    /// The socket, while its task is parked with nothing of its own to write (not
    /// even half a frame, not tungstenite's): others may write whole frames to it.
    /// Taken back (under this lock) whenever the task runs. `NOT_WRITABLE` otherwise.
    writable: RawFd,
    /// What only a busy session needs. Boxed: every idle session's link would carry it.
    rare: Option<Box<Rare>>,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            frames: Vec::new(),
            close: None,
            abort: None,
            writable: NOT_WRITABLE,
            rare: None,
        }
    }
}

/// Durable mode (README "Durable mode"): whether a command waiting in the room queue
/// may go to the socket's queue as far as the store is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Yes: no store, or the store has it as leaving.
    Open,
    /// Not yet: the store has not been asked.
    Shut,
    /// Not yet: it had room, and the store was asked to mark it leaving.
    Asked,
}

/// Asks the store to mark commands as leaving (`SessionLink::set_clearance`); called
/// outside the link's lock, possibly with the registry's held.
pub type Clearance = Box<dyn Fn(Vec<u128>) + Send + Sync>;

#[derive(Default)]
struct Rare {
    /// The rest of frames written through in part: the task writes it before anything.
    unfinished: Option<Bytes>,
    /// Commands waiting for room, in the order they came, with their request ids.
    waiting: VecDeque<(u128, Frame, Gate)>,
    /// The `maxQueuedBytes` they wait under.
    max_bytes: usize,
}

impl Outbound {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn take_unfinished(&mut self) -> Option<Bytes> {
        let rare = self.rare.as_mut()?;
        let rest = rare.unfinished.take();
        self.tidy();
        rest
    }

    fn has_unfinished(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.unfinished.is_some())
    }

    /// Frees the box once it holds nothing.
    fn tidy(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.unfinished.is_none() && r.waiting.is_empty())
        {
            self.rare = None;
        }
    }
}

pub struct SessionLink {
    outbound: Mutex<Outbound>,
    /// The session's task, woken by `wake()`. A bare waker and a flag rather than a
    /// `Notify`, whose `Notified` future would sit in every idle session's task.
    task: AtomicWaker,
    /// A `wake()` the task has not seen yet.
    woken: AtomicBool,
    /// A close was requested (kept under `outbound` too): read without the lock by
    /// device selection, which asks it of every device of a key on every send.
    closing: AtomicBool,
    /// Commands wait for room (kept under `outbound` too): read without the lock after
    /// every write and every settled request, which have nothing to do unless it is set.
    waiting: AtomicBool,
    /// Durable mode: every command waits for the store to have it as leaving before it
    /// joins the socket's queue; asked when it has room, so one waiting for room is
    /// still only queued in the store.
    clearance: OnceLock<Clearance>,
    /// `monotonic_ms()` of the last frame from the extension.
    last_seen: AtomicU64,
    /// Bytes of frames queued or being written and not yet taken by the socket.
    queued_bytes: AtomicUsize,
    /// `monotonic_ms()` of the last time the socket took bytes, or of when bytes
    /// started waiting after none did.
    last_progress: AtomicU64,
    /// The extension reads media from `dataUrl` alone (`auth` `data.fields`): its
    /// media commands carry it once, whatever the dialect.
    data_url_only: bool,
    /// Tests: run by `write_through` after a partial write, between releasing the lock
    /// and waking the task, to force what another thread may do in that gap.
    #[cfg(test)]
    pub(crate) in_the_gap: Mutex<Option<std::sync::Arc<dyn Fn() + Send + Sync>>>,
}

impl Default for SessionLink {
    fn default() -> Self {
        let now = monotonic_ms();
        Self {
            outbound: Mutex::default(),
            task: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            clearance: OnceLock::new(),
            last_seen: AtomicU64::new(now),
            queued_bytes: AtomicUsize::new(0),
            last_progress: AtomicU64::new(now),
            data_url_only: false,
            #[cfg(test)]
            in_the_gap: Mutex::default(),
        }
    }
}

impl SessionLink {
    /// The link of a session whose extension said which media field it reads
    /// (docs/extension-protocol.md, "Dialects").
    pub fn reading(data_url_only: bool) -> Self {
        Self {
            data_url_only,
            ..Self::default()
        }
    }

    /// Queues a frame for the connection task and wakes it; false if the session is
    /// closing or `max_bytes` would be passed (a ping, an error reply: the extension
    /// is not reading them anyway).
    pub fn push(&self, frame: Frame, max_bytes: usize) -> bool {
        match self.enqueue(frame, max_bytes) {
            Enqueued::First => {
                self.wake();
                true
            }
            Enqueued::Behind => true,
            Enqueued::Closing | Enqueued::Full { .. } => false,
        }
    }

    /// Queues a frame without waking the connection task: with `Enqueued::First` the
    /// caller owes a `wake()`, which it may save up to send several frames at once.
    /// Refused when the bytes waiting for the socket would pass `max_bytes`.
    pub fn enqueue(&self, frame: Frame, max_bytes: usize) -> Enqueued {
        let len = frame_len(&frame);
        let mut out = lock(&self.outbound);
        if out.close.is_some() {
            return Enqueued::Closing;
        }
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued.saturating_add(len) > max_bytes {
            return Enqueued::Full { queued };
        }
        if queued == 0 {
            // The stall clock starts when bytes start waiting, not at the last write.
            self.last_progress.store(monotonic_ms(), Ordering::Relaxed);
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        out.frames.push(frame);
        if out.frames.len() == 1 {
            Enqueued::First
        } else {
            Enqueued::Behind
        }
    }

    /// Queues a send's command, or, if its bytes would take those waiting for the
    /// socket past `max_bytes`, keeps it waiting for room, behind any command already
    /// waiting (a command larger than `max_bytes` goes once nothing is queued). At
    /// most `max_waiting` commands wait. With `Enqueued::First` the caller owes a `wake()`.
    pub fn enqueue_command(
        &self,
        request_id: u128,
        frame: Frame,
        max_bytes: usize,
        max_waiting: usize,
    ) -> Result<CommandQueued, TooManyWaiting> {
        // Whatever built the command (a send, a pacing queue, another process, a
        // device wait), the extension gets the fields it reads.
        let mut frame = frame;
        if let (Frame::Media(media), true) = (&mut frame, self.data_url_only) {
            media.only_data_url();
        }
        let len = frame_len(&frame);
        let mut out = lock(&self.outbound);
        if out.close.is_some() {
            return Ok(CommandQueued::Closing);
        }
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        let room = queued == 0 || queued.saturating_add(len) <= max_bytes;
        let durable = self.clearance.get().is_some();
        if room && !durable && !self.waiting.load(Ordering::Relaxed) {
            if queued == 0 {
                self.last_progress.store(monotonic_ms(), Ordering::Relaxed);
            }
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
            out.frames.push(frame);
            return Ok(if out.frames.len() == 1 {
                CommandQueued::First
            } else {
                CommandQueued::Behind
            });
        }
        let rare = out.rare();
        if rare.waiting.len() >= max_waiting {
            let waiting = rare.waiting.len();
            out.tidy();
            return Err(TooManyWaiting { waiting, frame });
        }
        rare.max_bytes = max_bytes;
        let gate = if durable { Gate::Shut } else { Gate::Open };
        rare.waiting.push_back((request_id, frame, gate));
        self.waiting.store(true, Ordering::Relaxed);
        if durable {
            let (_, asked) = self.admit_waiting(&mut out);
            drop(out);
            self.ask(asked);
        }
        Ok(CommandQueued::Waiting)
    }

    /// Durable mode: `clearance` asks the store to mark commands as leaving.
    pub fn set_clearance(&self, clearance: Clearance) {
        let _ = self.clearance.set(clearance);
    }

    fn ask(&self, asked: Vec<u128>) {
        if asked.is_empty() {
            return;
        }
        if let Some(clearance) = self.clearance.get() {
            clearance(asked);
        }
    }

    /// Durable mode: the store has these commands as leaving; those with room join the
    /// socket's queue. Returns whether they went into an empty one (it is then owed a
    /// write, `write_through`).
    pub fn cleared(&self, request_ids: &[u128]) -> bool {
        let mut out = lock(&self.outbound);
        let Some(rare) = out.rare.as_mut() else {
            return false;
        };
        // The store lets a whole commit's commands go at once: found by search.
        let mut ids = request_ids.to_vec();
        ids.sort_unstable();
        for (id, _, gate) in rare.waiting.iter_mut() {
            if *gate == Gate::Asked && ids.binary_search(id).is_ok() {
                *gate = Gate::Open;
            }
        }
        let (first, asked) = self.admit_waiting(&mut out);
        drop(out);
        self.ask(asked);
        first
    }

    /// Takes a command off the room queue if it still waits there (it was never
    /// written); else it was queued for the socket, or never waited.
    pub fn withdraw(&self, request_id: u128) -> Option<Withdrawn> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        let mut out = lock(&self.outbound);
        let rare = out.rare.as_mut()?;
        let at = rare.waiting.iter().position(|(id, ..)| *id == request_id)?;
        rare.waiting.remove(at);
        self.waiting
            .store(!rare.waiting.is_empty(), Ordering::Relaxed);
        out.tidy();
        Some(Withdrawn {
            queued: self.queued_bytes.load(Ordering::Relaxed),
        })
    }

    /// Durable mode, stopping: takes off the room queue, in order, the commands `keep`
    /// selects among those the store was not asked to mark leaving (never written).
    pub fn withdraw_unasked(&self, keep: impl Fn(u128) -> bool) -> Vec<u128> {
        if !self.waiting.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut out = lock(&self.outbound);
        let Some(rare) = out.rare.as_mut() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        rare.waiting.retain(|(id, _, gate)| {
            let take = *gate == Gate::Shut && keep(*id);
            if take {
                taken.push(*id);
            }
            !take
        });
        self.waiting
            .store(!rare.waiting.is_empty(), Ordering::Relaxed);
        out.tidy();
        taken
    }

    /// Whether the command of `request_id` waits for room.
    pub fn is_waiting(&self, request_id: u128) -> bool {
        self.waiting.load(Ordering::Acquire)
            && lock(&self.outbound)
                .rare
                .as_ref()
                .is_some_and(|r| r.waiting.iter().any(|(id, ..)| *id == request_id))
    }

    /// Every command waiting for room, in order (the session leaves, or hands its
    /// unwritten sends to other processes).
    pub fn take_waiting(&self) -> Vec<(u128, Frame)> {
        if !self.waiting.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut out = lock(&self.outbound);
        let taken = out.rare.as_mut().map_or_else(Vec::new, |r| {
            r.waiting
                .drain(..)
                .map(|(id, frame, _)| (id, frame))
                .collect()
        });
        self.waiting.store(false, Ordering::Relaxed);
        out.tidy();
        taken
    }

    /// Commands waiting for room.
    pub fn waiting_count(&self) -> usize {
        if !self.waiting.load(Ordering::Acquire) {
            return 0;
        }
        lock(&self.outbound)
            .rare
            .as_ref()
            .map_or(0, |r| r.waiting.len())
    }

    /// Moves the commands that now fit from the room queue to the socket's queue, in
    /// order; whether any moved into an empty queue (the task is then owed a wake-up).
    /// Durable mode: only those the store has as leaving move; those that have room and
    /// wait for it are returned, for the store to be asked (outside the lock).
    fn admit_waiting(&self, out: &mut Outbound) -> (bool, Vec<u128>) {
        let was_empty = out.frames.is_empty();
        // A closing session writes nothing more: what waits stays unwritten, for the
        // registry to send elsewhere as the session leaves.
        if out.close.is_some() {
            return (false, Vec::new());
        }
        let Some(rare) = out.rare.as_mut() else {
            return (false, Vec::new());
        };
        let mut moved = false;
        while let Some((_, frame, Gate::Open)) = rare.waiting.front() {
            let len = frame_len(frame);
            let queued = self.queued_bytes.load(Ordering::Relaxed);
            if queued != 0 && queued.saturating_add(len) > rare.max_bytes {
                break;
            }
            if queued == 0 {
                self.last_progress.store(monotonic_ms(), Ordering::Relaxed);
            }
            let Some((_, frame, _)) = rare.waiting.pop_front() else {
                break;
            };
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
            out.frames.push(frame);
            moved = true;
        }
        let mut asked = Vec::new();
        if self.clearance.get().is_some() {
            // The bytes ahead of each: queued for the socket, or cleared or asked for.
            let mut ahead = self.queued_bytes.load(Ordering::Relaxed);
            for (id, frame, gate) in rare.waiting.iter_mut() {
                let len = frame_len(frame);
                if *gate == Gate::Shut {
                    if ahead != 0 && ahead.saturating_add(len) > rare.max_bytes {
                        break;
                    }
                    *gate = Gate::Asked;
                    asked.push(*id);
                }
                ahead = ahead.saturating_add(len);
            }
        }
        self.waiting
            .store(!rare.waiting.is_empty(), Ordering::Relaxed);
        out.tidy();
        (moved && was_empty, asked)
    }

    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }

    pub fn request_close(&self, why: CloseRequest) {
        lock(&self.outbound).close.get_or_insert(why);
        self.closing.store(true, Ordering::Release);
        self.wake();
    }

    /// Everything queued so far, and a close request if there is one.
    pub fn take(&self) -> (Vec<Frame>, Option<CloseRequest>) {
        let mut out = lock(&self.outbound);
        (std::mem::take(&mut out.frames), out.close)
    }

    /// The task runs: nobody else writes to its socket until `parked`. Returns the
    /// rest of a frame written through in part, which the task must write before any
    /// other byte: taken here, whenever the task runs, and not at its wake-up, since it
    /// may run for another reason (a read) before the writing thread has woken it.
    pub fn running(&self) -> Option<Bytes> {
        let mut out = lock(&self.outbound);
        out.writable = NOT_WRITABLE;
        out.take_unfinished()
    }

    /// The task parks with nothing of its own to write: frames may be written
    /// through to `socket` until it runs again. Not while the rest of a write-through
    /// waits for it (it has not run since), so that nothing is written before it.
    pub fn parked(&self, socket: RawFd) {
        let mut out = lock(&self.outbound);
        if !out.has_unfinished() {
            out.writable = socket;
        }
    }

    /// Writes the queued frames to the socket from this thread if the task is parked
    /// and idle, else wakes it to write them.
    pub fn write_through(&self) {
        let mut out = lock(&self.outbound);
        if out.frames.is_empty() {
            return; // The task, running meanwhile, took them.
        }
        let socket = out.writable;
        if socket == NOT_WRITABLE || out.close.is_some() {
            drop(out);
            return self.wake();
        }
        if out.frames.iter().any(|f| matches!(f, Frame::Media(_))) {
            // Media goes out from its own buffers, a part at a time, by the task.
            drop(out);
            return self.wake();
        }
        let mut bytes = WRITE_BUFFER.take();
        bytes.clear();
        bytes.reserve(out.frames.iter().map(frame_len).sum());
        for frame in &out.frames {
            if let Frame::Text(text) = frame {
                push_text_frame(&mut bytes, text);
            }
        }
        let written = send_now(socket, &bytes);
        let rest = (written > 0 && written < bytes.len())
            .then(|| Bytes::copy_from_slice(&bytes[written..]));
        if bytes.capacity() <= KEPT_WRITE_BUFFER {
            WRITE_BUFFER.set(bytes);
        }
        if written == 0 {
            drop(out);
            return self.wake();
        }
        out.frames.clear();
        self.progress(written);
        metrics::bytes_written(written);
        // Room made: commands waiting for it join the queue, for the task to write.
        let (admitted, asked) = if self.waiting.load(Ordering::Relaxed) {
            self.admit_waiting(&mut out)
        } else {
            (false, Vec::new())
        };
        if let Some(rest) = rest {
            // Under the lock that `running` and `parked` take: the task, whenever it runs
            // next, finds the rest first, and nobody writes through until it has.
            out.rare().unfinished = Some(rest);
            out.writable = NOT_WRITABLE;
            drop(out);
            #[cfg(test)]
            {
                let gap = lock(&self.in_the_gap).clone();
                if let Some(gap) = gap {
                    gap();
                }
            }
            self.wake();
        } else {
            drop(out);
            if admitted {
                self.wake();
            }
        }
        self.ask(asked);
    }

    /// Ready once for any number of `wake()`s since it was last ready; a wake-up
    /// before the first poll is kept.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        // A wake() between the swap and the register found no waker to wake.
        if self.woken.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub fn close_requested(&self) -> Option<CloseRequest> {
        lock(&self.outbound).close
    }

    pub fn set_abort(&self, handle: AbortHandle) {
        lock(&self.outbound).abort = Some(handle);
    }

    /// Drops the session's task wherever it is; it cleans up as it is dropped.
    pub fn abort(&self) {
        if let Some(handle) = lock(&self.outbound).abort.take() {
            handle.abort();
        }
    }

    /// Whether the session has been asked to close: it is chosen for nothing more.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The socket took `n` bytes of what was queued; commands waiting for room that
    /// now fit join the queue (the task, which calls this, is woken for them).
    pub fn wrote(&self, n: usize) {
        self.progress(n);
        if self.waiting.load(Ordering::Acquire) {
            let (admitted, asked) = self.admit_waiting(&mut lock(&self.outbound));
            if admitted {
                self.wake();
            }
            self.ask(asked);
        }
    }

    /// Bytes the session's task queued on its own (a pong): counted like commands, since
    /// `wrote` is told of every byte the socket takes. False, and nothing counted, when
    /// they would take the bytes waiting past `max_bytes` (the extension is not reading).
    pub fn queued_own(&self, len: usize, max_bytes: usize) -> bool {
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued.saturating_add(len) > max_bytes {
            return false;
        }
        if queued == 0 {
            self.last_progress.store(monotonic_ms(), Ordering::Relaxed);
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    fn progress(&self, n: usize) {
        self.last_progress.store(monotonic_ms(), Ordering::Relaxed);
        self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Bytes have waited and the socket has taken none for longer than `limit_ms`, at
    /// monotonic time `now`.
    pub fn stalled(&self, now: u64, limit_ms: u64) -> bool {
        self.queued_bytes() > 0
            && now.saturating_sub(self.last_progress.load(Ordering::Relaxed)) > limit_ms
    }

    /// Something is being written and the socket took bytes within `limit_ms`: a
    /// slow line, not a dead one, even if the extension's own frames are late.
    pub fn writing(&self, now: u64, limit_ms: u64) -> bool {
        self.queued_bytes() > 0 && !self.stalled(now, limit_ms)
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

/// Writes what the socket takes without waiting; 0 when it takes nothing or fails
/// (the task, woken, meets the same condition and deals with it).
fn send_now(socket: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: `socket` is open: the task owning it parked with it registered under the
    // link's lock, which the caller holds, and takes it back under that lock before
    // closing it (`running`, also from the task's drop). No other byte is written to it
    // meanwhile: the task writes only after `running`, and only whole frames or, first,
    // the rest this leaves (`unfinished`). `bytes` is a live slice of `len` bytes.
    // MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE.
    let n = unsafe {
        libc::send(
            socket,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

/// A poisoned lock only means another thread panicked mid-update of plain data;
/// the data is still usable, and a gateway must keep serving.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session's link is an `Arc`: 16 bytes of counts plus this. Up to 136 bytes
    /// it is a 160-byte glibc chunk (it was 176). Tests add a hook of their own.
    #[test]
    fn a_link_stays_within_136_bytes() {
        type Hook = Mutex<Option<std::sync::Arc<dyn Fn() + Send + Sync>>>;
        let size = std::mem::size_of::<SessionLink>() - std::mem::size_of::<Hook>();
        assert!(size <= 136, "SessionLink grew to {size} bytes");
    }

    fn text(s: &'static str) -> Frame {
        Frame::Text(s.into())
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn an_extension_reading_data_url_gets_media_once_whatever_built_the_command() {
        use crate::config::Dialect;
        use crate::protocol::{media_frame, MediaCommand, SendKind};
        let command = MediaCommand {
            kind: SendKind::Video,
            request_id: "r",
            phone_number: "+1",
            caption: "",
            mime_type: "video/mp4",
            document_name: None,
        };
        let url = "data:video/mp4;base64,AAAA";
        for (data_url_only, dialect, fields) in [
            (true, Dialect::Compat, vec!["dataUrl"]),
            (true, Dialect::V1, vec!["dataUrl"]),
            (false, Dialect::Compat, vec!["dataUrl", "videoDataUrl"]),
            (false, Dialect::V1, vec!["videoDataUrl"]),
        ] {
            let link = SessionLink::reading(data_url_only);
            let frame = media_frame(&command, url.into(), dialect);
            assert_eq!(
                link.enqueue_command(1, frame, MAX, 10).unwrap(),
                CommandQueued::First
            );
            let (frames, _) = link.take();
            let Some(Frame::Media(media)) = frames.into_iter().next() else {
                panic!("a media frame");
            };
            assert_eq!(
                link.queued_bytes.load(Ordering::Relaxed),
                frame_len(&Frame::Media(media.clone())),
                "counted as written"
            );
            let v: serde_json::Value = serde_json::from_slice(&media.to_vec()).unwrap();
            let mut read: Vec<&str> = v["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| k.ends_with("ataUrl"))
                .collect();
            read.sort_unstable();
            assert_eq!(read, fields, "{dialect:?} {data_url_only}");
            assert!(read.iter().all(|f| v["data"][f] == url));
        }
    }

    /// Counts its wake-ups.
    struct Wakes(AtomicUsize);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_reaches_the_task_once_whenever_it_comes() {
        let wakes = std::sync::Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let link = SessionLink::default();
        assert!(link.poll_woken(&mut cx).is_pending());
        // Frames pushed while the task waits wake it, once for several.
        assert!(link.push(text("a"), MAX));
        link.wake();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(link.poll_woken(&mut cx).is_ready());
        assert!(link.poll_woken(&mut cx).is_pending());
        // A wake-up before the task polls again is kept, not lost.
        link.request_close(CloseRequest::Shutdown);
        assert!(link.poll_woken(&mut cx).is_ready());
        assert!(link.poll_woken(&mut cx).is_pending());
    }

    #[test]
    fn a_close_request_stops_the_queue() {
        let link = SessionLink::default();
        assert!(link.push(text("x"), MAX));
        link.request_close(CloseRequest::Stalled);
        assert!(link.closing());
        assert!(!link.push(text("after close"), MAX));
        let (frames, close) = link.take();
        assert_eq!(frames.len(), 1);
        assert_eq!(close, Some(CloseRequest::Stalled));
    }

    #[test]
    fn bytes_waiting_are_bounded_and_count_down_as_written() {
        let link = SessionLink::default();
        let len = frame_len(&text("hello"));
        assert_eq!(link.enqueue(text("hello"), 2 * len), Enqueued::First);
        assert_eq!(link.enqueue(text("hello"), 2 * len), Enqueued::Behind);
        assert_eq!(
            link.enqueue(text("hello"), 2 * len),
            Enqueued::Full { queued: 2 * len }
        );
        assert_eq!(link.queued_bytes(), 2 * len);
        link.wrote(len + 1);
        assert_eq!(link.queued_bytes(), len - 1);
        assert_eq!(link.enqueue(text("hello"), 2 * len), Enqueued::Behind);
    }

    fn command(link: &SessionLink, id: u128, len: usize, max: usize) -> CommandQueued {
        link.enqueue_command(id, Frame::Text("x".repeat(len).into()), max, 10)
            .expect("room to wait")
    }

    #[test]
    fn commands_without_room_wait_in_order_and_join_as_bytes_are_written() {
        let link = SessionLink::default();
        let wakes = std::sync::Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(wakes.clone());
        assert!(link
            .poll_woken(&mut Context::from_waker(&waker))
            .is_pending());
        // 1000-byte payloads: 1004 bytes on the wire each.
        let max = 2500;
        assert_eq!(command(&link, 1, 1000, max), CommandQueued::First);
        assert_eq!(command(&link, 2, 1000, max), CommandQueued::Behind);
        assert_eq!(command(&link, 3, 1000, max), CommandQueued::Waiting);
        // Behind one that waits, even a small one waits: first come, first written.
        assert_eq!(command(&link, 4, 10, max), CommandQueued::Waiting);
        assert!(link.is_waiting(3) && link.is_waiting(4) && !link.is_waiting(1));
        assert_eq!(link.waiting_count(), 2);
        assert_eq!(link.take().0.len(), 2);
        // Room for the third but not yet the fourth? Both fit once 1004 bytes are out.
        link.wrote(500);
        assert!(link.is_waiting(3), "no room yet");
        link.wrote(504);
        assert!(!link.is_waiting(3) && !link.is_waiting(4));
        assert_eq!(link.waiting_count(), 0);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the task is woken for them"
        );
        let (frames, _) = link.take();
        let lens: Vec<usize> = frames.iter().map(frame_len).collect();
        assert_eq!(lens, [1004, 12]);
        assert_eq!(link.queued_bytes(), 1004 + 1004 + 12);
    }

    #[test]
    fn a_command_larger_than_the_limit_goes_once_nothing_is_queued() {
        let link = SessionLink::default();
        assert_eq!(command(&link, 1, 10, 100), CommandQueued::First);
        assert_eq!(command(&link, 2, 1000, 100), CommandQueued::Waiting);
        link.take();
        link.wrote(12);
        assert_eq!(link.take().0.len(), 1, "alone, it goes");
        assert_eq!(link.queued_bytes(), 1004);
        // An empty link takes it at once.
        let fresh = SessionLink::default();
        assert_eq!(command(&fresh, 1, 1000, 100), CommandQueued::First);
    }

    #[test]
    fn a_waiting_command_is_withdrawn_once_and_the_number_waiting_is_bounded() {
        let link = SessionLink::default();
        assert_eq!(command(&link, 1, 100, 150), CommandQueued::First);
        for id in 2..4 {
            let queued = link.enqueue_command(id, Frame::Text("y".repeat(100).into()), 150, 2);
            assert_eq!(queued.ok(), Some(CommandQueued::Waiting));
        }
        let refused = link
            .enqueue_command(4, Frame::Text("z".into()), 150, 2)
            .expect_err("two wait already");
        assert_eq!(refused.waiting, 2);
        assert_eq!(link.withdraw(2), Some(Withdrawn { queued: 102 }));
        assert_eq!(link.withdraw(2), None, "withdrawn once");
        assert_eq!(link.withdraw(1), None, "queued for the socket: not waiting");
        link.request_close(CloseRequest::Shutdown);
        assert_eq!(command(&link, 5, 1, 150), CommandQueued::Closing);
        // Closing, bytes still written (the frame under way) admit nothing more.
        link.wrote(102);
        assert!(link.is_waiting(3), "left for the registry");
        assert_eq!(link.take_waiting().len(), 1);
        assert_eq!(link.waiting_count(), 0);
    }

    #[test]
    fn durable_commands_go_once_the_store_has_them_and_are_asked_for_only_with_room() {
        let link = SessionLink::default();
        let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        link.set_clearance(Box::new(move |ids| lock(&seen).extend(ids)));
        let take_asked = || std::mem::take(&mut *lock(&asked));
        // 1004 bytes on the wire each, 2500 of room: two are asked for at once.
        let max = 2500;
        for id in 1..=4 {
            assert_eq!(command(&link, id, 1000, max), CommandQueued::Waiting);
        }
        assert_eq!(take_asked(), [1, 2]);
        assert_eq!(
            link.take().0.len(),
            0,
            "nothing goes before the store has it"
        );
        assert!(link.is_waiting(1), "queued until then");
        // Cleared out of order: the second waits for the first.
        assert!(!link.cleared(&[2]));
        assert_eq!(link.take().0.len(), 0);
        assert!(link.cleared(&[1]), "into an empty queue");
        let (frames, _) = link.take();
        assert_eq!(frames.len(), 2, "both, in order");
        assert!(take_asked().is_empty(), "no room for the third yet");
        // The socket takes the first: room for the third.
        link.wrote(1004);
        assert_eq!(take_asked(), [3]);
        // Stopping: the fourth was never asked for and is kept; the third is leaving.
        assert_eq!(link.withdraw_unasked(|_| true), [4]);
        assert!(link.is_waiting(3));
        assert_eq!(link.waiting_count(), 1);
    }

    fn socket_pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        (ours, theirs)
    }

    fn encoded(texts: &[&str]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for text in texts {
            push_text_frame(&mut bytes, text);
        }
        bytes
    }

    fn read_all(socket: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = socket.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn frames_are_written_through_only_while_the_task_is_parked() {
        use std::os::fd::AsRawFd;
        let (ours, mut theirs) = socket_pair();
        let link = SessionLink::default();
        link.enqueue(text("one"), MAX);
        link.enqueue(text("two"), MAX);
        link.write_through();
        assert!(
            read_all(&mut theirs).is_empty(),
            "the task runs: left to it"
        );
        assert_eq!(link.take().0.len(), 2);
        link.wrote(link.queued_bytes()); // As the task does.

        link.parked(ours.as_raw_fd());
        link.enqueue(text("one"), MAX);
        link.enqueue(text("two"), MAX);
        link.write_through();
        assert_eq!(read_all(&mut theirs), encoded(&["one", "two"]));
        assert_eq!(link.queued_bytes(), 0);
        let (frames, _) = link.take();
        assert!(link.running().is_none() && frames.is_empty());

        link.enqueue(text("three"), MAX);
        link.write_through();
        assert!(read_all(&mut theirs).is_empty());
    }

    #[test]
    fn what_the_socket_does_not_take_is_left_to_the_task_first() {
        use std::os::fd::AsRawFd;
        let (ours, mut theirs) = socket_pair();
        let link = SessionLink::default();
        let big = "x".repeat(4 << 20);
        link.parked(ours.as_raw_fd());
        link.enqueue(Frame::Text(big.clone().into()), 8 << 20);
        link.write_through();
        let written = read_all(&mut theirs);
        // Parked again before it ran: still nothing may be written before the rest.
        link.parked(ours.as_raw_fd());
        link.enqueue(text("early"), 8 << 20);
        link.write_through();
        assert_eq!(read_all(&mut theirs), Vec::<u8>::new());
        let (frames, _) = link.take();
        let rest = link
            .running()
            .expect("a socket buffer is smaller than 4 MiB");
        assert_eq!(frames.len(), 1, "the early frame waits for the task");
        assert_eq!([written, rest.to_vec()].concat(), encoded(&[&big]));
        assert_eq!(link.queued_bytes(), rest.len() + frame_len(&text("early")));
        // No longer parked: the next frame waits for the task.
        link.enqueue(text("after"), MAX);
        link.write_through();
        assert!(read_all(&mut theirs).is_empty());
    }

    #[test]
    fn stalled_means_waiting_bytes_and_no_progress() {
        let link = SessionLink::default();
        let later = monotonic_ms() + 10_000;
        assert!(!link.stalled(later, 5_000), "nothing queued");
        link.push(text("x"), MAX);
        assert!(link.stalled(later, 5_000));
        assert!(!link.stalled(later, 20_000));
        assert!(link.writing(later, 20_000));
        // Taken but not written still counts; written does not.
        link.take();
        assert!(link.stalled(later, 5_000));
        link.wrote(link.queued_bytes());
        assert!(!link.stalled(later, 5_000));
        assert!(!link.writing(later, 5_000));
    }
}
