//! An authenticated session's task: writes queued commands, reads statuses and
//! results, and on the way out settles everything the session still owed.
//!
//! Reading, writing and close requests never wait for each other: one loop polls all
//! three, writes a command a little at a time as the socket takes it, and reads in
//! between. Error replies go through the same bounded queue as commands. A close
//! request ends the loop at once; the frame being written, if any, gets a short while
//! to complete so that the close frame never cuts it.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{Future, FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::frame_io::close;
use super::handshake::Socket;
use super::outgoing::Outgoing;
use crate::events::LogEvent;
use crate::host::Host;
use crate::identity::Identity;
use crate::protocol::{self, Frame, Inbound};
use crate::state::link::{lock, CloseRequest, SessionLink};
use crate::state::registry::SessionKey;
use crate::state::requests::{connection_lost, shutdown_error};
use crate::state::Shared;
use crate::supervise::{catch_panic, panic_error};

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

/// What one turn of the loop found.
enum Event {
    Woken,
    Wrote,
    WriteFailed,
    Inbound(Option<Result<Message, WsError>>),
}

/// The session's task. Plain functions building combinators and `async move` blocks
/// that use their captures in place: an `async fn` (or an awaited capture) keeps a
/// second copy of its arguments in its state, and every idle session pays for the
/// task's size.
pub fn run(ws: Socket, admitted: Admitted, shared: Arc<Shared>) -> impl Future<Output = ()> {
    let mut leaving = Leaving {
        shared: shared.clone(),
        key: admitted.key,
        link: admitted.link.clone(),
        identity: admitted.identity.clone(),
        end: None,
    };
    catch_panic(serve_and_close(ws, admitted, shared)).map(move |served| {
        match served {
            Ok(end) => leaving.end = Some(end),
            Err(panic) => leaving.shared.report(panic_error("session", &panic)),
        }
        // Settles what the session still owed (see `Leaving`).
        drop(leaving);
    })
}

// Not an `async fn`: see `run`.
#[allow(clippy::manual_async_fn)]
fn serve_and_close(
    ws: Socket,
    admitted: Admitted,
    shared: Arc<Shared>,
) -> impl Future<Output = (u16, String)> {
    let mut socket = OwnedSocket {
        ws,
        link: admitted.link.clone(),
    };
    async move {
        let ws = &mut socket.ws;
        let mut out = Outgoing::default();
        // The socket still holds the waker of the task that authenticated it, and with it
        // that task's whole (finished) allocation, until something is written: a flush
        // registers this task's waker instead.
        let end = match ws.flush().await {
            Ok(()) => serve(ws, &mut out, admitted.key, &admitted.link, &shared).await,
            Err(_) => End::Lost,
        };
        Box::pin(finish(ws, &mut out, &admitted.link, end)).await
    }
}

/// The session's socket. Others write to it only while the task has it registered
/// as parked (`SessionLink::parked`): it is unregistered before it closes, however
/// the task ends (aborted by a `stop()` out of patience, or unwinding).
struct OwnedSocket {
    ws: Socket,
    link: Arc<SessionLink>,
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        self.link.running();
    }
}

/// Everything a session owes on the way out, done on drop: also when the task is
/// dropped by a `stop()` that could not wait any longer, or unwinds from a panic.
struct Leaving {
    shared: Arc<Shared>,
    key: SessionKey,
    link: Arc<SessionLink>,
    identity: Arc<Identity>,
    /// The close code and reason, once known.
    end: Option<(u16, String)>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let shared = &self.shared;
        let request = self.link.close_requested();
        let (code, reason) = self.end.take().unwrap_or_else(|| match request {
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
    }
}

/// Carries commands out and statuses and results in until the session ends.
async fn serve(
    ws: &mut Socket,
    out: &mut Outgoing,
    key: SessionKey,
    link: &SessionLink,
    shared: &Shared,
) -> End {
    let mut woken = pin!(link.woken());
    let mut burst = Burst {
        host: &*shared.host,
        held: false,
    };
    let socket = socket_fd(ws);
    loop {
        let event = poll_fn(|cx| {
            link.running();
            if woken.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Woken);
            }
            if !out.is_empty() {
                match poll_write(ws, out, cx) {
                    Poll::Ready(Ok(n)) => {
                        link.wrote(n);
                        return Poll::Ready(Event::Wrote);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                    Poll::Pending => {}
                }
            }
            let inbound = ws.poll_next_unpin(cx);
            if inbound.is_pending() {
                // Before the outcomes go: JavaScript may answer them with sends at once.
                if out.is_empty() && ws.get_ref().idle_for_writes() {
                    link.parked(socket);
                }
                burst.end();
            }
            inbound.map(Event::Inbound)
        })
        .await;
        match event {
            Event::Woken => {
                woken.set(link.woken());
                let (unfinished, frames, close_request) = link.take();
                if let Some(request) = close_request {
                    if let Some(rest) = unfinished {
                        // Finished before the close frame, like any frame under way.
                        out.resume(rest);
                    }
                    return End::Requested(request);
                }
                if let Some(rest) = unfinished {
                    out.resume(rest);
                }
                out.extend(frames);
            }
            Event::Wrote => {}
            Event::WriteFailed => return End::Lost,
            Event::Inbound(inbound) => {
                burst.start();
                link.touch();
                let reply = match inbound {
                    Some(Ok(Message::Text(text))) => on_frame(shared, key, &text),
                    Some(Ok(Message::Binary(bytes))) => {
                        on_frame(shared, key, &String::from_utf8_lossy(&bytes))
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        return End::ByPeer(code, reason);
                    }
                    Some(Ok(_)) => None,
                    Some(Err(WsError::Capacity(_))) => return End::Close(1009, "Message too big"),
                    Some(Err(_)) | None => return End::Lost,
                };
                // Through the same bounded queue as commands: an extension that sends
                // junk and reads nothing gets no more replies once the queue is full.
                if let Some(reply) = reply {
                    link.push(Frame::Text(reply.into()), shared.config.max_queued_bytes);
                }
            }
        }
    }
}

fn socket_fd(ws: &Socket) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    match ws.get_ref().raw_ref() {
        tokio_util::either::Either::Left(tcp) => tcp.as_raw_fd(),
        tokio_util::either::Either::Right(unix) => unix.as_raw_fd(),
    }
}

/// The frames one read brought, handled before the task yields: their outcomes
/// reach the host as one hand-over (`Host::hold_deliveries`). Ends when the socket
/// has nothing more buffered, and on every way out of the loop (drop).
struct Burst<'a> {
    host: &'a dyn Host,
    held: bool,
}

impl Burst<'_> {
    fn start(&mut self) {
        if !self.held {
            self.held = true;
            self.host.hold_deliveries();
        }
    }

    fn end(&mut self) {
        if self.held {
            self.held = false;
            self.host.release_deliveries();
        }
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Writes some of `out`: first what tungstenite has buffered (a pong, a close reply)
/// when between frames, then raw bytes with tungstenite's writes held back until the
/// frame is complete.
fn poll_write(
    ws: &mut Socket,
    out: &mut Outgoing,
    cx: &mut std::task::Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if !out.mid_frame() {
        ws.get_mut().release();
        match ws.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Pending => return Poll::Pending,
        }
    }
    let wire = ws.get_mut();
    wire.hold();
    let written = std::task::ready!(out.poll_write(wire.raw(), cx));
    if !out.mid_frame() {
        wire.release();
    }
    Poll::Ready(written)
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
                let n = std::task::ready!(poll_write(ws, out, cx))?;
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
    ws.get_mut().release();
    match end {
        // Lets tungstenite send the reply to the extension's close frame.
        End::ByPeer(..) => drop(tokio::time::timeout(Duration::from_secs(1), ws.flush()).await),
        _ => close(ws, code, &reason).await,
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
            "UNKNOWN_MESSAGE_TYPE",
            &format!("Unknown message type: {kind}"),
        ),
        Inbound::Invalid(why) => protocol::error_frame("INVALID_MESSAGE", why),
    };
    Some(reply)
}
