//! What the host asks of the whole cluster: sessions, a send's status, and
//! `idempotencyKey`s, which live in Redis.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::envelope::{Envelope, Listing};
use super::relay::Outgoing;
use super::{unavailable, Cluster};
use crate::error::{ErrorCode, GatewayError};
use crate::identity::Identity;
use crate::protocol::delivery::Ack;
use crate::state::link::lock;
use crate::state::registry::SessionInfo;

impl Cluster {
    pub(super) fn local_status(&self, request_id: &str) -> Option<Value> {
        let id = uuid::Uuid::try_parse(request_id).ok()?;
        let status = lock(&self.shared.registry).message_status(id.as_u128())?;
        Some(json!({
            "requestId": request_id,
            "state": status.state.as_str(),
            "ack": status.ack.map(Ack::as_str),
            "sessionId": (!status.session_id.is_empty()).then(|| status.session_id.to_string()),
            "updatedAt": status.updated_at,
        }))
    }

    /// `getMessageStatus` across the cluster: this process's record, else the first
    /// other process's that has one (each asked through its inbox, for up to a second).
    pub async fn message_status(&self, request_id: &str) -> Value {
        if let Some(status) = self.local_status(request_id) {
            return status;
        }
        let others: Vec<Arc<str>> = lock(&self.view)
            .live()
            .map(|(node, _)| node.clone())
            .filter(|node| *node != self.node_id)
            .collect();
        if others.is_empty() || !self.usable() {
            return Value::Null;
        }
        let token = self.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.status_queries).insert(token, tx);
        for node in &others {
            self.relay.send(Outgoing::Envelope {
                to: node.clone(),
                envelope: Envelope::StatusQuery {
                    from: self.node_id.to_string(),
                    token,
                    request_id: request_id.to_string(),
                },
                call: None,
            });
        }
        let mut found = Value::Null;
        let replies = async {
            for _ in 0..others.len() {
                match rx.recv().await {
                    Some(Some(status)) => return Some(status),
                    Some(None) => {}
                    None => return None,
                }
            }
            None
        };
        if let Ok(Some(status)) = tokio::time::timeout(Duration::from_secs(1), replies).await {
            found = status;
        }
        lock(&self.status_queries).remove(&token);
        found
    }

    /// `getActiveSessions` across the cluster: this process's sessions and the others'
    /// as listed in Redis (local only while Redis is unreachable).
    pub async fn sessions(&self, api_key: &str) -> Value {
        let local = lock(&self.shared.registry).sessions_of(api_key);
        let mut all: Vec<Value> = local
            .into_iter()
            .map(|s| self.with_node(&self.node_id, s, None))
            .collect();
        if self.usable() {
            self.know(api_key);
            if let Ok((listings, _)) = self.redis.listings(api_key).await {
                all.extend(self.remote_listings(listings, false));
            }
        }
        Value::Array(all)
    }

    /// `getAllSessions` across the cluster, each session with its `apiKeyDigest`, and
    /// its `apiKey` when this process knows that key (else null: Redis has digests only).
    pub async fn all_sessions(&self) -> Value {
        let local = lock(&self.shared.registry).all_sessions();
        let mut all: Vec<Value> = local
            .into_iter()
            .map(|(key, s)| {
                let digest = self.know(&key);
                let mut value = self.with_node(&self.node_id, s, Some(&key));
                value["apiKeyDigest"] = digest.into();
                value
            })
            .collect();
        if self.usable() {
            if let Ok(listings) = self.redis.all_listings().await {
                all.extend(self.remote_listings(listings, true));
            }
        }
        Value::Array(all)
    }

    fn remote_listings(&self, listings: Vec<Listing>, with_key: bool) -> Vec<Value> {
        listings
            .into_iter()
            .filter(|l| *l.node_id != *self.node_id)
            .map(|l| {
                let mut value = self.with_node(&l.node_id, l.info.clone(), None);
                if with_key {
                    let key = self.known_key(&l.api_key_digest);
                    value["apiKey"] = key.map_or(Value::Null, |k| (*k).into());
                    value["apiKeyDigest"] = l.api_key_digest.into();
                }
                value
            })
            .collect()
    }

    fn with_node(&self, node_id: &str, info: SessionInfo, api_key: Option<&str>) -> Value {
        let mut value = serde_json::to_value(info).unwrap_or(Value::Null);
        value["nodeId"] = node_id.into();
        if let Some(api_key) = api_key {
            value["apiKey"] = api_key.into();
        }
        value
    }

    /// 5.2 `idempotencyKey` across the cluster: answers `{ state: 'first' }` when this
    /// call takes the key (it then reports its outcome with `remember_once` or
    /// `forget_once`), or `{ state: 'done', result | error }` once the call that took it
    /// has settled (waiting while it is in flight).
    pub async fn take_once(&self, api_key: &str, key: &str) -> Result<Value, GatewayError> {
        let redis_key = self.redis.keys.idempotency(api_key, key);
        let config = &self.shared.config;
        // The longest a first call may stay in flight; then its record lapses.
        let hold = config.request_timeout + self.lease + Duration::from_secs(2);
        let pending = json!({ "state": "pending", "nodeId": &*self.node_id }).to_string();
        let give_up = Instant::now() + hold;
        loop {
            if !self.usable() {
                let mut error = unavailable(api_key);
                error.message = "An idempotencyKey cannot be checked across the cluster while Redis is unreachable".into();
                error.details["sent"] = false.into();
                return Err(error);
            }
            let held = match self.redis.take_once(&redis_key, &pending, hold).await {
                Ok(held) => held,
                Err(failure) => {
                    self.trouble(&failure);
                    self.set_connected(false, Some(&failure));
                    continue;
                }
            };
            let Some(held) = held else {
                return Ok(json!({ "state": "first" }));
            };
            let record: Value = serde_json::from_str(&held).unwrap_or(Value::Null);
            if record["state"] == "done" {
                return Ok(record);
            }
            let holder_alive = record["nodeId"]
                .as_str()
                .is_some_and(|n| lock(&self.view).lease_until(n).is_some());
            if !holder_alive || Instant::now() >= give_up {
                return Err(GatewayError::new(
                    ErrorCode::ConnectionLost,
                    "The call that first used this idempotencyKey was on a gateway process that is gone; it may or may not have been sent",
                    json!({ "duplicate": true }),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outcome of the call that took an `idempotencyKey`, kept `idempotencyTtl`.
    pub fn remember_once(&self, api_key: &str, key: &str, outcome: String) {
        self.relay.send(Outgoing::Remember {
            key: self.redis.keys.idempotency(api_key, key),
            outcome,
            ttl: self.shared.config.idempotency_ttl,
        });
    }

    /// The call that took an `idempotencyKey` failed before it was written.
    pub fn forget_once(&self, api_key: &str, key: &str) {
        self.relay.send(Outgoing::Forget {
            key: self.redis.keys.idempotency(api_key, key),
        });
    }

    pub(super) fn listing(&self, who: &Identity, info: SessionInfo) -> Listing {
        Listing {
            node_id: self.node_id.to_string(),
            api_key_digest: self.know(&who.api_key),
            info,
        }
    }
}
