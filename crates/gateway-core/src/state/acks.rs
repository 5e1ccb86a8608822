//! A send's life after the extension's result (5.2): its status is remembered, a
//! caller with `waitFor` waits for the ack it asked for, and `message-ack` frames
//! move the status forward.

use std::sync::{Arc, MutexGuard};

use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::link::lock;
use super::records::State;
use super::records::{Record, Waiter};
use super::registry::{Registry, SessionKey, Settled};
use super::Shared;
use crate::clock::now_ms;
use crate::error::{ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::{Delivery, Resolved, Stage};
use crate::identity::{Identity, CLUSTER_CALL};
use crate::protocol::delivery::{Ack, AckFrame};
use crate::protocol::{retryable, Recipient, ResultFrame, SendKind};

impl Shared {
    /// Settles the request a `message-result` answers, if it was written to a session
    /// of `key`'s API key; else, if its call has settled without a result, the
    /// extension's word is its late truth.
    pub fn on_result(&self, key: SessionKey, result: ResultFrame) {
        // Ids the gateway never issued, or issued for another API key, settle nothing.
        let Ok(id) = Uuid::try_parse(&result.request_id) else {
            return;
        };
        let mut registry = lock(&self.registry);
        let Some((mut settled, answering)) = registry.settle_from(key, id.as_u128()) else {
            let identity = registry.identity_of(key);
            drop(registry);
            if let Some(identity) = identity {
                self.late_result(id.as_u128(), identity, result);
            }
            return;
        };
        settled.identity = answering;
        if result.success {
            self.succeed(registry, settled, result);
        } else {
            drop(registry);
            self.complete(settled, result);
        }
    }

    /// A result for a send whose call settled without one (timed out, connection
    /// lost): an `unknown` record takes it; a success fires the kind's `*-sent` with
    /// `late: true` where the call was made.
    fn late_result(&self, request_id: u128, answered_by: Arc<Identity>, mut result: ResultFrame) {
        let api_key = answered_by.api_key.clone();
        let mut registry = lock(&self.registry);
        // Which answer a success gives depends on what the request was.
        let Some(kind) = registry.statuses.get(request_id).map(|r| r.kind) else {
            return;
        };
        let answer = if result.success {
            let timestamp = result.timestamp.unwrap_or(now_ms() as f64);
            Ok((result.answer(kind), timestamp))
        } else {
            Err(extension_error(request_id, &answered_by, &result))
        };
        // Carried to the calling process of a command run here for it, which may keep it.
        let carried = match (&answer, kind) {
            (Ok((data, _)), SendKind::Command) => Some(data.clone()),
            _ => None,
        };
        let Some(record) = registry
            .statuses
            .late(request_id, &api_key, answered_by, answer)
        else {
            return;
        };
        let mut stored = record.stored(request_id);
        if record.for_other && stored.data.is_none() {
            stored.data = carried;
        }
        let event = (record.state == State::Sent && !record.for_other && self.config.log_events)
            .then(|| {
                record.identity.as_ref().map(|who| {
                    let to = Recipient::of(record.kind, record.phone_number());
                    LogEvent::sent_late(
                        record.kind,
                        who,
                        to,
                        &stored.request_id,
                        record.message_id(),
                    )
                    .with_metadata(record.metadata())
                })
            })
            .flatten();
        let for_other = record.for_other;
        let keyed = record
            .call()
            .filter(|c| c.idempotency_key.is_some())
            .map(|c| c.api_key.clone());
        drop(registry);
        if let Some(directory) = self.directory.get() {
            if for_other {
                directory.late_result(&api_key, stored);
            } else if let Some(api_key) = keyed {
                directory.record_changed(&api_key, stored, false);
            }
        }
        if let Some(event) = event {
            self.host.deliver(Delivery::Log(event));
        }
    }

    /// Records a successful result under the registry lock the caller holds, then
    /// resolves the call, or keeps it waiting for the ack it asked for.
    pub(super) fn succeed(
        &self,
        mut registry: MutexGuard<'_, Registry>,
        settled: Settled,
        result: ResultFrame,
    ) {
        let Settled {
            identity,
            request_id,
            pending,
        } = settled;
        let timestamp = result.timestamp.unwrap_or(now_ms() as f64);
        let mut result = result;
        let answer = result.answer(pending.kind);
        let mut record = Record::sent(
            identity.clone(),
            pending.kind,
            &pending.phone_number,
            &answer,
            timestamp,
        );
        record.for_other = pending.call & CLUSTER_CALL != 0;
        registry.statuses.record(request_id, record);
        if pending.kind == SendKind::Command {
            registry.statuses.answered(request_id, &answer);
        }
        let stage = if pending.wait_for > Ack::Sent {
            let waiter = Waiter {
                call: pending.call,
                wait_for: pending.wait_for,
                timeout_ms: pending.timeout_ms,
                deadline: pending.deadline,
            };
            registry.statuses.wait(request_id, waiter);
            Stage::ResultAwaitingAck
        } else {
            Stage::Result
        };
        drop(registry);
        self.host.deliver(Delivery::Resolved(Resolved {
            id: pending.call,
            request_id,
            message_id: answer,
            timestamp,
            session: identity,
            ack: Ack::Sent,
            stage,
        }));
    }

    /// A `message-ack` from session `key`: accepted for any successful send of the
    /// same API key, only if it moves that send forward.
    pub fn on_ack(&self, key: SessionKey, frame: AckFrame) {
        let Ok(id) = Uuid::try_parse(&frame.request_id) else {
            return;
        };
        let request_id = id.as_u128();
        let mut registry = lock(&self.registry);
        let Some(api_key) = registry.api_key_of(key) else {
            return;
        };
        let Some(advanced) =
            registry
                .statuses
                .advance(request_id, &api_key, frame.ack, frame.message_id)
        else {
            return;
        };
        let record = advanced.record;
        let message_id = record.message_id();
        let Some(identity) = record.identity.clone() else {
            return;
        };
        let event = self.config.log_events.then(|| {
            let to = Recipient::of(record.kind, record.phone_number());
            LogEvent::message_ack(
                &identity,
                &frame.request_id,
                to,
                message_id.clone(),
                frame.ack,
            )
            .with_metadata(record.metadata())
        });
        let keyed = record
            .call()
            .filter(|c| c.idempotency_key.is_some() && !c.open)
            .map(|c| (c.api_key.clone(), record.stored(request_id)));
        let resolved = advanced.waiter.map(|waiter| Resolved {
            id: waiter.call,
            request_id,
            message_id,
            timestamp: record.timestamp,
            session: identity,
            ack: frame.ack,
            stage: Stage::Ack,
        });
        drop(registry);
        if let (Some(directory), Some((api_key, stored))) = (self.directory.get(), keyed) {
            directory.record_changed(&api_key, stored, false);
        }
        if let Some(event) = event {
            self.host.deliver(Delivery::Log(event));
        }
        if let Some(resolved) = resolved {
            self.host.deliver(Delivery::Resolved(resolved));
        }
    }

    /// Rejects the callers whose `waitFor` ack did not come in time. The message
    /// went out, so this is no `send-failed`, and the status stays `'sent'`.
    pub fn expire_ack_waits(&self, now: Instant) {
        let expired = lock(&self.registry).statuses.expire(now);
        for (request_id, waiter, ack, session_id) in expired {
            let error = ack_timeout(request_id, &waiter, ack, &session_id);
            self.host.deliver(Delivery::Rejected {
                call: waiter.call,
                error,
            });
        }
    }

    /// `stop()`: callers still waiting for an ack reject `GATEWAY_SHUTDOWN`.
    pub fn abandon_ack_waits(&self) {
        let waiting = lock(&self.registry).statuses.take_waiters();
        for (request_id, waiter, session_id) in waiting {
            let error = GatewayError::new(
                ErrorCode::GatewayShutdown,
                "Gateway is shutting down (the message was sent; its ack had not arrived)",
                json!({ "requestId": request_text(request_id), "sessionId": &*session_id, "sent": true }),
            );
            self.host.deliver(Delivery::Rejected {
                call: waiter.call,
                error,
            });
        }
    }
}

/// `EXTENSION_ERROR` for a result with `success: false`; with the extension's failure
/// `code`, if it gave one, and whether trying again later may succeed.
pub fn extension_error(request_id: u128, who: &Identity, result: &ResultFrame) -> GatewayError {
    let error = &result.error;
    let mut message = format!("Extension reported failure: {}", describe(error));
    let mut details = json!({ "requestId": request_text(request_id), "sessionId": who.session_id(), "error": error, "sent": true });
    if let Some(code) = &result.code {
        message.push_str(&format!(" ({code})"));
        details["extensionCode"] = code.as_str().into();
        details["retryable"] = retryable(code).into();
    }
    GatewayError::new(ErrorCode::ExtensionError, message, details)
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

fn request_text(request_id: u128) -> String {
    Uuid::from_u128(request_id).to_string()
}

fn ack_timeout(
    request_id: u128,
    waiter: &Waiter,
    ack: Option<Ack>,
    session_id: &Arc<str>,
) -> GatewayError {
    let wanted = waiter.wait_for.as_str();
    let got = match ack {
        Some(Ack::Sent) | None => "the extension sent no acks".to_string(),
        Some(other) => format!("the highest ack was '{}'", other.as_str()),
    };
    GatewayError::new(
        ErrorCode::RequestTimeout,
        format!(
            "Request timed out after {} ms waiting for '{wanted}': the message did go out (the extension reported it sent), but {got}",
            waiter.timeout_ms
        ),
        json!({
            "requestId": request_text(request_id),
            "sessionId": &**session_id,
            "timeout": waiter.timeout_ms,
            "waitFor": wanted,
            "ack": ack.map_or(Value::Null, |a| Value::from(a.as_str())),
            "sent": true,
        }),
    )
}
