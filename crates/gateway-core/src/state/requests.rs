//! The life of a send request once its media is loaded: a device is chosen, the
//! command queued on its session, and the outcome (result, failure, timeout, lost
//! connection) delivered to the host exactly once.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::link::{lock, CommandQueued};
use super::message_status::Record;
use super::registry::{Pending, Settled, Unavailable};
use super::{Lifecycle, Shared};
use crate::config::{Dialect, Strategy};
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::Delivery;
use crate::identity::{CallId, CLUSTER_CALL};
use crate::media::{default_document_name, Media};
use crate::protocol::delivery::Ack;
use crate::protocol::{media_frame, message_frame, Frame, MediaCommand, ResultFrame, SendKind};

/// One send call, validated by the JavaScript side.
#[derive(Debug)]
pub struct SendRequest {
    pub kind: SendKind,
    pub api_key: String,
    pub phone_number: String,
    /// The message of `sendMessage`, the caption of media sends.
    pub text: String,
    pub media_source: Option<String>,
    pub document_name: Option<String>,
    pub strategy: Option<Strategy>,
    pub timeout: Option<Duration>,
    /// 5.2 `waitFor`; `None` is `'sent'`.
    pub wait_for: Option<Ack>,
    /// 5.2 `waitForDevice`; `None` is the config's.
    pub wait_for_device: Option<Duration>,
    /// When the call was made, for sends dispatched later (media): timeouts count
    /// from it. `Gateway::send` sets it.
    pub called_at: Option<std::time::Instant>,
    /// 5.3: the session another process chose for this send.
    pub target: Option<std::sync::Arc<str>>,
    /// 5.3: the request id the calling process gave a send it routed here.
    pub request_id: Option<u128>,
}

impl SendRequest {
    /// A send with none of the optional parts: no media, the config's strategy,
    /// timeout and device wait, resolved on the extension's result.
    pub fn new(kind: SendKind, api_key: String, phone_number: String, text: String) -> Self {
        Self {
            kind,
            api_key,
            phone_number,
            text,
            media_source: None,
            document_name: None,
            strategy: None,
            timeout: None,
            wait_for: None,
            wait_for_device: None,
            called_at: None,
            target: None,
            request_id: None,
        }
    }
}

/// The command for a request, in the gateway's dialect.
pub(super) fn command_frame(
    request: &SendRequest,
    media: Option<Media>,
    request_id_text: &str,
    dialect: Dialect,
) -> Frame {
    match media {
        None => message_frame(request_id_text, &request.phone_number, &request.text),
        Some(media) => {
            let document_name = match request.kind {
                SendKind::Document => Some(
                    request
                        .document_name
                        .clone()
                        .unwrap_or_else(|| default_document_name(&media)),
                ),
                _ => None,
            };
            let command = MediaCommand {
                kind: request.kind,
                request_id: request_id_text,
                phone_number: &request.phone_number,
                caption: &request.text,
                mime_type: &media.mime_type,
                document_name: document_name.as_deref(),
            };
            media_frame(&command, media.data_url, dialect)
        }
    }
}

/// When the session that gets a command is woken to write it.
#[derive(Clone, Copy)]
pub enum Wake {
    Now,
    /// At the next `Gateway::flush()`.
    Later,
}

impl Shared {
    /// Picks a device, records the request and queues its command.
    pub fn dispatch(&self, call: CallId, request: SendRequest, media: Option<Media>, wake: Wake) {
        let strategy = request.strategy.unwrap_or(self.config.strategy);
        let selected = match self.lifecycle() {
            Lifecycle::Running => {
                let mut registry = lock(&self.registry);
                match &request.target {
                    Some(target) => registry.select_session(&request.api_key, target, strategy),
                    None => registry.select(&request.api_key, strategy),
                }
                .map_err(Some)
            }
            Lifecycle::Stopping => {
                let error = shutdown_error("", "");
                return self.host.deliver(Delivery::Rejected { call, error });
            }
            Lifecycle::Stopped => Err(None),
        };
        let (key, identity, link) = match selected {
            Ok(selected) => selected,
            Err(why) => {
                // 5.2 `waitForDevice`, only while running.
                let wait = request
                    .wait_for_device
                    .unwrap_or(self.config.wait_for_device);
                if why.is_some() && !wait.is_zero() {
                    return self.park(call, request, media, strategy);
                }
                let error = no_device(&request.api_key, why);
                return self.host.deliver(Delivery::Rejected { call, error });
            }
        };
        let request_id = request
            .request_id
            .map_or_else(Uuid::new_v4, Uuid::from_u128);
        let mut id_buf = Uuid::encode_buffer();
        let request_id_text: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let frame = command_frame(&request, media, request_id_text, identity.dialect);
        let pending = self.pending_for(call, request);
        if self.config.pacing.is_some() {
            return self.place_paced(key, identity, request_id.as_u128(), pending, frame);
        }
        let inserted = lock(&self.registry).insert_pending(key, request_id.as_u128(), pending);
        match inserted {
            // The session closed between choosing it and recording the request.
            None => {
                let mut error = connection_lost(request_id_text, &identity.session_id);
                error.details["sent"] = false.into();
                self.host.deliver(Delivery::Rejected { call, error });
            }
            Some(earliest) => {
                if earliest {
                    self.deadline_changed.notify_one();
                }
                // A closing session fails its requests as it leaves the registry. Without
                // room on the socket (`maxQueuedBytes`) the command waits for it, in order.
                let queued = link.enqueue_command(
                    request_id.as_u128(),
                    frame,
                    self.config.max_queued_bytes,
                    self.config.max_queued_sends,
                );
                match queued {
                    Ok(CommandQueued::First) => match wake {
                        Wake::Now => link.wake(),
                        Wake::Later => lock(&self.corked).push(link),
                    },
                    Ok(_) => {}
                    Err(too_many) => {
                        // Taken back, unless a close settled it meanwhile.
                        let taken = lock(&self.registry).settle(key, request_id.as_u128());
                        if let Some(Settled {
                            identity,
                            request_id,
                            mut pending,
                        }) = taken
                        {
                            pending.queued = true;
                            self.queue_full(identity, request_id, pending, too_many.waiting);
                        }
                    }
                }
            }
        }
    }

    /// The record of a request in flight; its timeout counts from the call.
    pub(super) fn pending_for(&self, call: CallId, request: SendRequest) -> Pending {
        let timeout = request.timeout.unwrap_or(self.config.request_timeout);
        let mut pending = Pending::new(call, request.phone_number, timeout);
        if let Some(wait_for) = request.wait_for {
            pending.wait_for = wait_for;
        }
        // Media sends are dispatched once their media is loaded; text sends at once.
        if let Some(called_at) = request.called_at {
            pending.deadline = tokio::time::Instant::from_std(called_at) + timeout;
        }
        let wait = request
            .wait_for_device
            .unwrap_or(self.config.wait_for_device);
        if !wait.is_zero() {
            let called_at = pending.deadline - timeout;
            pending.park_until = Some((called_at + wait).min(pending.deadline));
        }
        pending
    }

    /// Settles a request with the extension's answer.
    pub fn complete(&self, settled: Settled, result: ResultFrame) {
        if !result.success {
            let request_id = Uuid::from_u128(settled.request_id).to_string();
            let error = GatewayError::new(
                ErrorCode::ExtensionError,
                format!("Extension reported failure: {}", describe(&result.error)),
                json!({ "requestId": request_id, "sessionId": &*settled.identity.session_id, "error": result.error }),
            );
            return self.fail_with(settled, request_id, error);
        }
        self.succeed(lock(&self.registry), settled, result);
    }

    /// Fails a request that had been sent to a device; `error` gets the request and
    /// session ids.
    pub fn fail(&self, settled: Settled, error: impl FnOnce(&str, &str) -> GatewayError) {
        let request_id = Uuid::from_u128(settled.request_id).to_string();
        let mut error = error(&request_id, &settled.identity.session_id);
        if settled.pending.queued && error.details.is_object() {
            error.details["sent"] = false.into();
            error
                .message
                .push_str(" (its command was never written: it was still waiting to be sent)");
        }
        self.fail_with(settled, request_id, error);
    }

    pub(super) fn fail_with(&self, settled: Settled, request_id: String, error: GatewayError) {
        let record = Record::failed(settled.identity.clone(), &settled.pending.phone_number);
        lock(&self.registry)
            .statuses
            .record(settled.request_id, record);
        // A call run for another process: that process reports it (5.3).
        if self.config.log_events && settled.pending.call & CLUSTER_CALL == 0 {
            let event = LogEvent::send_failed(
                &settled.identity,
                &settled.pending.phone_number,
                &request_id,
                &error,
            );
            self.host.deliver(Delivery::Log(event));
        }
        self.host.deliver(Delivery::Rejected {
            call: settled.pending.call,
            error,
        });
    }
}

fn describe(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_string),
        Value::Null => "no reason given".to_string(),
        other => other.to_string(),
    }
}

pub fn timeout_error(timeout_ms: u64) -> impl FnOnce(&str, &str) -> GatewayError {
    move |request_id, session_id| {
        GatewayError::new(
            ErrorCode::RequestTimeout,
            format!("Request timed out after {timeout_ms} ms without a result from the extension"),
            json!({ "requestId": request_id, "sessionId": session_id, "timeout": timeout_ms, "sent": true }),
        )
    }
}

/// `NO_ACTIVE_DEVICE`, saying why: `why` is `None` when the gateway is not running.
pub(super) fn no_device(api_key: &str, why: Option<Unavailable>) -> GatewayError {
    let (reason, message) = match why {
        None => (
            "not-running",
            "No active WhatsApp device: the gateway is not running (call start() first)",
        ),
        Some(Unavailable::NoSessions) => (
            "no-sessions",
            "No active WhatsApp device: no extension is connected with this API key",
        ),
        Some(Unavailable::NoneReady) => (
            "none-ready",
            "No active WhatsApp device: extensions are connected with this API key, but none reports WhatsApp Web logged in and ready",
        ),
    };
    GatewayError::new(
        ErrorCode::NoActiveDevice,
        message,
        json!({ "apiKey": mask_api_key(api_key), "reason": reason }),
    )
}

/// `BACKPRESSURE`: the send's timeout ended while its command waited for room on its
/// session, which had `queued` bytes of commands waiting for its socket then.
pub fn backpressure(queued: usize, max: usize) -> impl FnOnce(&str, &str) -> GatewayError {
    move |request_id, session_id| {
        GatewayError::new(
            ErrorCode::Backpressure,
            format!(
                "No room on the extension's connection before the send's timeout: {queued} bytes of commands were waiting to be written, and this one would pass maxQueuedBytes ({max})"
            ),
            json!({ "requestId": request_id, "sessionId": session_id, "queuedBytes": queued, "maxQueuedBytes": max }),
        )
    }
}

pub fn connection_lost(request_id: &str, session_id: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::ConnectionLost,
        "The extension's connection closed before it reported a result",
        // Every command that reaches a session is handed to its socket at once.
        json!({ "requestId": request_id, "sessionId": session_id, "sent": true }),
    )
}

pub fn shutdown_error(request_id: &str, session_id: &str) -> GatewayError {
    // Without a request id the send never reached a session (its media was loading).
    let details = if request_id.is_empty() {
        json!({ "sent": false })
    } else {
        json!({ "requestId": request_id, "sessionId": session_id, "sent": true })
    };
    GatewayError::new(
        ErrorCode::GatewayShutdown,
        "Gateway is shutting down",
        details,
    )
}
