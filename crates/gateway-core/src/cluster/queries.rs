//! What the host asks of the whole cluster: sessions and a send's status.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::envelope::{Envelope, Listing};
use super::relay::Outgoing;
use super::Cluster;
use crate::identity::Identity;
use crate::state::link::lock;
use crate::state::records::{State, StatusKey, StoredRecord};
use crate::state::registry::SessionInfo;

impl Cluster {
    pub(super) fn local_status(&self, request_id: &str) -> Option<Value> {
        let id = uuid::Uuid::try_parse(request_id).ok()?;
        lock(&self.shared.registry).message_status(id.as_u128())
    }

    /// `getMessageStatus` across the cluster: this process's record, else the first
    /// other process's that has one (each asked through its inbox, for up to a second).
    /// The order: this process's own record; the caller's record in Redis once settled
    /// (when it settled `unknown`, the record of the process that ran its command if
    /// that one has since had the extension's answer); a live process that has it; this
    /// process's record of a send it ran for another (the holder of a command whose
    /// caller is gone); else the caller's last record, as `unknown` (it can no longer
    /// settle, and may have been written).
    pub async fn message_status(&self, request_id: &str) -> Value {
        let local = self.local_status(request_id);
        let for_other = uuid::Uuid::try_parse(request_id)
            .is_ok_and(|id| lock(&self.shared.registry).ran_for_other(id.as_u128()));
        if let Some(status) = local.as_ref().filter(|_| !for_other) {
            return status.clone();
        }
        // Written by its calling process (every change, within a round): found even
        // when that process is gone.
        let mut stored = None;
        if uuid::Uuid::try_parse(request_id).is_ok() && self.usable() {
            let key = self.redis.keys.status(request_id);
            let read = self.redis.status_record(&key).await.ok().flatten();
            stored = read.and_then(|text| serde_json::from_str::<StoredRecord>(&text).ok());
            if let Some(record) = stored.as_ref().filter(|r| r.settled_at.is_some()) {
                // Settled `unknown` (no result before the call's timeout): the process
                // that ran its command may have had the extension's answer since, which
                // a caller that is gone never heard. Here, or asked below.
                if record.state != State::Unknown {
                    return record.status(record.state);
                }
                if let Some(status) = local.as_ref().filter(|status| decided(status)) {
                    return with_callers_fields(status.clone(), record);
                }
            }
        }
        let live = self.ask_others(request_id, None).await;
        // Run here for a caller that is gone: this process holds the command's truth.
        let live = match local {
            Some(status) if live.is_null() || !decided(&live) && decided(&status) => status,
            _ => live,
        };
        match stored {
            Some(record) if decided(&live) => with_callers_fields(live, &record),
            // Settled `unknown`, and nobody knows better.
            Some(record) if record.settled_at.is_some() => record.status(record.state),
            // Its caller is gone before it settled: it can no longer settle, and it may
            // have been written.
            Some(record) if live.is_null() => record.status(State::Unknown),
            _ => live,
        }
    }

    /// `getMessageStatus({ apiKey, idempotencyKey | messageId })` across the cluster:
    /// this process's record, else the key's record in Redis (if `unknown`, what its
    /// request id finds when that tells how it ended), or the first other process's
    /// record of that message id.
    pub async fn message_status_by(&self, api_key: &str, by: &StatusKey) -> Value {
        if let Some(status) = lock(&self.shared.registry).message_status_by(api_key, by) {
            return status;
        }
        if !self.usable() {
            return Value::Null;
        }
        match by {
            StatusKey::Idempotency(key) => {
                let key = self.redis.keys.idempotency(api_key, key);
                let read = self.redis.key_record(&key).await.ok().flatten();
                let Some(record) =
                    read.and_then(|text| serde_json::from_str::<StoredRecord>(&text).ok())
                else {
                    return Value::Null;
                };
                if record.state == State::Unknown {
                    // As by request id: a late answer may be known where it ran.
                    let found = self.message_status(&record.request_id).await;
                    if decided(&found) {
                        return found;
                    }
                }
                record.status(record.state)
            }
            StatusKey::Message(id) => {
                // The key by its digest: keys never travel through Redis.
                let by_message = Some((self.know(api_key), id.clone()));
                self.ask_others("", by_message).await
            }
        }
    }

    /// Asks every other live process for a record; the first that has one answers.
    async fn ask_others(&self, request_id: &str, by_message: Option<(String, Value)>) -> Value {
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
                    by_message: by_message.clone(),
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
        // Listings leave out an empty list; sessions always show one.
        if value.get("commands").is_none() {
            value["commands"] = Value::Array(Vec::new());
        }
        value["nodeId"] = node_id.into();
        if let Some(api_key) = api_key {
            value["apiKey"] = api_key.into();
        }
        value
    }

    pub(super) fn listing(&self, who: &Identity, info: SessionInfo) -> Listing {
        Listing {
            node_id: self.node_id.to_string(),
            api_key_digest: self.know(&who.api_key),
            info,
        }
    }
}

/// Whether a status tells how the send ended: sent, or failed.
fn decided(status: &Value) -> bool {
    let state = status.get("state").and_then(Value::as_str);
    [State::Sent, State::Failed]
        .iter()
        .any(|s| state == Some(s.as_str()))
}

/// The record of the process that ran a send for another, with what only the caller's
/// record carries (the send's metadata and idempotency key).
fn with_callers_fields(mut status: Value, caller: &StoredRecord) -> Value {
    let full = caller.status(caller.state);
    if let Some(fields) = status.as_object_mut() {
        for name in ["metadata", "idempotencyKey"] {
            let missing = fields.get(name).is_none_or(Value::is_null);
            if let Some(value) = full.get(name).filter(|_| missing) {
                fields.insert(name.to_string(), value.clone());
            }
        }
    }
    status
}
