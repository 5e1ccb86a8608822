//! The holding process's side of a routed send: the host wrapper that catches the
//! outcomes of calls run for other processes and queues them for the caller's inbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::envelope::{AckEvent, Device, Envelope, Outcome, Success};
use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::host::{Delivery, Host, HostInFront, Resolved, Stage};
use crate::identity::{request_id_text, CallId, CLUSTER_CALL};
use crate::state::link::lock;
use crate::state::records::StoredRecord;
use crate::state::registry::SessionInfo;

/// What the cluster task writes to Redis, in order.
pub enum Outgoing {
    /// To another process's inbox; `call` is this process's call to fail if it
    /// cannot be written.
    Envelope {
        to: Arc<str>,
        envelope: Envelope,
        call: Option<CallId>,
    },
    /// Local sessions of one API key listed anew (`Some`: connected, or their status
    /// changed) or unlisted (`None`: gone), in order; serialized by the writer, off the
    /// locks.
    Listings {
        api_key: Arc<str>,
        digest: String,
        changes: Vec<ListingChange>,
    },
    /// Every listing of this process goes (`stop()` drains).
    UnlistAll,
    /// The record of the call holding an `idempotencyKey` (a Redis key) changed: its
    /// settled `state` and record JSON, or `state` empty when the call failed before
    /// writing (the key is free again). `ttl` counts from the first settlement.
    Record {
        key: String,
        request_id: String,
        state: &'static str,
        record: String,
        ttl: std::time::Duration,
    },
    /// The record of a call of this process holding an `idempotencyKey`, written
    /// again unless Redis has one (Redis lost it): its `state` (`pending` or settled),
    /// its fingerprint, and the TTL it has left.
    Restore {
        key: String,
        token: String,
        state: &'static str,
        record: Box<StoredRecord>,
        fingerprint: String,
        ttl: std::time::Duration,
    },
    /// A send's record (`keys::status`), as its calling process has it now.
    Status {
        request_id: String,
        record: String,
        ttl: std::time::Duration,
    },
}

/// A session (by id) listed as it is now, or unlisted (`None`).
pub type ListingChange = (Arc<str>, Option<SessionInfo>);

/// Where the outcome of a call run for another process goes.
#[derive(Clone)]
pub struct Origin {
    pub node: Arc<str>,
    pub call: CallId,
}

/// Sends run here for other processes, remembered for their acks and late results
/// (bounded: the oldest go first).
const ROUTES_KEPT: usize = 100_000;

/// Calling process by request id, with until when it is remembered; the request ids
/// oldest first.
type Routes = (HashMap<String, (Arc<str>, Instant)>, VecDeque<String>);

pub struct Relay {
    /// Digests for API keys in what goes through Redis.
    keys: Arc<super::keys::Keys>,
    origins: Mutex<HashMap<CallId, Origin>>,
    /// The calling process of each send run here for another, by request id.
    routes: Mutex<Routes>,
    pub outbox: mpsc::UnboundedSender<Outgoing>,
    next_call: AtomicU64,
}

impl Relay {
    pub fn new(keys: Arc<super::keys::Keys>) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (outbox, rx) = mpsc::unbounded_channel();
        let relay = Self {
            keys,
            origins: Mutex::default(),
            routes: Mutex::default(),
            outbox,
            next_call: AtomicU64::new(0),
        };
        (Arc::new(relay), rx)
    }

    /// A number for a call run for `origin`.
    pub fn adopt(&self, origin: Origin) -> CallId {
        let call = CLUSTER_CALL | self.next_call.fetch_add(1, Ordering::Relaxed);
        lock(&self.origins).insert(call, origin);
        call
    }

    /// Where a call run for another process came from, forgetting it.
    pub fn take_origin(&self, call: CallId) -> Option<Origin> {
        lock(&self.origins).remove(&call)
    }

    /// A send run here for `node`: its acks and a late result go there, until `until`.
    pub fn remember_route(&self, request_id: &str, node: Arc<str>, until: Instant) {
        let (by_id, order) = &mut *lock(&self.routes);
        if by_id
            .insert(request_id.to_string(), (node, until))
            .is_none()
        {
            order.push_back(request_id.to_string());
        }
        while order.len() > ROUTES_KEPT {
            if let Some(oldest) = order.pop_front() {
                by_id.remove(&oldest);
            }
        }
    }

    /// The calling process of a send run here for another, if remembered.
    pub fn route_of(&self, request_id: &str) -> Option<Arc<str>> {
        let routes = lock(&self.routes);
        let (node, until) = routes.0.get(request_id)?;
        (*until > Instant::now()).then(|| node.clone())
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.origins).len()
    }

    pub fn send(&self, outgoing: Outgoing) {
        // Only fails once the cluster task has ended, when nothing is listening anyway.
        let _ = self.outbox.send(outgoing);
    }

    fn resolved(&self, r: Resolved) {
        let origin = {
            let mut origins = lock(&self.origins);
            if r.stage == Stage::ResultAwaitingAck {
                origins.get(&r.id).cloned()
            } else {
                origins.remove(&r.id)
            }
        };
        let Some(origin) = origin else { return };
        let mut buf = [0u8; 36];
        let request_id = request_id_text(r.request_id, &mut buf).to_string();
        let success = Success {
            request_id,
            message_id: r.message_id,
            timestamp: r.timestamp,
            ack: r.ack.as_str().to_string(),
            stage: r.stage.code(),
            device: Device::of(&r.session),
        };
        self.reply(origin, Ok(success));
    }

    /// Sends a `message-ack` event to the process that called the send, if another.
    fn ack_event(&self, event: &LogEvent) -> bool {
        let Some(request_id) = &event.request_id else {
            return false;
        };
        let Some(node) = self.route_of(request_id) else {
            return false;
        };
        let ack = event
            .delivery
            .as_ref()
            .and_then(|d| d.ack)
            .unwrap_or("sent");
        let forwarded = AckEvent {
            key_digest: self.keys.digest(&event.api_key),
            session_id: event.session_id.clone(),
            user_id: event.user_id.clone(),
            request_id: request_id.clone(),
            phone_number: event
                .phone_number
                .clone()
                .or_else(|| event.delivery.as_ref().and_then(|d| d.chat_id.clone()))
                .unwrap_or_default(),
            message_id: event.message_id.clone().unwrap_or(serde_json::Value::Null),
            ack: ack.to_string(),
        };
        self.send(Outgoing::Envelope {
            to: node,
            envelope: Envelope::Ack(Box::new(forwarded)),
            call: None,
        });
        true
    }

    fn rejected(&self, call: CallId, error: GatewayError) {
        let origin = lock(&self.origins).remove(&call);
        if let Some(origin) = origin {
            self.reply(origin, Err(error));
        }
    }

    fn reply(&self, origin: Origin, result: Result<Success, GatewayError>) {
        let outcome = Outcome {
            call: origin.call,
            result,
        };
        self.send(Outgoing::Envelope {
            to: origin.node,
            envelope: Envelope::Outcome(Box::new(outcome)),
            call: None,
        });
    }
}

/// The host of a gateway in cluster mode: outcomes of calls run for other processes
/// go to them; everything else to the embedding host.
pub struct ClusterHost {
    pub inner: Arc<dyn Host>,
    pub relay: Arc<Relay>,
}

impl HostInFront for ClusterHost {
    fn behind(&self) -> &dyn Host {
        &*self.inner
    }

    fn deliver(&self, delivery: Delivery) {
        match delivery {
            Delivery::Resolved(r) if r.id & CLUSTER_CALL != 0 => self.relay.resolved(r),
            Delivery::Rejected { call, error } if call & CLUSTER_CALL != 0 => {
                self.relay.rejected(call, error)
            }
            Delivery::Log(event) if event.kind == "message-ack" && self.relay.ack_event(&event) => {
            }
            other => self.inner.deliver(other),
        }
    }
}
