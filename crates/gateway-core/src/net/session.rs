//! An authenticated session's task: writes queued commands, reads statuses and
//! results, and on the way out settles everything the session still owed.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use super::frame_io::{close, write_frames};
use super::handshake::Socket;
use crate::events::LogEvent;
use crate::identity::Identity;
use crate::protocol::{self, Frame, Inbound};
use crate::state::link::{lock, CloseRequest, SessionLink};
use crate::state::registry::SessionKey;
use crate::state::requests::{connection_lost, shutdown_error};
use crate::state::Shared;

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

pub async fn run(mut ws: Socket, admitted: Admitted, shared: Arc<Shared>) {
    let Admitted {
        key,
        link,
        identity,
    } = admitted;
    // The socket still holds the waker of the task that authenticated it, and with it
    // that task's whole (finished) allocation, until something is written: a flush
    // registers this task's waker instead.
    let end = match ws.flush().await {
        Ok(()) => serve(&mut ws, key, &link, &shared).await,
        Err(_) => End::Lost,
    };
    let timed_out = matches!(end, End::Requested(CloseRequest::HeartbeatTimeout));
    let stopping = matches!(end, End::Requested(CloseRequest::Shutdown));
    let (code, reason) = Box::pin(finish(&mut ws, end)).await;
    drop(ws);

    let removed = lock(&shared.registry).remove(key);
    if let Some((_, owed)) = removed {
        for settled in owed {
            if stopping {
                shared.fail(settled, shutdown_error);
            } else {
                shared.fail(settled, connection_lost);
            }
        }
    }
    if timed_out {
        shared.log(|| LogEvent::heartbeat_timeout(&identity, link.last_seen_wall_ms()));
    }
    shared.log(|| LogEvent::session_disconnected(&identity, &reason, code));
    shared
        .connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Carries commands out and statuses and results in until the session ends.
async fn serve(ws: &mut Socket, key: SessionKey, link: &SessionLink, shared: &Shared) -> End {
    loop {
        tokio::select! {
            biased;
            _ = link.woken() => {
                let (frames, close_request) = link.take();
                if let Some(request) = close_request {
                    return End::Requested(request);
                }
                if !frames.is_empty() {
                    if let Some(end) = Box::pin(write_all(ws, frames, link)).await {
                        return end;
                    }
                    link.drained();
                }
            }
            inbound = ws.next() => {
                link.touch();
                let reply = match inbound {
                    Some(Ok(Message::Text(text))) => on_frame(shared, key, &text),
                    Some(Ok(Message::Binary(bytes))) => on_frame(shared, key, &String::from_utf8_lossy(&bytes)),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        return End::ByPeer(code, reason);
                    }
                    Some(Ok(_)) => None,
                    Some(Err(WsError::Capacity(_))) => return End::Close(1009, "Message too big"),
                    Some(Err(_)) | None => return End::Lost,
                };
                // Boxed, like every rare await here: an idle session's task is sized
                // by the largest state its loop can be in.
                if let Some(reply) = reply {
                    let _ = Box::pin(ws.send(Message::text(reply))).await;
                }
            }
        }
    }
}

/// Sends the closing frame where the gateway ends the session; returns the code
/// and reason that `session-disconnected` reports.
async fn finish(ws: &mut Socket, end: End) -> (u16, String) {
    match end {
        End::Close(code, reason) => {
            close(ws, code, reason).await;
            (code, reason.to_string())
        }
        End::Requested(request) => {
            let (code, reason) = request.code_and_reason();
            close(ws, code, reason).await;
            (code, reason.to_string())
        }
        End::ByPeer(code, reason) => {
            // Lets tungstenite send the reply to the extension's close frame.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.flush()).await;
            let reason = if reason.is_empty() {
                "Closed by extension".to_string()
            } else {
                reason
            };
            (code, reason)
        }
        End::Lost => (1006, "Connection lost".to_string()),
    }
}

/// Writes the frames, or says how the session ends instead: it gives up early if
/// the session is asked to close meanwhile (an extension that stopped reading would
/// otherwise hold the task here for good).
async fn write_all(ws: &mut Socket, frames: VecDeque<Frame>, link: &SessionLink) -> Option<End> {
    let write = write_frames(ws, frames);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => {
                // Wake-ups spent while writing may have announced new frames.
                link.wake();
                return written.err().map(|_| End::Lost);
            }
            _ = link.woken() => {
                if let Some(request) = link.close_requested() {
                    return Some(End::Requested(request));
                }
            }
        }
    }
}

/// Acts on one frame from the extension; returns the error frame to answer with, if any.
fn on_frame(shared: &Shared, key: SessionKey, text: &str) -> Option<String> {
    let reply = match protocol::parse(text) {
        Inbound::Result(result) => {
            // Ids the gateway never issued, or issued to another session, settle nothing.
            let settled = Uuid::try_parse(&result.request_id)
                .ok()
                .and_then(|id| lock(&shared.registry).settle(key, id.as_u128()));
            if let Some(settled) = settled {
                shared.complete(settled, result);
            }
            return None;
        }
        Inbound::Status(status) => {
            let identity = lock(&shared.registry).set_status(key, status.clone());
            if let Some(identity) = identity {
                shared.log(|| LogEvent::session_status(&identity, &status));
            }
            return None;
        }
        Inbound::Heartbeat => return None,
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
