//! An authenticated session's task: writes queued commands, reads statuses and
//! results, and on the way out settles everything the session still owed.
//!
//! Reading, writing and close requests never wait for each other: one loop polls all
//! three, writes a command a little at a time as the socket takes it, and reads in
//! between. Error replies go through the same bounded queue as commands. A close
//! request ends the loop at once; the frame being written, if any, gets a short while
//! to complete so that the close frame never cuts it.

use std::future::poll_fn;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Future;

use super::outgoing::Outgoing;
use super::reader::{Message, ReadError};
use super::socket::Socket;
use super::trim;
use crate::error::ErrorCode;
use crate::events::LogEvent;
use crate::identity::Identity;
use crate::protocol::{self, Frame, Inbound};
use crate::state::link::{lock, CloseRequest, SessionLink};
use crate::state::registry::SessionKey;
use crate::state::requests::{connection_lost, shutdown_error};
use crate::state::Shared;
use crate::supervise::{describe, panic_error};

/// How long a closing session may take to finish the frame it is writing.
const FINISH_FRAME: Duration = Duration::from_secs(1);

/// An authenticated session handed to `session::run`.
pub struct Admitted {
    pub key: SessionKey,
    pub link: Arc<SessionLink>,
    pub identity: Arc<Identity>,
}

/// How a session ended.
enum End {
    /// The gateway closes it with this code.
    Close(u16, &'static str),
    Requested(CloseRequest),
    /// The extension closed it.
    ByPeer(u16, String),
    Lost,
}

/// The session's task, written out by hand: an `async` block keeps its own references
/// to what it borrows across an await, beside the things themselves, and every idle
/// session pays for the task's size. Up to 152 bytes (with the task tracker's 8 and
/// tokio's 96) keep tokio's task allocation at 256 bytes rather than 384.
pub fn run(ws: Socket, admitted: Admitted, shared: Arc<Shared>) -> SessionTask {
    trim::session_changed();
    SessionTask {
        ws: Some(ws),
        leaving: Some(Leaving {
            shared,
            key: admitted.key,
            link: admitted.link,
            identity: admitted.identity,
        }),
        out: None,
        finishing: None,
    }
}

/// The session's socket and what it owes on the way out, let go in this order however
/// the task ends (finished, aborted by a `stop()` out of patience, or unwinding): the
/// socket is taken back from write-through (others write to it only while the task
/// has it registered as parked, `SessionLink::parked`), closed, then the session
/// leaves. A panic while serving is caught at each poll and ends the session.
pub struct SessionTask {
    ws: Option<Socket>,
    leaving: Option<Leaving>,
    /// Frames being written to the socket, while there are: an idle session's task has
    /// none (boxed, it is a word rather than 48 bytes in every idle task).
    out: Option<Box<Outgoing>>,
    /// The closing handshake once serving has ended; it owns the socket then. Boxed,
    /// so that an idle session's task holds no room for it.
    finishing: Option<Finishing>,
}

/// The closing handshake's future; it ends with the close code and reason.
type Finishing = Pin<Box<dyn Future<Output = (u16, String)> + Send>>;

impl Future for SessionTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        let end = match std::panic::catch_unwind(AssertUnwindSafe(|| task.step(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(end)) => Ok(end),
            Err(payload) => Err(describe(payload.as_ref())),
        };
        task.finishing = None;
        task.close_socket();
        if let Some(me) = task.leaving.take() {
            match end {
                Ok(end) => me.leave(Some(end)),
                Err(panic) => {
                    me.shared.report(panic_error("session", &panic));
                    me.leave(None);
                }
            }
        }
        Poll::Ready(())
    }
}

impl SessionTask {
    /// Serves the session until it ends, then closes it (`finish`); returns the close
    /// code and reason that `session-disconnected` reports.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<(u16, String)> {
        if self.finishing.is_none() {
            let (Some(ws), Some(me)) = (self.ws.as_mut(), self.leaving.as_ref()) else {
                return Poll::Ready((1006, "Connection lost".to_string()));
            };
            if let Some(rest) = me.link.running() {
                // Another thread wrote part of a frame while the task was parked (so
                // with nothing of its own under way): the rest goes before anything
                // else, the pong or close reply tungstenite may want to write included.
                self.out.get_or_insert_with(Box::default).resume(rest);
            }
            let out = &mut self.out;
            let Poll::Ready(end) = serve_step(cx, ws, out, me.key, &me.link, &me.shared) else {
                return Poll::Pending;
            };
            let (Some(mut ws), link) = (self.ws.take(), me.link.clone()) else {
                return Poll::Ready((1006, "Connection lost".to_string()));
            };
            let mut out = self.out.take().unwrap_or_default();
            self.finishing = Some(Box::pin(async move {
                let ended = finish(&mut ws, &mut out, &link, end).await;
                // Nobody writes through to it now (the task has not parked since it
                // last ran), and it closes as it is dropped here.
                drop(link.running());
                ended
            }));
        }
        match self.finishing.as_mut() {
            Some(finishing) => finishing.as_mut().poll(cx),
            None => Poll::Ready((1006, "Connection lost".to_string())),
        }
    }

    fn close_socket(&mut self) {
        if let Some(leaving) = &self.leaving {
            // The rest of a write-through, if any, goes with the socket.
            drop(leaving.link.running());
        }
        self.ws = None;
    }
}

impl Drop for SessionTask {
    fn drop(&mut self) {
        self.finishing = None;
        self.close_socket();
        if let Some(leaving) = self.leaving.take() {
            leaving.leave(None);
        }
    }
}

/// Everything a session owes on the way out (`leave`).
struct Leaving {
    shared: Arc<Shared>,
    key: SessionKey,
    link: Arc<SessionLink>,
    identity: Arc<Identity>,
}

impl Leaving {
    /// `end` is the close code and reason, when known.
    fn leave(self, end: Option<(u16, String)>) {
        let shared = &self.shared;
        let request = self.link.close_requested();
        let (code, reason) = end.unwrap_or_else(|| match request {
            Some(request) => {
                let (code, reason) = request.code_and_reason();
                (code, reason.to_string())
            }
            None => (1006, "Connection lost".to_string()),
        });
        let removed = lock(&shared.registry).remove(self.key);
        if let Some(directory) = shared.directory.get() {
            directory.remove(&self.identity);
        }
        if let Some((_, owed)) = removed {
            let stopping = request == Some(CloseRequest::Shutdown);
            for settled in owed {
                shared.fail(
                    settled,
                    if stopping {
                        shutdown_error
                    } else {
                        connection_lost
                    },
                );
            }
        }
        if request == Some(CloseRequest::HeartbeatTimeout) {
            let last_seen = self.link.last_seen_wall_ms();
            shared.log(|| LogEvent::heartbeat_timeout(&self.identity, last_seen));
        }
        shared.log(|| LogEvent::session_disconnected(&self.identity, &reason, code));
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        trim::session_changed();
    }
}

/// Carries commands out and statuses and results in until the session ends (what
/// `SessionTask` does before its closing handshake).
#[cfg(test)]
fn serve<'a>(
    ws: &'a mut Socket,
    out: &'a mut Option<Box<Outgoing>>,
    key: SessionKey,
    link: &'a SessionLink,
    shared: &'a Shared,
) -> impl Future<Output = End> + 'a {
    std::future::poll_fn(move |cx| {
        if let Some(rest) = link.running() {
            out.get_or_insert_with(Box::default).resume(rest);
        }
        serve_step(cx, ws, out, key, link, shared)
    })
}

/// One poll of the serve loop: runs until the session ends or nothing is ready.
/// `out` is allocated only while there is something to write.
fn serve_step(
    cx: &mut std::task::Context<'_>,
    ws: &mut Socket,
    out: &mut Option<Box<Outgoing>>,
    key: SessionKey,
    link: &SessionLink,
    shared: &Shared,
) -> Poll<End> {
    // Ends with this poll, however it ends.
    let mut burst = Burst {
        shared,
        held: false,
    };
    loop {
        if link.poll_woken(cx).is_ready() {
            let (frames, close_request) = link.take();
            if let Some(request) = close_request {
                return Poll::Ready(End::Requested(request));
            }
            out.get_or_insert_with(Box::default).extend(frames);
            continue;
        }
        if let Some(writing) = out.as_mut().filter(|o| !o.is_empty()) {
            match writing.poll_write(&mut ws.io, cx) {
                Poll::Ready(Ok(n)) => {
                    link.wrote(n);
                    continue;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(End::Lost),
                Poll::Pending => {}
            }
        }
        let max_queued = shared.config.max_queued_bytes;
        let read = ws
            .reader
            .poll_read(&mut ws.io, cx, shared.config.max_payload, |message| {
                burst.start();
                link.touch();
                let reply = match message {
                    Message::Text(text) => on_frame(shared, key, text),
                    Message::Binary(bytes) => {
                        on_frame(shared, key, &String::from_utf8_lossy(bytes))
                    }
                    Message::Close(frame) => {
                        let (code, reason) = frame.unwrap_or((1005, ""));
                        return ControlFlow::Break(End::ByPeer(code, reason.to_string()));
                    }
                    Message::Ping(payload) => {
                        // Counted and bounded like the replies below.
                        let len = 2 + payload.len();
                        if link.queued_own(len, max_queued) {
                            out.get_or_insert_with(Box::default)
                                .push_control(0xa, payload);
                        }
                        None
                    }
                    Message::Pong => None,
                };
                // Through the same bounded queue as commands: an extension that sends
                // junk and reads nothing gets no more replies once the queue is full.
                if let Some(reply) = reply {
                    link.push(Frame::Text(reply.into()), max_queued);
                }
                ControlFlow::Continue(())
            });
        match read {
            Poll::Ready(Ok(ControlFlow::Continue(()))) => {}
            Poll::Ready(Ok(ControlFlow::Break(end))) => return Poll::Ready(end),
            Poll::Ready(Err(ReadError::TooBig)) => {
                return Poll::Ready(End::Close(1009, "Message too big"))
            }
            Poll::Ready(Err(ReadError::Broken)) => return Poll::Ready(End::Lost),
            Poll::Pending => {
                // Before the outcomes go: JavaScript may answer them with sends at once.
                if out.as_ref().is_none_or(|o| o.is_empty()) {
                    *out = None;
                    link.parked(ws.fd());
                }
                burst.end();
                return Poll::Pending;
            }
        }
    }
}

/// The frames one read brought, handled before the task yields: their outcomes
/// reach the host as one hand-over (`Host::hold_deliveries`). Ends when the socket
/// has nothing more buffered, and on every way out of the loop (drop).
struct Burst<'a> {
    shared: &'a Shared,
    held: bool,
}

impl Burst<'_> {
    fn start(&mut self) {
        if !self.held {
            self.held = true;
            self.shared.host.hold_deliveries();
        }
    }

    fn end(&mut self) {
        if self.held {
            self.held = false;
            self.shared.host.release_deliveries();
        }
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Sends the closing frame where the gateway ends the session; returns the code
/// and reason that `session-disconnected` reports.
async fn finish(
    ws: &mut Socket,
    out: &mut Outgoing,
    link: &SessionLink,
    end: End,
) -> (u16, String) {
    let (code, reason) = match &end {
        End::Close(code, reason) => (*code, reason.to_string()),
        End::Requested(request) => {
            let (code, reason) = request.code_and_reason();
            (code, reason.to_string())
        }
        End::ByPeer(code, reason) if reason.is_empty() => {
            (*code, "Closed by extension".to_string())
        }
        End::ByPeer(code, reason) => (*code, reason.clone()),
        End::Lost => return (1006, "Connection lost".to_string()),
    };
    // A close frame must not cut a command in half: the one under way may finish.
    out.drop_unstarted();
    let finished = tokio::time::timeout(FINISH_FRAME, async {
        poll_fn(|cx| {
            while out.mid_frame() {
                let n = std::task::ready!(out.poll_write(&mut ws.io, cx))?;
                link.wrote(n);
            }
            Poll::Ready(Ok::<(), std::io::Error>(()))
        })
        .await
    })
    .await;
    if !matches!(finished, Ok(Ok(()))) {
        // Without its close frame: the socket is dropped.
        return (code, reason);
    }
    match &end {
        // The reply to the extension's close frame echoes its code and reason, which
        // clients report as the close's (the client SDK's close() does).
        End::ByPeer(code, reason) => ws.close(*code, reason).await,
        _ => ws.close(code, &reason).await,
    }
    (code, reason)
}

/// Acts on one frame from the extension; returns the error frame to answer with, if any.
fn on_frame(shared: &Shared, key: SessionKey, text: &str) -> Option<String> {
    let reply = match protocol::parse_with_limit(text, shared.config.media.max_bytes) {
        Inbound::Result(result) => {
            shared.on_result(key, result);
            return None;
        }
        Inbound::Status(status) => {
            let mut registry = lock(&shared.registry);
            let identity = registry.set_status(key, status.clone());
            let info = shared.directory.get().and_then(|_| registry.info_of(key));
            drop(registry);
            if let (Some(directory), Some(identity), Some(info)) =
                (shared.directory.get(), &identity, info)
            {
                directory.update(identity, info);
            }
            if let Some(identity) = identity {
                shared.log(|| LogEvent::session_status(&identity, &status));
            }
            return None;
        }
        Inbound::Heartbeat => return None,
        // 5.2 delivery frames (state/acks.rs, state/incoming.rs).
        Inbound::Ack(ack) => {
            if let Some(ack) = ack {
                shared.on_ack(key, ack);
            }
            return None;
        }
        Inbound::Incoming(incoming) => return shared.on_incoming(key, incoming),
        Inbound::Auth(_) => protocol::error_frame(
            "ALREADY_AUTHENTICATED",
            "This connection is already authenticated",
        ),
        Inbound::Unknown(kind) => protocol::error_frame(
            ErrorCode::UnknownMessageType.as_str(),
            &format!("Unknown message type: {kind}"),
        ),
        Inbound::Invalid(why) => protocol::error_frame(ErrorCode::InvalidMessage.as_str(), why),
    };
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    mod write_through_race {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream as StdUnix;
        use std::sync::mpsc;
        use std::task::{Context, Waker};

        use tokio_util::either::Either;

        use super::super::*;
        use crate::config::Config;
        use crate::host::{Delivery, Host, Validation};

        struct NoHost;

        impl Host for NoHost {
            fn deliver(&self, _: Delivery) {}
            fn validate(&self, _: String) -> Validation {
                Box::pin(async { Err("no keys here".to_string()) })
            }
        }

        /// The frames a server wrote (unmasked), as (opcode, payload); panics on a
        /// stream that is not whole frames.
        fn frames_of(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
            let mut frames = Vec::new();
            while !bytes.is_empty() {
                assert!(bytes.len() >= 2, "a cut frame header: {bytes:?}");
                let opcode = bytes[0] & 0x0f;
                assert_eq!(bytes[0] & 0xf0, 0x80, "a final frame, no reserved bits");
                assert_eq!(bytes[1] & 0x80, 0, "a server frame is not masked");
                let (len, start) = match bytes[1] & 0x7f {
                    126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                    127 => (
                        u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n => (n as usize, 2),
                };
                assert!(bytes.len() >= start + len, "a frame cut short");
                frames.push((opcode, bytes[start..start + len].to_vec()));
                bytes = &bytes[start + len..];
            }
            frames
        }

        fn drain(client: &mut StdUnix, into: &mut Vec<u8>) {
            let mut buf = [0u8; 65536];
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.extend_from_slice(&buf[..n]);
            }
        }

        fn small_send_buffer(socket: &StdUnix) {
            use std::os::fd::AsRawFd;
            let size: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the size passed.
            let done = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(done, 0);
        }

        /// A write-through that the socket takes only in part leaves the rest to the
        /// session's task. The task may run before the writing thread wakes it (woken by
        /// a read): here, forced, with a ping to answer. Its pong, and the next
        /// write-through, must come after the rest of the frame, never inside it.
        #[test]
        fn the_rest_of_a_partial_write_through_comes_before_anything_else() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _runtime = rt.enter();
            let (server, mut client) = StdUnix::pair().unwrap();
            small_send_buffer(&server);
            server.set_nonblocking(true).unwrap();
            client.set_nonblocking(true).unwrap();
            let mut ws = Socket::new(
                Either::Right(tokio::net::UnixStream::from_std(server).unwrap()),
                Vec::new(),
            );
            let shared = Shared::new(Config::default(), Arc::new(NoHost)).unwrap();
            let link = Arc::new(SessionLink::default());
            let identity = crate::identity::Identity::for_test("k", "s");
            let (key, _) = lock(&shared.registry)
                .add(identity, link.clone(), 10)
                .unwrap();
            let mut out = None;
            let task =
                std::cell::RefCell::new(Box::pin(serve(&mut ws, &mut out, key, &link, &shared)));
            let mut cx = Context::from_waker(Waker::noop());
            let mut poll = || task.borrow_mut().as_mut().poll(&mut cx).is_pending();
            assert!(poll(), "idle: parked");

            let first = "a".repeat(64 * 1024);
            let second = "b".repeat(64 * 1024);
            let mut received = Vec::new();
            // The writing thread waits in the gap until the test has run the task.
            let (in_gap, gap_reached) = mpsc::channel();
            let (go_on, wait) = mpsc::channel::<()>();
            let wait = std::sync::Mutex::new(wait);
            *lock(&link.in_the_gap) = Some(Arc::new(move || {
                let _ = in_gap.send(());
                let _ = lock(&wait).recv();
            }));
            link.enqueue(Frame::Text(first.clone().into()), usize::MAX);
            let writer = {
                let link = link.clone();
                std::thread::spawn(move || link.write_through())
            };
            gap_reached
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a partial write-through");
            // In the gap: the extension reads what was written and pings; the task runs.
            drain(&mut client, &mut received);
            assert!(!received.is_empty() && received.len() < first.len());
            client.write_all(&[0x89, 0x80, 1, 2, 3, 4]).unwrap();
            *lock(&link.in_the_gap) = None;
            for _ in 0..3 {
                poll();
            }
            // And another thread writes the next commands through.
            drain(&mut client, &mut received);
            link.enqueue(Frame::Text(second.clone().into()), usize::MAX);
            link.write_through();
            go_on.send(()).unwrap();
            writer.join().unwrap();

            let expected = first.len() + second.len() + 2 * 10 + 2;
            for _ in 0..10_000 {
                if received.len() >= expected {
                    break;
                }
                poll();
                drain(&mut client, &mut received);
                // Turns the runtime's I/O driver, which tells the socket it may write again.
                rt.block_on(tokio::time::sleep(std::time::Duration::from_micros(100)));
            }
            assert_eq!(
                received.len(),
                expected,
                "every byte arrives, and nothing more"
            );
            let frames = frames_of(&received);
            assert_eq!(frames.len(), 3, "two commands and a pong");
            assert_eq!(
                frames[0],
                (1, first.into_bytes()),
                "the first command, whole, first"
            );
            let rest: Vec<_> = frames[1..].iter().collect();
            assert!(
                rest.contains(&&(1, second.into_bytes())),
                "the second command, whole"
            );
            assert!(rest.contains(&&(10, Vec::new())), "the pong");
            assert_eq!(link.queued_bytes(), 0, "every byte counted as written was");
        }
    }

    /// Each idle session is one tokio task holding this future; the task tracker adds 8
    /// bytes and tokio 96, rounded up to 128-byte steps, so up to 152 bytes keep the task
    /// at 256 bytes (it was 384 with the `async` blocks' 240, 640 with a WebSocket
    /// library's stream inside). Growing it past that costs every idle session 128
    /// bytes: box what an idle session does not use instead.
    #[test]
    fn an_idle_sessions_task_stays_within_256_bytes() {
        let size = output_size(run);
        eprintln!("session future: {size} bytes");
        assert!(size <= 152, "the session future grew to {size} bytes");
    }
}
