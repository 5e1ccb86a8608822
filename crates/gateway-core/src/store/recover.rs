//! `start()` with a store: what it held becomes the gateway's state again. Records
//! come back; a send that was leaving or written when the process ended is
//! `unknown` (never sent again), one that had not reached a queue yet `failed`; sends
//! that waited take their place again, in their order, each with its request id,
//! metadata and deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::db::Contents;
use crate::clock::{monotonic_at, now_ms};
use crate::error::{ErrorCode, GatewayError};
use crate::host::Delivery;
use crate::identity::RECOVERED_CALL;
use crate::state::link::lock;
use crate::state::records::Outcome;
use crate::state::requests::SendRequest;
use crate::state::Shared;

static NEXT: AtomicU64 = AtomicU64::new(1);

pub fn recover(shared: &Shared, contents: Contents) {
    let kept = std::mem::take(&mut *lock(&shared.kept));
    for call in kept.values() {
        shared.settling.forget(*call);
    }
    let queued: std::collections::HashSet<u128> =
        contents.queued.iter().map(|q| q.send.request_id).collect();
    let mut registry = lock(&shared.registry);
    registry.statuses.configure(
        shared.config.idempotency_ttl,
        shared.config.max_message_statuses,
    );
    let mut ended = Vec::new();
    for (api_key, stored) in &contents.records {
        let unsettled = stored.settled_at.is_none();
        let id = uuid::Uuid::try_parse(&stored.request_id).map(|u| u.as_u128());
        let waits = id.as_ref().is_ok_and(|id| queued.contains(id)) && unsettled && !stored.written;
        let api_key: Arc<str> = api_key.as_str().into();
        if let Some(id) = registry.statuses.restore(api_key, stored, waits) {
            if unsettled && !waits {
                ended.push((id, stored.written));
            }
        }
    }
    // The process ended while these were on their way: written ones may have gone out.
    for (id, written) in ended {
        let request_id = uuid::Uuid::from_u128(id).to_string();
        let error = GatewayError::new(
            ErrorCode::GatewayShutdown,
            if written {
                "The gateway process ended after this send's command was handed to the extension and before its result; it may or may not have been sent"
            } else {
                "The gateway process ended before this send was queued; it was not sent"
            },
            json!({ "requestId": request_id, "sent": written, "recovered": true }),
        );
        registry.statuses.close(id, Outcome::Rejected(&error));
    }
    drop(registry);
    {
        let mut incoming = lock(&shared.incoming);
        for (api_key, message_id, seen_at) in &contents.incoming {
            let api_key: Arc<str> = api_key.as_str().into();
            incoming.first_time(&api_key, message_id, monotonic_at(*seen_at));
        }
    }
    let now = now_ms();
    for recovered in contents.queued {
        let send = recovered.send;
        // Each its own call id (a record closes by its call): a number above the
        // host's 32 bits, unique in the process.
        let number = NEXT.fetch_add(1, Ordering::Relaxed) & ((1 << 30) - 1);
        let host_call = kept.get(&send.request_id).copied().unwrap_or(0) & u64::from(u32::MAX);
        let call = RECOVERED_CALL | number << 32 | host_call;
        shared.settling.track(call, send.request_id);
        let request_id = uuid::Uuid::from_u128(send.request_id).to_string();
        if send.deadline_at <= now {
            let error = GatewayError::new(
                ErrorCode::RequestTimeout,
                "Request timed out while the gateway was not running; it was never sent",
                json!({ "requestId": request_id, "sessionId": null, "sent": false, "recovered": true }),
            );
            shared.host.deliver(Delivery::Rejected { call, error });
            continue;
        }
        let left = Duration::from_millis(send.deadline_at - now);
        let mut request = SendRequest::new(send.kind, send.api_key, send.phone_number, send.text);
        request.document_name = send.document_name;
        request.strategy = send.strategy;
        request.timeout = Some(left);
        // It waits for an active device of its key until its original deadline.
        request.wait_for_device = Some(left);
        request.request_id = Some(send.request_id);
        shared.take_up(call, request, send.media);
    }
}
