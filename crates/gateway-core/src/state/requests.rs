//! The life of a send request once its media is loaded: a device is chosen, the
//! command queued on its session, and the outcome (result, failure, timeout, lost
//! connection) delivered to the host exactly once.

use serde_json::json;
use uuid::Uuid;

use super::acks::extension_error;
use super::journal::QueuedSend;
use super::link::{lock, CommandQueued};
use super::records::Record;
use super::registry::{Pending, Settled, Unavailable};
pub use super::send_request::{SendRequest, Wants};
use super::{Lifecycle, Shared};
use crate::config::Dialect;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::Delivery;
use crate::identity::{CallId, CLUSTER_CALL, RECOVERED_CALL};
use crate::media::{default_document_name, Media};
use crate::protocol::custom::custom_frame;
use crate::protocol::{
    media_frame, message_frame, Frame, MediaCommand, Recipient, ResultFrame, SendKind,
};

/// The command for a request, in the gateway's dialect.
pub(super) fn command_frame(
    request: &SendRequest,
    media: Option<Media>,
    request_id_text: &str,
    dialect: Dialect,
) -> Frame {
    match media {
        None if request.kind == SendKind::Command => {
            custom_frame(request_id_text, &request.phone_number, &request.text)
        }
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
        let wants = request.wants();
        let selected = match self.lifecycle() {
            Lifecycle::Running => {
                let mut registry = lock(&self.registry);
                match &request.target {
                    // Chosen by another process: another device will do if it is gone.
                    Some(target) if !request.pinned => {
                        registry.select_session(&request.api_key, target, strategy, wants)
                    }
                    _ => registry.select(&request.api_key, strategy, wants),
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
                // 5.2 `waitForDevice`, only while running; a command no active device
                // handles is refused at once.
                let wait = request
                    .wait_for_device
                    .unwrap_or(self.config.wait_for_device);
                if why.is_some_and(|w| w != Unavailable::Unsupported) && !wait.is_zero() {
                    return self.park(call, request, media, strategy);
                }
                let error = unavailable(&request.api_key, why, request.wants());
                return self.host.deliver(Delivery::Rejected { call, error });
            }
        };
        let request_id = request
            .request_id
            .map_or_else(|| self.request_ids.next(), Uuid::from_u128);
        let recovered = call & RECOVERED_CALL != 0;
        // Durable mode: every send that reaches its device is kept whole by the store
        // before its command can wait (pacing, room on its socket) or leave; one that
        // leaves in the same commit costs no row (README "Durable mode"). Whether it
        // will wait cannot be told here: another thread may queue on the same socket
        // between a look at it and this send's turn.
        let kept = self.journal.get().filter(|_| !recovered).map(|journal| {
            (
                journal,
                self.queued_send(request_id.as_u128(), &request, media.as_ref()),
            )
        });
        let stored = recovered || kept.is_some();
        let mut id_buf = Uuid::encode_buffer();
        let request_id_text: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let frame = command_frame(&request, media, request_id_text, identity.dialect);
        let mut pending = self.pending_for(call, request);
        pending.stored = stored;
        let paced = self.config.pacing.is_some() && pending.paced;
        // Handed to the store before the command is queued: the store then hears of the
        // send before it hears that it leaves. Not waking its writer unless paced: the
        // command's leaving, told next, wakes it, and one commit takes both (a send that
        // leaves in it costs no row).
        if let Some((journal, send)) = kept {
            journal.queued(send, paced);
        }
        if paced {
            return self.place_paced(key, identity, request_id.as_u128(), pending, frame);
        }
        let inserted = lock(&self.registry).insert_pending(key, request_id.as_u128(), pending);
        match inserted {
            // The session closed between choosing it and recording the request.
            None => {
                let mut error = connection_lost(request_id_text, identity.session_id());
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

    /// A send as the store keeps it while it waits (durable mode).
    pub(super) fn queued_send(
        &self,
        request_id: u128,
        request: &SendRequest,
        media: Option<&Media>,
    ) -> QueuedSend {
        let timeout = request.timeout.unwrap_or(self.config.request_timeout);
        let spent = request
            .called_at
            .map_or(std::time::Duration::ZERO, |at| at.elapsed());
        QueuedSend {
            request_id,
            api_key: request.api_key.clone(),
            kind: request.kind,
            phone_number: request.phone_number.clone(),
            text: request.text.clone(),
            document_name: request.document_name.clone(),
            strategy: request.strategy,
            deadline_at: crate::clock::now_ms() + timeout.saturating_sub(spent).as_millis() as u64,
            media: media.cloned(),
        }
    }

    /// The record of a request in flight; its timeout counts from the call.
    pub(super) fn pending_for(&self, call: CallId, request: SendRequest) -> Pending {
        let timeout = request.timeout.unwrap_or(self.config.request_timeout);
        let mut pending = Pending::new(call, request.phone_number, timeout);
        pending.kind = request.kind;
        pending.paced = request.paced;
        pending.pinned = request.pinned;
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
            let error = extension_error(settled.request_id, &settled.identity, &result);
            return self.fail_with(settled, request_id, error);
        }
        self.succeed(lock(&self.registry), settled, result);
    }

    /// Fails a request that had been sent to a device; `error` gets the request and
    /// session ids.
    pub fn fail(&self, settled: Settled, error: impl FnOnce(&str, &str) -> GatewayError) {
        let request_id = Uuid::from_u128(settled.request_id).to_string();
        let mut error = error(&request_id, settled.identity.session_id());
        if settled.pending.queued && error.details.is_object() {
            error.details["sent"] = false.into();
            error
                .message
                .push_str(" (its command was never written: it was still waiting to be sent)");
        }
        self.fail_with(settled, request_id, error);
    }

    pub(super) fn fail_with(&self, settled: Settled, request_id: String, mut error: GatewayError) {
        // Every rejection after a device was chosen says whether its command was written:
        // a refusal of room or of a queue place never wrote it; anything else may have.
        if error.details.is_object() && error.details.get("sent").is_none() {
            let unwritten = matches!(error.code, ErrorCode::Backpressure | ErrorCode::QueueFull);
            error.details["sent"] = (!unwritten).into();
        }
        let pending = &settled.pending;
        let mut record = Record::rejected(
            settled.identity.clone(),
            pending.kind,
            &pending.phone_number,
            &error,
        );
        // A call run for another process: that process reports it (5.3). A recovered
        // call's event is made by the store, which also covers failures before any device.
        let for_other = pending.call & CLUSTER_CALL != 0;
        let recovered = pending.call & RECOVERED_CALL != 0;
        record.for_other = for_other;
        let mut registry = lock(&self.registry);
        let record = registry.statuses.record(settled.request_id, record);
        let event = (self.config.log_events && !for_other && !recovered).then(|| {
            let to = Recipient::of(pending.kind, &pending.phone_number);
            LogEvent::send_failed(&settled.identity, to, &request_id, &error)
                .with_metadata(record.metadata())
        });
        drop(registry);
        if let Some(event) = event {
            self.host.deliver(Delivery::Log(event));
        }
        self.host.deliver(Delivery::Rejected {
            call: settled.pending.call,
            error,
        });
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

/// Why a send found no device: `UNSUPPORTED_COMMAND` when active devices are there
/// but none handles its command, else `NO_ACTIVE_DEVICE`.
pub fn unavailable(api_key: &str, why: Option<Unavailable>, wants: Wants) -> GatewayError {
    match (why, wants.command) {
        (Some(Unavailable::Unsupported), Some(command)) => {
            unsupported_command(api_key, command, wants.session)
        }
        _ => no_device(api_key, why),
    }
}

/// `UNSUPPORTED_COMMAND`: nothing was sent.
pub fn unsupported_command(api_key: &str, command: &str, target: Option<&str>) -> GatewayError {
    let message = match target {
        Some(_) => format!(
            "The target session does not handle the custom command '{command}' (an extension lists the commands it handles when it authenticates: auth data.commands)"
        ),
        None => format!(
            "No active device of this API key handles the custom command '{command}' (an extension lists the commands it handles when it authenticates: auth data.commands)"
        ),
    };
    let mut details = json!({ "apiKey": mask_api_key(api_key), "command": command, "sent": false });
    if let Some(target) = target {
        details["target"] = target.into();
    }
    GatewayError::new(ErrorCode::UnsupportedCommand, message, details)
}

/// `NO_ACTIVE_DEVICE`, saying why: `why` is `None` when the gateway is not running.
pub fn no_device(api_key: &str, why: Option<Unavailable>) -> GatewayError {
    let (reason, message) = match why {
        None => (
            "not-running",
            "No active WhatsApp device: the gateway is not running (call start() first)",
        ),
        Some(Unavailable::NoSessions) => (
            "no-sessions",
            "No active WhatsApp device: no extension is connected with this API key",
        ),
        Some(Unavailable::NoneReady | Unavailable::Unsupported) => (
            "none-ready",
            "No active WhatsApp device: extensions are connected with this API key, but none reports WhatsApp Web logged in and ready",
        ),
        Some(Unavailable::Target) => (
            "target-unavailable",
            "No active WhatsApp device: the target session is not connected with this API key, or does not report WhatsApp Web logged in and ready",
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Config;
    use crate::host::{AuthAnswer, Host, Validation};
    use crate::identity::Identity;
    use crate::protocol::StatusFrame;
    use crate::state::journal::Journal;
    use crate::state::link::SessionLink;
    use crate::state::Lifecycle;

    /// What the store is told, in order.
    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl Journal for Told {
        fn clear(&self, _: Arc<SessionLink>, _: Arc<Identity>, request_ids: Vec<u128>) {
            lock(&self.0).push(format!("leaving {}", request_ids.len()));
        }
        fn queued(&self, _: QueuedSend, _: bool) {
            lock(&self.0).push("kept".into());
        }
        fn incoming(&self, _: &str, _: &str, _: u64) {}
    }

    struct Quiet;

    impl Host for Quiet {
        fn deliver(&self, _: Delivery) {}
        fn validate(&self, _: String) -> Validation {
            Box::pin(async { Ok(AuthAnswer::default()) })
        }
    }

    #[test]
    fn durable_mode_keeps_a_send_to_an_idle_socket_before_it_may_wait_or_leave() {
        // Another thread may queue on the socket between any look at it and this send's
        // turn, and then this one waits for room: it is kept whatever the socket held.
        let shared = Shared::new(Config::default(), Arc::new(Quiet)).unwrap();
        let told = Arc::new(Told::default());
        let _ = shared.journal.set(told.clone());
        let link = Arc::new(SessionLink::default());
        {
            let mut registry = lock(&shared.registry);
            registry.journal = Some(told.clone());
            let identity = Identity::for_test("key", "s1");
            let (key, _) = registry.add(identity, link.clone(), 10).unwrap();
            registry.set_status(
                key,
                StatusFrame {
                    text: None,
                    ready: true,
                    whatsapp_logged_in: true,
                },
            );
        }
        shared.set_lifecycle(Lifecycle::Running);
        let request =
            SendRequest::new(SendKind::Message, "key".into(), "+1555".into(), "hi".into());
        shared.dispatch(1, request, None, Wake::Later);
        assert_eq!(*lock(&told.0), ["kept", "leaving 1"]);
    }
}
