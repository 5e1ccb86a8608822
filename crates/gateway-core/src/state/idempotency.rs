//! A call with an `idempotencyKey` or `metadata` before it is sent: its key is claimed
//! against the records (docs/delivery-records.md), and it gets its record.

use std::sync::Arc;

use uuid::Uuid;

use super::link::lock;
use super::records::{Claim, Record};
use super::registry::Registry;
use super::request_ids::RequestIds;
use super::send_request::SendRequest;
use super::settle::{duplicate_of, key_reused};
use super::Shared;
use crate::host::Delivery;
use crate::identity::CallId;

impl Shared {
    /// Claims the call's key, if it has one: `Some(request)` when this call is to be
    /// sent (with `open`, its record is opened too, in the same step), `None` when it
    /// waits for an earlier call or has settled already. Without a key it goes on.
    pub fn claim(&self, call: CallId, request: SendRequest, open: bool) -> Option<SendRequest> {
        let mut registry = lock(&self.registry);
        let claim = match request.idempotency_key.as_deref() {
            Some(key) => registry
                .statuses
                .claim(&request.api_key, key, request.fingerprint()),
            None => Claim::Free,
        };
        let settled = match claim {
            // Under the same lock as the claim: no other call can take the key between.
            Claim::Free if open => {
                let (request_id, request) = open_in(&mut registry, request, &self.request_ids);
                drop(registry);
                self.settling.track(call, request_id);
                return Some(request);
            }
            Claim::Free => return Some(request),
            Claim::Wait(first) => match registry.statuses.wait_for_call(first, (call, request)) {
                None => return None,
                // Closed meanwhile (not possible under this lock, but never lost).
                Some((_, request)) => return Some(request),
            },
            Claim::Reused(first) => Delivery::Rejected {
                call,
                error: key_reused(&Uuid::from_u128(first).to_string()),
            },
            Claim::Settled(first) => match registry.statuses.get(first) {
                Some(record) => duplicate_of(call, &record.stored(first)),
                None => return Some(request),
            },
        };
        drop(registry);
        self.host.deliver(settled);
        None
    }

    /// Gives a call its record from the start: its request id now, its outcome when
    /// it settles (`settle::Settling`).
    pub fn open_record(&self, call: CallId, request: SendRequest) -> SendRequest {
        let (request_id, request) = open_in(&mut lock(&self.registry), request, &self.request_ids);
        self.settling.track(call, request_id);
        request
    }
}

fn open_in(
    registry: &mut Registry,
    mut request: SendRequest,
    ids: &RequestIds,
) -> (u128, SendRequest) {
    let request_id = request.request_id.unwrap_or_else(|| ids.next().as_u128());
    request.request_id = Some(request_id);
    let api_key: Arc<str> = request.api_key.as_str().into();
    let record = Record::opened(&request, api_key);
    registry.statuses.open(request_id, record);
    (request_id, request)
}
