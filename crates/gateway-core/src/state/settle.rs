//! The one place every outcome of a call with a record from the start passes
//! (docs/delivery-records.md): a wrapper of the host that sees each `Resolved` and
//! `Rejected` on its way out. The paths that settle a send are many (no device,
//! media, queues, timeouts, lost sessions, shutdown, cluster routing); wrapping the
//! host closes the record whichever one it was, and hands the calls that waited on it
//! their outcome. Plain calls pass with one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::json;

use super::link::lock;
use super::records::{Closed, Outcome, State, StoredRecord};
use super::send_request::SendRequest;
use super::Shared;
use crate::error::{ErrorCode, GatewayError};
use crate::host::{Delivery, Host, HostInFront, Stage};
use crate::identity::CallId;
use crate::protocol::SendKind;

pub struct Settling {
    inner: Arc<dyn Host>,
    shared: Weak<Shared>,
    /// Calls whose record is open: call -> request id.
    open: Mutex<HashMap<CallId, u128>>,
    count: AtomicUsize,
}

impl Settling {
    pub fn new(inner: Arc<dyn Host>, shared: Weak<Shared>) -> Self {
        Self {
            inner,
            shared,
            open: Mutex::default(),
            count: AtomicUsize::new(0),
        }
    }

    /// `call`'s outcome closes the record `request_id`.
    pub fn track(&self, call: CallId, request_id: u128) {
        if lock(&self.open).insert(call, request_id).is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `call` no longer settles a record (durable mode: its send stays in the store).
    pub fn forget(&self, call: CallId) {
        self.untrack(call);
    }

    fn untrack(&self, call: CallId) -> Option<u128> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let found = lock(&self.open).remove(&call);
        if found.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        found
    }
}

impl HostInFront for Settling {
    fn behind(&self) -> &dyn Host {
        &*self.inner
    }

    fn deliver(&self, delivery: Delivery) {
        let call = match &delivery {
            Delivery::Resolved(r) if r.stage != Stage::ResultAwaitingAck => r.id,
            Delivery::Rejected { call, .. } => *call,
            _ => return self.inner.deliver(delivery),
        };
        let (Some(request_id), Some(shared)) = (self.untrack(call), self.shared.upgrade()) else {
            return self.inner.deliver(delivery);
        };
        let closed = shared.close_record(request_id, &delivery);
        // The first call's own outcome goes first; its duplicates follow.
        self.inner.deliver(delivery);
        if let Some(closed) = closed {
            shared.release_waiting(request_id, closed);
        }
    }
}

impl Shared {
    /// Closes the record of a call that has settled with `delivery`.
    fn close_record(&self, request_id: u128, delivery: &Delivery) -> Option<Closed> {
        let outcome = match delivery {
            Delivery::Resolved(r) => Outcome::Resolved {
                identity: r.session.clone(),
                message_id: &r.message_id,
                timestamp: r.timestamp,
                ack: r.ack,
            },
            Delivery::Rejected { error, .. } => Outcome::Rejected(error),
            _ => return None,
        };
        let mut registry = lock(&self.registry);
        let closed = registry.statuses.close(request_id, outcome)?;
        let record = registry.statuses.get(request_id)?;
        if let (Some(directory), Some(call)) = (self.directory.get(), record.call()) {
            if call.idempotency_key.is_some() {
                let stored = record.stored(request_id);
                let api_key = call.api_key.clone();
                drop(registry);
                directory.record_changed(&api_key, stored, closed.freed);
            }
        }
        Some(closed)
    }

    /// The calls that waited for a settled call with their key: each settles by its
    /// record now; if the key was freed, each is sent anew, in order (the first takes
    /// the key, the others wait for it).
    fn release_waiting(&self, request_id: u128, closed: Closed) {
        if closed.waiting.is_empty() {
            return;
        }
        if closed.freed {
            for (call, request) in closed.waiting {
                self.resend(call, request);
            }
            return;
        }
        let stored = lock(&self.registry)
            .statuses
            .get(request_id)
            .map(|r| r.stored(request_id));
        for (call, request) in closed.waiting {
            match &stored {
                Some(stored) => self.host.deliver(duplicate_of(call, stored)),
                None => self.resend(call, request),
            }
        }
    }

    /// Sends `request` again as a new call (its key was freed).
    pub fn resend(&self, call: CallId, request: SendRequest) {
        match self.resend.get() {
            Some(send) => send(call, request),
            None => self.host.deliver(Delivery::Rejected {
                call,
                error: GatewayError::new(
                    ErrorCode::ServerError,
                    "The gateway cannot send this call again",
                    json!({ "sent": false }),
                ),
            }),
        }
    }
}

/// How a duplicate settles by the record of the first call with its key: like its
/// success (`duplicate: true`), or like its rejection (`details.duplicate`, and
/// `details.state: 'unknown'` when the first may have gone out).
pub fn duplicate_of(call: CallId, first: &StoredRecord) -> Delivery {
    if first.state == State::Sent && first.kind == SendKind::Command {
        return Delivery::Duplicate {
            call,
            result: command_duplicate(first),
        };
    }
    if first.state == State::Sent {
        let device = first.device.as_ref();
        let mut result = json!({
            "success": true,
            "requestId": first.request_id,
            "messageId": first.message_id,
            "timestamp": first.timestamp,
            "deviceInfo": {
                "sessionId": device.map(|d| d.session_id.as_str()),
                "extensionVersion": device.map(|d| d.extension_version.as_str()),
                "browser": device.map(|d| d.browser.as_str()),
            },
            "ack": first.ack.map_or("sent", |a| a.as_str()),
            "duplicate": true,
        });
        if !first.metadata.is_null() {
            result["metadata"] = first.metadata.clone();
        }
        return Delivery::Duplicate { call, result };
    }
    let mut error = first.error.clone().unwrap_or_else(|| {
        GatewayError::new(
            ErrorCode::ConnectionLost,
            "The call that first used this idempotencyKey ended without a result; it may or may not have been sent",
            json!({ "requestId": first.request_id, "sent": true }),
        )
    });
    if !error.details.is_object() {
        error.details = json!({});
    }
    error.details["duplicate"] = true.into();
    if first.state == State::Unknown {
        error.details["state"] = "unknown".into();
    }
    Delivery::Rejected { call, error }
}

/// What `request()` resolves for a duplicate of a custom command that succeeded:
/// `{ requestId, data, deviceInfo }` of the first, with `duplicate: true`.
fn command_duplicate(first: &StoredRecord) -> serde_json::Value {
    let device = first.device.as_ref();
    let mut result = json!({
        "requestId": first.request_id,
        "data": first.data.clone().unwrap_or_default(),
        "deviceInfo": {
            "sessionId": device.map(|d| d.session_id.as_str()),
            "extensionVersion": device.map(|d| d.extension_version.as_str()),
            "browser": device.map(|d| d.browser.as_str()),
        },
        "duplicate": true,
    });
    if !first.metadata.is_null() {
        result["metadata"] = first.metadata.clone();
    }
    result
}

/// `IDEMPOTENCY_KEY_REUSED`: the key was used for another message.
pub fn key_reused(first_request_id: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::IdempotencyKeyReused,
        "This idempotencyKey was already used for a different message (recipient, kind, text, caption or media) within idempotencyTtl; nothing was sent. Use a new key for a new message",
        json!({ "requestId": first_request_id }),
    )
}
