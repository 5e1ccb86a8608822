//! One extension connection from TCP accept to authenticated session: the
//! WebSocket handshake (path and origin checks), then the auth exchange, all within
//! `authTimeout`. An admitted session continues in a fresh, smaller task
//! (`session::run`) so that nothing of the handshake stays allocated while it idles.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{Future, FutureExt};
use serde_json::json;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::handshake::{self, Accepted, Upgrade};
use super::reader::ReadError;
use super::session::{self, Admitted};
use super::socket::Socket;
use super::Transport;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::identity::{Commands, Identity, Texts};
use crate::metrics::{self, AuthFailure};
use crate::protocol::{self, AuthFrame, Frame, Inbound};
use crate::state::link::{lock, SessionLink};
use crate::state::registry::{Refusal, SessionKey};
use crate::state::requests::connection_lost;
use crate::state::Shared;
use crate::supervise::{catch_panic, panic_error};

/// Counts open sockets for `getHealth()`.
struct Open<'a>(&'a Shared);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's task; a combinator rather than an `async fn`, which would keep the
/// future it awaits twice in its state.
pub fn serve(
    transport: Transport,
    upgrade: Upgrade,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> impl Future<Output = ()> {
    let reporter = shared.clone();
    let connection = serve_connection(transport, upgrade, peer, shared, shutdown, tasks);
    catch_panic(connection).map(move |served| {
        if let Err(panic) = served {
            reporter.report(panic_error("connection", &panic));
        }
    })
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
            Ok(Ok(accepted)) => accepted,
            Ok(Err(Some(refused))) => {
                shared.debug(|| {
                    format!(
                        "upgrade refused with HTTP {} (path {}, from {})",
                        refused.status,
                        refused.path.as_deref().unwrap_or("unreadable"),
                        refused.addr
                    )
                });
                return;
            }
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
            ws.close(code, reason).await
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

/// Turns an extension away after its auth frame: the error frame tells it why, the
/// host hears of it, and the socket closes with 1008.
async fn refuse(
    ws: &mut Socket,
    shared: &Shared,
    why: AuthFailure,
    error: GatewayError,
    close_reason: &'static str,
) -> Refused {
    metrics::auth_failed(why);
    let code = match error.code {
        ErrorCode::MaxSessionsExceeded => ErrorCode::MaxSessionsExceeded,
        _ => ErrorCode::AuthenticationFailed,
    };
    let frame = protocol::error_frame(code.as_str(), &error.message);
    let _ = ws.send_text(&frame).await;
    shared.report(error);
    Refused::close(1008, close_reason)
}

/// `MAX_SESSIONS_EXCEEDED`: the key already has `limit` sessions (`scope` says where).
async fn refuse_full(
    ws: &mut Socket,
    shared: &Shared,
    api_key: &str,
    limit: usize,
    scope: &str,
) -> Refused {
    let error = GatewayError::new(
        ErrorCode::MaxSessionsExceeded,
        format!("Maximum {limit} sessions allowed per API key{scope}"),
        json!({ "apiKey": mask_api_key(api_key), "maxSessionsPerKey": limit }),
    );
    refuse(
        ws,
        shared,
        AuthFailure::MaxSessions,
        error,
        "Max sessions exceeded",
    )
    .await
}

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
    // Until auth, `maxPreAuthPayload` (if lower than `maxPayload`).
    let limit = shared
        .config
        .max_pre_auth_payload
        .min(shared.config.max_payload);
    loop {
        let text = match ws.next(limit).await {
            Ok(Some(text)) => text,
            Ok(None) | Err(ReadError::Broken) => return Err(Refused::gone()),
            // Refused from its frame header, before its body was read.
            Err(ReadError::TooBig) => return Err(pre_auth_too_big()),
        };
        let reply = match protocol::parse(&text) {
            Inbound::Auth(auth) => return admit(ws, shared, auth, ip, deadline).await,
            Inbound::Invalid(why) => protocol::error_frame(ErrorCode::InvalidMessage.as_str(), why),
            Inbound::Unknown(kind) => protocol::error_frame(
                ErrorCode::UnknownMessageType.as_str(),
                &format!("Unknown message type: {kind}"),
            ),
            _ => protocol::error_frame(
                ErrorCode::NotAuthenticated.as_str(),
                "Not authenticated: send an auth message with your apiKey first",
            ),
        };
        if ws.send_text(&reply).await.is_err() {
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
        // than that its key is wrong. Still 1008, as for every failed auth (docs/extension-protocol.md, "Close codes").
        Err(problem) => {
            shared.report(GatewayError::new(
                ErrorCode::CallbackError,
                format!("validateApiKey failed: {problem}"),
                json!({ "callback": "validateApiKey", "error": problem }),
            ));
            let error = GatewayError::new(
                ErrorCode::AuthenticationFailed,
                VALIDATOR_FAILED,
                json!({ "apiKey": mask_api_key(&auth.api_key), "reason": "validator_error", "ip": ip }),
            );
            return Err(refuse(
                ws,
                shared,
                AuthFailure::ValidatorError,
                error,
                "Authentication unavailable",
            )
            .await);
        }
    };
    if !answer.valid {
        let message = match &answer.reason {
            Some(reason) => format!("Invalid API key: {reason}"),
            None => "Invalid API key".to_string(),
        };
        let error = GatewayError::new(
            ErrorCode::AuthenticationFailed,
            message,
            json!({ "apiKey": mask_api_key(&auth.api_key), "reason": answer.reason, "ip": ip }),
        );
        return Err(refuse(
            ws,
            shared,
            AuthFailure::InvalidKey,
            error,
            "Authentication failed",
        )
        .await);
    }

    let mut session_id = Uuid::encode_buffer();
    let session_id = &*Uuid::new_v4().hyphenated().encode_lower(&mut session_id);
    let texts = Texts {
        session_id,
        ip: &ip,
        extension_version: &auth.extension_version,
        browser: &auth.browser,
    };
    let api_key: Arc<str> = auth.api_key.into();
    let identity = Identity::new(
        api_key.clone(),
        answer.user_id,
        texts,
        shared.config.dialect,
        Commands::new(auth.commands),
    );
    let link = Arc::new(SessionLink::reading(auth.data_url_only));
    let added =
        lock(&shared.registry).add(identity, link.clone(), shared.config.max_sessions_per_key);
    let (key, identity) = match added {
        Ok(added) => added,
        Err(Refusal::Closing) => return Err(Refused::close(1001, "Server shutting down")),
        Err(Refusal::Full(limit)) => return Err(refuse_full(ws, shared, &api_key, limit, "").await),
    };
    let registered = Registered {
        shared,
        key,
        identity,
        handed_over: false,
    };
    // 5.3: the limit also holds across the cluster's processes.
    if let Some(directory) = shared.directory.get() {
        let info = lock(&shared.registry).info_of(key);
        let max = shared.config.max_sessions_per_key;
        let admitted = match info {
            Some(info) => directory.admit(&registered.identity, info, max).await,
            None => false,
        };
        if !admitted {
            drop(registered);
            let across = " (across the cluster)";
            return Err(refuse_full(ws, shared, &api_key, max, across).await);
        }
    }
    shared.log(|| LogEvent::session_connected(&registered.identity));
    let limits = protocol::Limits {
        max_payload: shared.config.max_payload,
        max_media_bytes: shared.config.media.max_bytes,
    };
    let replies = protocol::auth_replies(
        shared.config.dialect,
        auth.guide_dialect,
        session_id,
        limits,
    );
    // A failed write shows up as a closed socket in the session loop, which cleans up.
    let _ = ws
        .write_frames(replies.into_iter().map(|r| Frame::Text(r.into())))
        .await;
    Ok(Admitted {
        key,
        link,
        identity: registered.handed_over(),
    })
}

/// A session in the registry (and perhaps the cluster's directory) whose auth is still
/// under way: taken out again however the auth ends before the session's task owns it,
/// refused or cancelled at an await (the auth deadline, `stop()`), so that no session
/// outlives its connection, holds a `maxSessionsPerKey` slot, or survives a restart.
/// From `handed_over` on, `session::run` owns the leaving.
struct Registered<'a> {
    shared: &'a Shared,
    key: SessionKey,
    identity: Arc<Identity>,
    handed_over: bool,
}

impl Registered<'_> {
    fn handed_over(mut self) -> Arc<Identity> {
        self.handed_over = true;
        self.identity.clone()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let removed = lock(&self.shared.registry).remove(self.key);
        // Listed or not (an admission cut short may have listed it): unlisted.
        if let Some(directory) = self.shared.directory.get() {
            directory.remove(&self.identity);
        }
        // Not yet ready, it was chosen for nothing; should it have been, those fail.
        for settled in removed.into_iter().flat_map(|(_, owed)| owed) {
            self.shared.fail(settled, connection_lost);
        }
    }
}
