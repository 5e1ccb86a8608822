//! Idempotency keys across processes (docs/delivery-records.md, "Cluster mode"): a
//! call claims its key's record in Redis before anything is sent, marks it placed
//! before its command can be written anywhere, and writes it there as it settles and
//! as later truth comes. Also the calling process's side of late results.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use uuid::Uuid;

use super::envelope::{Envelope, LateResult};
use super::redis_io::{KeyClaim, Taken};
use super::relay::Outgoing;
use super::routing::{device_wait, refusal};
use super::{unavailable, Cluster};
use crate::error::{ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::Delivery;
use crate::identity::{CallId, Commands, Identity, Texts};
use crate::media::Media;
use crate::protocol::{Recipient, SendKind};
use crate::state::link::lock;
use crate::state::records::{Record, State, StoredRecord};
use crate::state::registry::Unavailable;
use crate::state::requests::{no_device, unsupported_command, SendRequest, Wake, Wants};
use crate::state::settle::{duplicate_of, key_reused};
use crate::state::Lifecycle;

/// A duplicate whose first call is held by a live process asks again after this,
/// doubling up to `POLL_MAX`.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How often a claimed send that waits for a device looks for one.
const DEVICE_POLL: Duration = Duration::from_millis(100);
/// How long after their settlement calls' records are written again to a Redis that
/// lost them (README "Cluster mode"); open calls' always are.
const RESTORED_FOR: Duration = Duration::from_secs(3600);
/// A bound on one Redis round trip of a claim.
const ROUND_TRIP: Duration = Duration::from_secs(2);

impl Cluster {
    /// Claims the call's `idempotencyKey` across the cluster: `Some(request)` (with its
    /// record open here) when this call is to be sent, `None` when it has settled (a
    /// duplicate, a reused key, Redis away) or waits on a call of this process.
    pub async fn claim_key(
        self: &Arc<Self>,
        call: CallId,
        mut request: SendRequest,
    ) -> Option<SendRequest> {
        let api_key: Arc<str> = request.api_key.as_str().into();
        let key = self
            .redis
            .keys
            .idempotency(&api_key, request.idempotency_key.as_deref().unwrap_or(""));
        let request_id = self.shared.request_ids.next().as_u128();
        request.request_id = Some(request_id);
        let id_text = Uuid::from_u128(request_id).to_string();
        let fingerprint = format!("{:016x}", request.fingerprint());
        let pending = Record::opened(&request, api_key.clone()).stored(request_id);
        let record = serde_json::to_string(&pending).unwrap_or_default();
        let mut pause = POLL_FIRST;
        let deadline = request
            .called_at
            .map_or_else(Instant::now, Instant::from_std)
            + request
                .timeout
                .unwrap_or(self.shared.config.request_timeout);
        let mut reconnected = false;
        loop {
            if self.shared.lifecycle() != Lifecycle::Running {
                // Refused there, nothing written.
                return Some(request);
            }
            if !self.usable() {
                self.reject(call, key_unavailable(&api_key));
                return None;
            }
            let claim = KeyClaim {
                request_id: &id_text,
                token: &self.token,
                fingerprint: &fingerprint,
                record: &record,
                ttl: self.shared.config.idempotency_ttl,
            };
            let taken = match timeout(ROUND_TRIP, self.redis.take_key(&key, &claim)).await {
                Ok(Ok(taken)) => taken,
                // A connection that broke (Redis restarted, say) is made again at once:
                // tried once more before the call is refused.
                Ok(Err(_)) if !reconnected => {
                    reconnected = true;
                    self.nudge.notify_one();
                    continue;
                }
                _ => {
                    self.connected
                        .store(false, std::sync::atomic::Ordering::Release);
                    self.reject(call, key_unavailable(&api_key));
                    return None;
                }
            };
            match taken {
                Taken::First => {
                    request.needs_placing = true;
                    return Some(self.shared.open_record(call, request));
                }
                Taken::Reused(first) => {
                    self.reject(call, key_reused(&first));
                    return None;
                }
                Taken::Settled(first) => {
                    self.shared.host.deliver(settled_duplicate(call, &first));
                    return None;
                }
                Taken::Gone(first) => {
                    self.reject(call, gone_duplicate(&first));
                    return None;
                }
                Taken::Unreadable => {
                    let error = GatewayError::new(
                        ErrorCode::ServerError,
                        "The record of this idempotencyKey in Redis is unreadable; nothing was sent",
                        json!({ "sent": false }),
                    );
                    self.reject(call, error);
                    return None;
                }
                // Redis lost the records lately: every live process writes its own
                // again within a lease; the key is looked at once they have.
                Taken::Rebuilding(_) | Taken::Lapsed if Instant::now() >= deadline => {
                    let mut error = key_unavailable(&api_key);
                    error.message = "Redis lost the cluster's idempotency records lately, and they were not all written again before the call's timeout; nothing was sent".into();
                    self.reject(call, error);
                    return None;
                }
                Taken::Rebuilding(left) => {
                    let left = left.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(left.clamp(Duration::from_millis(1), POLL_MAX)).await;
                }
                // This process's own lease is gone: its lease round (brought forward)
                // finds out whether Redis lost everything.
                Taken::Lapsed => {
                    self.nudge.notify_one();
                    tokio::time::sleep(POLL_FIRST).await;
                }
                Taken::Wait(owner) => {
                    // A call of this process holds it: wait on its record here.
                    if *owner == *self.node_id {
                        request = self.shared.claim(call, request, false)?;
                        request.request_id = Some(request_id);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
            }
        }
    }

    /// A claimed send, once a device of its key is there (local, or on another process,
    /// until its `waitForDevice`): its key's record says `placed`, then it is sent.
    pub(super) async fn place_when_device(
        self: Arc<Self>,
        call: CallId,
        mut request: SendRequest,
        media: Option<Media>,
    ) {
        let (_, until) = device_wait(&request, &self.shared.config);
        let key = self.redis.keys.idempotency(
            &request.api_key,
            request.idempotency_key.as_deref().unwrap_or(""),
        );
        let request_id = Uuid::from_u128(request.request_id.unwrap_or_default()).to_string();
        let mut waited = false;
        loop {
            if self.shared.lifecycle() != Lifecycle::Running {
                // Refused there, nothing written.
                return self.shared.dispatch(call, request, media, Wake::Now);
            }
            if !self.usable() {
                return self.reject(call, unplaced(&request.api_key, &request_id, None));
            }
            let found = self
                .find_device(&request.api_key, request.wants(), waited)
                .await;
            if let Err(Some(Unavailable::Unsupported)) = found {
                let wants = request.wants();
                let command = wants.command.unwrap_or_default();
                let mut error = unsupported_command(&request.api_key, command, wants.session);
                error.details["requestId"] = request_id.as_str().into();
                return self.reject(call, error);
            }
            if found.is_ok() {
                let placed = timeout(ROUND_TRIP, self.redis.place_key(&key, &request_id)).await;
                return match placed {
                    Ok(Ok(true)) => {
                        request.needs_placing = false;
                        self.dispatch(call, request, media, Wake::Now)
                    }
                    Ok(Ok(false)) => {
                        let why = "its idempotencyKey passed to another process while this one could not reach Redis";
                        self.reject(call, unplaced(&request.api_key, &request_id, Some(why)))
                    }
                    _ => {
                        self.connected
                            .store(false, std::sync::atomic::Ordering::Release);
                        self.reject(call, unplaced(&request.api_key, &request_id, None))
                    }
                };
            }
            let now = Instant::now();
            if now >= until {
                let why = match request.pinned {
                    true => Unavailable::Target,
                    false => lock(&self.shared.registry).why_no_device(&request.api_key),
                };
                let mut error = no_device(&request.api_key, Some(why));
                error.details["requestId"] = request_id.as_str().into();
                error.details["sent"] = false.into();
                return self.reject(call, error);
            }
            tokio::time::sleep(DEVICE_POLL.min(until - now)).await;
            waited = true;
        }
    }

    /// Whether an active device of `api_key` that the send `wants` (its target, one
    /// that handles its command) is on this process or, as last listed (read again at
    /// most every `view::FRESH_FOR`), on another; else why not, if known
    /// (`routing::refusal`). A listing without devices is read again unless `waiting`
    /// (a send that waits reads at that pace; a new one sees a device that connected
    /// elsewhere just now, as other sends do).
    pub(super) async fn find_device(
        &self,
        api_key: &str,
        wants: Wants<'_>,
        waiting: bool,
    ) -> Result<(), Option<Unavailable>> {
        let local = lock(&self.shared.registry).active_devices(api_key);
        if local.iter().any(|(who, _)| wants.accepts(who)) {
            return Ok(());
        }
        let known = lock(&self.view)
            .remote_devices(api_key, Instant::now())
            .filter(|remote| waiting || !remote.is_empty());
        let remote = match known {
            Some(remote) => remote,
            None => {
                let read = self.read_remote_devices(api_key).await.unwrap_or_default();
                lock(&self.view).store(api_key, read.clone(), Instant::now());
                read
            }
        };
        if remote.iter().any(|d| wants.accepts(&d.identity)) {
            return Ok(());
        }
        Err(refusal(wants, &local, &remote))
    }

    /// Redis lost this process's lease (restarted empty, flushed, or the lease ran
    /// out): the records by which its calls hold `idempotencyKey`s (open calls, and
    /// those settled within `RESTORED_FOR`) are written again wherever Redis has none
    /// for the key, so that a retry on any process still settles like the first.
    pub(super) fn republish_records(&self) {
        let held: Vec<Outgoing> = {
            let registry = lock(&self.shared.registry);
            registry
                .statuses
                .held_keys(RESTORED_FOR)
                .into_iter()
                .filter_map(|(request_id, record, ttl)| {
                    let call = record.call()?;
                    let key = call.idempotency_key.as_deref()?;
                    let state = match record.is_open() {
                        true => "pending",
                        false => record.state.as_str(),
                    };
                    Some(Outgoing::Restore {
                        key: self.redis.keys.idempotency(&call.api_key, key),
                        token: self.token.clone(),
                        state,
                        record: Box::new(record.stored(request_id)),
                        fingerprint: format!("{:016x}", call.fingerprint),
                        ttl,
                    })
                })
                .collect()
        };
        for restore in held {
            self.relay.send(restore);
        }
    }

    /// The record of a call of this process with an `idempotencyKey` changed: written
    /// to the key's record in Redis (freed: deleted), if the key is still this call's.
    pub(super) fn publish_record(&self, api_key: &str, record: StoredRecord, freed: bool) {
        let Some(key) = record.idempotency_key.as_deref() else {
            return;
        };
        let state = match (freed, record.state) {
            (true, _) => "",
            (false, State::Sent) => "sent",
            (false, State::Failed) => "failed",
            (false, State::Unknown) => "unknown",
            (false, State::Queued | State::InFlight) => return,
        };
        self.relay.send(Outgoing::Record {
            key: self.redis.keys.idempotency(api_key, key),
            request_id: record.request_id.clone(),
            state,
            record: serde_json::to_string(&record).unwrap_or_default(),
            ttl: self.shared.config.idempotency_ttl,
        });
    }

    /// A late result for a send run here for another process: to that process, if
    /// this one remembers it (a request id it does not remember costs nothing).
    pub(super) fn send_late(&self, api_key: &str, record: StoredRecord) {
        let Some(node) = self.relay.route_of(&record.request_id) else {
            return;
        };
        self.relay.send(Outgoing::Envelope {
            to: node,
            envelope: Envelope::Late(Box::new(LateResult {
                key_digest: self.redis.keys.digest(api_key),
                record,
            })),
            call: None,
        });
    }

    /// The holder's word on a send called here, after the call settled: this
    /// process's record takes it, and a success fires the kind's `*-sent` with
    /// `late: true`.
    pub(super) fn on_late(&self, late: LateResult) {
        let LateResult { key_digest, record } = late;
        let Ok(id) = Uuid::try_parse(&record.request_id) else {
            return;
        };
        // Known here: this process called the send.
        let Some(api_key) = self.known_key(&key_digest) else {
            return;
        };
        let Some(device) = record.device.as_ref() else {
            return;
        };
        let texts = Texts {
            session_id: &device.session_id,
            ip: "",
            extension_version: &device.extension_version,
            browser: &device.browser,
        };
        let who = Arc::new(Identity::new(
            api_key.clone(),
            device.user_id.clone(),
            texts,
            self.shared.config.dialect,
            Commands::default(),
        ));
        let answer = match (&record.state, &record.error) {
            (State::Sent, _) if record.kind == SendKind::Command => {
                Ok((record.data.clone().unwrap_or(Value::Null), record.timestamp))
            }
            (State::Sent, _) => Ok((record.message_id.clone(), record.timestamp)),
            (State::Failed, Some(error)) => Err(error.clone()),
            _ => return,
        };
        let mut registry = lock(&self.shared.registry);
        let here = registry.statuses.get(id.as_u128()).is_some();
        let (metadata, keyed) =
            match registry
                .statuses
                .late(id.as_u128(), &api_key, who.clone(), answer)
            {
                Some(changed) => {
                    let keyed = changed
                        .call()
                        .filter(|c| c.idempotency_key.is_some())
                        .map(|_| changed.stored(id.as_u128()));
                    (changed.metadata(), keyed)
                }
                // This process keeps no record of a plain send it routed; the holder's counts.
                None if !here => (None, None),
                None => return,
            };
        drop(registry);
        if let Some(stored) = keyed {
            self.publish_record(&api_key, stored, false);
        }
        if record.state == State::Sent && self.shared.config.log_events {
            let event = LogEvent::sent_late(
                record.kind,
                &who,
                Recipient::of(record.kind, &record.phone_number),
                &record.request_id,
                record.message_id.clone(),
            )
            .with_metadata(metadata);
            self.shared.host.deliver(Delivery::Log(event));
        }
    }
}

/// A duplicate whose first call settled, by the record Redis holds.
fn settled_duplicate(call: CallId, first: &str) -> Delivery {
    match serde_json::from_str::<StoredRecord>(first) {
        Ok(first) => duplicate_of(call, &first),
        Err(_) => Delivery::Rejected {
            call,
            error: GatewayError::new(
                ErrorCode::ServerError,
                "The record of this idempotencyKey in Redis is unreadable; nothing was sent",
                json!({ "sent": false, "duplicate": true }),
            ),
        },
    }
}

/// A duplicate whose first call's process died after the command may have been written.
fn gone_duplicate(first: &str) -> GatewayError {
    let request_id = serde_json::from_str::<Value>(first)
        .ok()
        .and_then(|r| r["requestId"].as_str().map(str::to_string));
    GatewayError::new(
        ErrorCode::ConnectionLost,
        "The call that first used this idempotencyKey was on a gateway process that is gone after its command may have been written: it may or may not have been sent, and is not sent again",
        json!({ "requestId": request_id, "sent": true, "duplicate": true, "state": "unknown" }),
    )
}

/// `CLUSTER_UNAVAILABLE` for a call with an `idempotencyKey` while Redis is away: the
/// key cannot be checked across the cluster.
fn key_unavailable(api_key: &str) -> GatewayError {
    let mut error = unavailable(api_key);
    error.message =
        "An idempotencyKey cannot be checked across the cluster while Redis is unreachable; nothing was sent"
            .into();
    error.details["sent"] = false.into();
    error
}

/// `CLUSTER_UNAVAILABLE` for a claimed send that could not be marked placed: its
/// command is never written.
fn unplaced(api_key: &str, request_id: &str, why: Option<&str>) -> GatewayError {
    let mut error = unavailable(api_key);
    error.message = format!(
        "This send was not written: {}",
        why.unwrap_or("Redis became unreachable before its idempotencyKey could be marked as sent")
    );
    error.details["requestId"] = request_id.into();
    error.details["sent"] = false.into();
    error
}
