//! One extension connection from TCP accept to authenticated session: the
//! WebSocket handshake (path and origin checks), then the auth exchange, all within
//! `authTimeout`. An admitted session continues in a fresh, smaller task
//! (`session::run`) so that nothing of the handshake stays allocated while it idles.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::frame_io::{close, write_frames};
use super::handshake::{self, Accepted, Socket, Upgrade};
use super::session::{self, Admitted};
use super::Transport;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::identity::Identity;
use crate::metrics::{self, AuthFailure};
use crate::protocol::{self, AuthFrame, Frame, Inbound};
use crate::state::link::{lock, SessionLink};
use crate::state::registry::Refusal;
use crate::state::Shared;
use crate::supervise::{catch_panic, panic_error};

/// Counts open sockets for `getHealth()`.
struct Open<'a>(&'a Shared);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn serve(
    transport: Transport,
    upgrade: Upgrade,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let reporter = shared.clone();
    let served = catch_panic(serve_connection(
        transport, upgrade, peer, shared, shutdown, tasks,
    ))
    .await;
    if let Err(panic) = served {
        reporter.report(panic_error("connection", &panic));
    }
}

async fn serve_connection(
    transport: Transport,
    upgrade: Upgrade,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let open = Open(&shared);
    let deadline = Instant::now() + shared.config.auth_timeout;
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return,
        done = timeout_at(deadline, handshake::accept(transport, upgrade, peer, &shared.config, &shared.pending_auth)) => match done {
            Ok(Some(accepted)) => accepted,
            _ => return,
        },
    };
    let Accepted { mut ws, ip, slot } = accepted;
    shared.debug(|| format!("connection from {ip}"));
    let debug_ip = shared.config.debug_log.then(|| ip.clone());
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Err(Refused::close(1001, "Server shutting down")),
        outcome = timeout_at(deadline, authenticate(&mut ws, &shared, ip, deadline)) => {
            outcome.unwrap_or_else(|_| {
                metrics::auth_failed(AuthFailure::AuthTimeout);
                Err(Refused::close(1008, "Authentication timeout"))
            })
        }
    };
    drop(slot);
    match outcome {
        Ok(admitted) => {
            // The session task owns the count from here.
            std::mem::forget(open);
            ws.get_mut().authenticated();
            let link = admitted.link.clone();
            let task = tasks.spawn(session::run(ws, admitted, shared.clone()));
            link.set_abort(task.abort_handle());
        }
        Err(Refused {
            close: Some((code, reason)),
        }) => {
            shared.debug(|| {
                format!(
                    "connection from {} closed before a session: code {code}, {reason}",
                    debug_ip.unwrap_or_default()
                )
            });
            close(&mut ws, code, reason).await
        }
        Err(Refused { close: None }) => {
            shared.debug(|| {
                format!(
                    "connection from {} ended by the client before a session",
                    debug_ip.unwrap_or_default()
                )
            });
        }
    }
}

/// What the extension is told when `validateApiKey` throws, rejects, or does not answer.
const VALIDATOR_FAILED: &str =
    "Authentication is unavailable (the server's key check failed); try again later";

fn pre_auth_too_big() -> Refused {
    metrics::auth_failed(AuthFailure::PreAuthLimit);
    Refused::close(1009, "Message too big")
}

struct Refused {
    close: Option<(u16, &'static str)>,
}

impl Refused {
    fn close(code: u16, reason: &'static str) -> Self {
        Self {
            close: Some((code, reason)),
        }
    }
    fn gone() -> Self {
        Self { close: None }
    }
}

/// Reads frames until an auth frame; anything else is answered and ignored.
async fn authenticate(
    ws: &mut Socket,
    shared: &Shared,
    ip: String,
    deadline: Instant,
) -> Result<Admitted, Refused> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(Message::Close(_))) | None => return Err(Refused::gone()),
            Some(Ok(_)) => continue,
            // Refused from its frame header, before its body was buffered.
            Some(Err(WsError::Capacity(_))) => return Err(pre_auth_too_big()),
            Some(Err(_)) if ws.get_ref().pre_auth_too_big() => return Err(pre_auth_too_big()),
            Some(Err(_)) => return Err(Refused::gone()),
        };
        let reply = match protocol::parse(&text) {
            Inbound::Auth(auth) => return admit(ws, shared, auth, ip, deadline).await,
            Inbound::Invalid(why) => protocol::error_frame("INVALID_MESSAGE", why),
            Inbound::Unknown(kind) => protocol::error_frame(
                "UNKNOWN_MESSAGE_TYPE",
                &format!("Unknown message type: {kind}"),
            ),
            _ => protocol::error_frame(
                "NOT_AUTHENTICATED",
                "Not authenticated: send an auth message with your apiKey first",
            ),
        };
        if ws.send(Message::text(reply)).await.is_err() {
            return Err(Refused::gone());
        }
    }
}

async fn admit(
    ws: &mut Socket,
    shared: &Shared,
    auth: AuthFrame,
    ip: String,
    deadline: Instant,
) -> Result<Admitted, Refused> {
    let answer = tokio::select! {
        answer = shared.host.validate(auth.api_key.clone()) => answer,
        _ = sleep_until(deadline) => Err(format!(
            "validateApiKey did not answer within authTimeout ({} ms)",
            shared.config.auth_timeout.as_millis()
        )),
    };
    let answer = match answer {
        Ok(answer) => answer,
        // The key may well be valid: tell the extension to try again later rather
        // than that its key is wrong. Still 1008, as for every failed auth (SPEC 3).
        Err(problem) => {
            metrics::auth_failed(AuthFailure::ValidatorError);
            let message = VALIDATOR_FAILED;
            let _ = ws
                .send(Message::text(protocol::error_frame(
                    "AUTHENTICATION_FAILED",
                    message,
                )))
                .await;
            shared.report(GatewayError::new(
                ErrorCode::CallbackError,
                format!("validateApiKey failed: {problem}"),
                json!({ "callback": "validateApiKey", "error": problem }),
            ));
            shared.report(GatewayError::new(
                ErrorCode::AuthenticationFailed,
                message,
                json!({ "apiKey": mask_api_key(&auth.api_key), "reason": "validator_error", "ip": ip }),
            ));
            return Err(Refused::close(1008, "Authentication unavailable"));
        }
    };
    if !answer.valid {
        metrics::auth_failed(AuthFailure::InvalidKey);
        let message = match &answer.reason {
            Some(reason) => format!("Invalid API key: {reason}"),
            None => "Invalid API key".to_string(),
        };
        let _ = ws
            .send(Message::text(protocol::error_frame(
                "AUTHENTICATION_FAILED",
                &message,
            )))
            .await;
        shared.report(GatewayError::new(
            ErrorCode::AuthenticationFailed,
            message,
            json!({ "apiKey": mask_api_key(&auth.api_key), "reason": answer.reason, "ip": ip }),
        ));
        return Err(Refused::close(1008, "Authentication failed"));
    }

    let identity = Identity {
        session_id: Uuid::new_v4().to_string().into(),
        api_key: auth.api_key.into(),
        user_id: answer.user_id,
        ip,
        extension_version: auth.extension_version,
        browser: auth.browser,
        dialect: shared.config.dialect,
    };
    let session_id = identity.session_id.clone();
    let api_key = identity.api_key.clone();
    let link = Arc::new(SessionLink::default());
    let added =
        lock(&shared.registry).add(identity, link.clone(), shared.config.max_sessions_per_key);
    let (key, identity) = match added {
        Ok(added) => added,
        Err(Refusal::Closing) => return Err(Refused::close(1001, "Server shutting down")),
        Err(Refusal::Full(limit)) => {
            metrics::auth_failed(AuthFailure::MaxSessions);
            let message = format!("Maximum {limit} sessions allowed per API key");
            let _ = ws
                .send(Message::text(protocol::error_frame(
                    "MAX_SESSIONS_EXCEEDED",
                    &message,
                )))
                .await;
            shared.report(GatewayError::new(
                ErrorCode::MaxSessionsExceeded,
                message,
                json!({ "apiKey": mask_api_key(&api_key), "maxSessionsPerKey": limit }),
            ));
            return Err(Refused::close(1008, "Max sessions exceeded"));
        }
    };
    shared.log(|| LogEvent::session_connected(&identity));
    let replies = protocol::auth_replies(shared.config.dialect, auth.guide_dialect, &session_id);
    // A failed write shows up as a closed socket in the session loop, which cleans up.
    let _ = write_frames(ws, replies.into_iter().map(|r| Frame::Text(r.into()))).await;
    Ok(Admitted {
        key,
        link,
        identity,
    })
}
