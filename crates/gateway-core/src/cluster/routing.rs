//! Sends across processes: choosing a device over the cluster, handing a send to the
//! process that holds it, running sends handed here, and settling the caller's call
//! with what comes back (outcomes, acks, sends handed back to be chosen again).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::calls::RemoteCall;
use super::envelope::{AckEvent, CarriedMedia, Command, Device, Envelope, Listing, Outcome};
use super::relay::{Origin, Outgoing};
use super::view::{Choice, RemoteDevice, WaitingSend};
use super::{unavailable, Cluster};
use crate::clock::now_ms;
use crate::config::Config;
use crate::error::{ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::{Delivery, Resolved, Stage};
use crate::identity::{CallId, Commands, Identity, Texts, CLUSTER_CALL};
use crate::media::Media;
use crate::protocol::delivery::Ack;
use crate::protocol::{Recipient, SendKind};
use crate::state::link::lock;
use crate::state::parking::Parked;
use crate::state::records::StatusKey;
use crate::state::registry::{Pending, Unavailable};
use crate::state::requests::{
    no_device, shutdown_error, unsupported_command, SendRequest, Wake, Wants,
};
use crate::state::Lifecycle;

/// A listing read that takes longer than this counts as Redis being away: local
/// devices serve meanwhile.
const READ_LIMIT: Duration = Duration::from_secs(1);
/// How often a send waiting for its `target` to become active looks for it.
const TARGET_POLL: Duration = Duration::from_millis(100);

impl Cluster {
    /// Chooses a device across the cluster and sends there.
    pub fn dispatch(
        self: &Arc<Self>,
        call: CallId,
        request: SendRequest,
        media: Option<Media>,
        wake: Wake,
    ) {
        if self.shared.lifecycle() != Lifecycle::Running {
            return self.shared.dispatch(call, request, media, wake);
        }
        if request.needs_placing {
            let cluster = self.clone();
            self.rt
                .spawn(cluster.place_when_device(call, request, media));
            return;
        }
        if !self.usable() {
            if !self.serves_locally(&request) {
                return self.reject(call, unavailable(&request.api_key));
            }
            return self.shared.dispatch(call, request, media, wake);
        }
        let mut view = lock(&self.view);
        if let Some(remote) = view.fresh_devices(&request.api_key, Instant::now()) {
            drop(view);
            return self.route(call, request, media, wake, remote);
        }
        let api_key: Arc<str> = request.api_key.as_str().into();
        let starts_read = view.wait_for_read(WaitingSend {
            call,
            request,
            media,
        });
        drop(view);
        if starts_read {
            let cluster = self.clone();
            self.rt
                .spawn(async move { cluster.read_then_route(api_key).await });
        }
    }

    /// Whether this process alone can take the send (Redis is away): it has a device
    /// that will do, or the send's target is one of its sessions.
    fn serves_locally(&self, request: &SendRequest) -> bool {
        let registry = lock(&self.shared.registry);
        let wants = request.wants();
        registry.has_device_for(&request.api_key, wants)
            || wants
                .session
                .is_some_and(|s| registry.has_session(&request.api_key, s))
    }

    /// Reads `api_key`'s listing once for every send waiting on it, and routes them in
    /// call order, with those that queue meanwhile.
    async fn read_then_route(self: &Arc<Self>, api_key: Arc<str>) {
        let read = self.read_remote_devices(&api_key).await;
        // An empty listing with no local device is not kept: a device that connects
        // elsewhere is seen by the next send.
        let keep = read.as_ref().filter(|remote| {
            !remote.is_empty() || lock(&self.shared.registry).has_active_device(&api_key)
        });
        loop {
            let waiting =
                lock(&self.view).take_waiting(&api_key, keep.map(Vec::as_slice), Instant::now());
            if waiting.is_empty() {
                return;
            }
            for send in waiting {
                match &read {
                    Some(remote) => self.route(
                        send.call,
                        send.request,
                        send.media,
                        Wake::Now,
                        remote.clone(),
                    ),
                    // Redis is away: local devices only, as when it was known to be.
                    None if self.serves_locally(&send.request) => {
                        self.shared
                            .dispatch(send.call, send.request, send.media, Wake::Now)
                    }
                    None => self.reject(send.call, unavailable(&api_key)),
                }
            }
        }
    }

    /// The other processes' active devices of `api_key`, read now; `None` when Redis
    /// could not be read (the process serves its own devices until it can again).
    pub(super) async fn read_remote_devices(&self, api_key: &str) -> Option<Vec<RemoteDevice>> {
        // A call here named the key: `getAllSessions` may show it (at most one read per
        // key and second, so the digest is not made on every send).
        self.know(api_key);
        let read = tokio::time::timeout(READ_LIMIT, self.redis.listings(api_key)).await;
        let (listings, live) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(failure)) => {
                self.set_connected(false, Some(&failure));
                return None;
            }
            Err(_) => {
                self.set_connected(false, None);
                return None;
            }
        };
        self.set_live(live);
        let devices = listings
            .into_iter()
            .filter(|l| l.info.device_active && *l.node_id != *self.node_id)
            .map(|l| remote_device(l, api_key))
            .collect();
        Some(devices)
    }

    fn route(
        self: &Arc<Self>,
        call: CallId,
        mut request: SendRequest,
        media: Option<Media>,
        wake: Wake,
        remote: Vec<RemoteDevice>,
    ) {
        let local = lock(&self.shared.registry).active_devices(&request.api_key);
        if remote.is_empty() && local.is_empty() {
            // A device that connects elsewhere meanwhile is seen at the next read.
            lock(&self.view).forget(&request.api_key);
        }
        // Only the devices the send can use: its target, those handling its command.
        let wants = request.wants();
        let (local, remote) = match wants == Wants::default() {
            true => (local, remote),
            false => {
                let refused = refusal(wants, &local, &remote);
                if let Some(Unavailable::Unsupported) = refused {
                    let command = wants.command.unwrap_or_default();
                    let error = unsupported_command(&request.api_key, command, wants.session);
                    return self.reject(call, error);
                }
                let target_here = wants
                    .session
                    .is_some_and(|s| lock(&self.shared.registry).has_session(&request.api_key, s));
                if refused == Some(Unavailable::Target) && !target_here {
                    return self.wait_for_target(call, request, media);
                }
                let local: Vec<_> = local
                    .into_iter()
                    .filter(|(who, _)| wants.accepts(who))
                    .collect();
                let remote: Vec<_> = remote
                    .into_iter()
                    .filter(|d| wants.accepts(&d.identity))
                    .collect();
                (local, remote)
            }
        };
        if remote.is_empty() {
            return self.shared.dispatch(call, request, media, wake);
        }
        let strategy = request.strategy.unwrap_or(self.shared.config.strategy);
        let remote: Vec<(RemoteDevice, usize)> = {
            let calls = lock(&self.calls);
            remote
                .into_iter()
                .map(|d| {
                    let load = calls.load_of(d.identity.session_id());
                    (d, load)
                })
                .collect()
        };
        let choice = lock(&self.view).choose(&request.api_key, strategy, local, remote);
        match choice {
            Some(Choice::Remote(device)) => self.forward(call, request, media, device),
            Some(Choice::Local(session_id)) => {
                request.target = Some(session_id);
                self.shared.dispatch(call, request, media, wake)
            }
            None => self.shared.dispatch(call, request, media, wake),
        }
    }

    /// A send whose `target` is no active session anywhere now: waits for it (its
    /// `waitForDevice`, counted from the call) on any process, then goes to it; else
    /// `NO_ACTIVE_DEVICE` (`target-unavailable`), never sent.
    fn wait_for_target(self: &Arc<Self>, call: CallId, request: SendRequest, media: Option<Media>) {
        let (called_at, until) = device_wait(&request, &self.shared.config);
        let cluster = self.clone();
        self.rt.spawn(async move {
            let mut request = request;
            loop {
                if cluster.shared.lifecycle() != Lifecycle::Running {
                    // Refused there, nothing written.
                    return cluster.shared.dispatch(call, request, media, Wake::Now);
                }
                let now = Instant::now();
                if now >= until {
                    let mut error = no_device(&request.api_key, Some(Unavailable::Target));
                    if let Some(id) = request.request_id {
                        error.details["requestId"] = uuid::Uuid::from_u128(id).to_string().into();
                    }
                    error.details["sent"] = false.into();
                    return cluster.reject(call, error);
                }
                tokio::time::sleep(TARGET_POLL.min(until - now)).await;
                let found = cluster.find_device(&request.api_key, request.wants(), true);
                if !matches!(found.await, Err(None | Some(Unavailable::Target))) {
                    // Its remaining wait counts from the call wherever it goes now.
                    request
                        .called_at
                        .get_or_insert_with(|| called_at.into_std());
                    return cluster.dispatch(call, request, media, Wake::Now);
                }
            }
        });
    }

    /// Hands a send to the process holding its device.
    fn forward(
        &self,
        call: CallId,
        request: SendRequest,
        media: Option<Media>,
        device: RemoteDevice,
    ) {
        let timeout = request
            .timeout
            .unwrap_or(self.shared.config.request_timeout);
        let called_at = request
            .called_at
            .map_or_else(Instant::now, Instant::from_std);
        let now = Instant::now();
        let deadline = called_at + timeout;
        let left = deadline.saturating_duration_since(now);
        // A send routed a second time keeps the id its first route gave it.
        let rerouted = request.rerouted;
        let request_id = request
            .request_id
            .map_or_else(uuid::Uuid::new_v4, uuid::Uuid::from_u128)
            .to_string();
        let command = Command {
            from: self.node_id.to_string(),
            call,
            key_digest: self.know(&request.api_key),
            session_id: device.identity.session_id().to_string(),
            kind: request.kind,
            phone_number: request.phone_number.clone(),
            text: request.text,
            media: media.map(|m| CarriedMedia {
                data_url: m.data_url.into_string(),
                mime_type: m.mime_type,
                file_name: m.file_name,
            }),
            document_name: request.document_name,
            wait_for: request.wait_for.map(|a| a.as_str().to_string()),
            timeout_ms: timeout.as_millis() as u64,
            expires_at: now_ms() + left.as_millis() as u64,
            request_id: request_id.clone(),
            rerouted,
            pinned: request.pinned,
            unpaced: !request.paced,
        };
        let remote = RemoteCall {
            holder: device.node_id.clone(),
            request_id,
            deadline,
            timeout_ms: timeout.as_millis() as u64,
            device: device.identity,
            kind: request.kind,
            phone_number: request.phone_number,
            routed: false,
        };
        if let Some(id) = request.request_id.filter(|_| !rerouted) {
            // The caller's record, if its call has one from the start, names the device.
            lock(&self.shared.registry)
                .statuses
                .placed(id, remote.device.clone());
        }
        let lease_until = lock(&self.view)
            .lease_until(&remote.holder)
            .unwrap_or(now + self.lease);
        lock(&self.calls).insert(call, remote, lease_until);
        self.relay.send(Outgoing::Envelope {
            to: device.node_id,
            envelope: Envelope::Send(Box::new(command)),
            call: Some(call),
        });
    }

    pub(super) fn reject(&self, call: CallId, error: GatewayError) {
        self.shared.host.deliver(Delivery::Rejected { call, error });
    }

    /// Settles a call carried out elsewhere with `error`, with its `send-failed` event.
    pub(super) fn fail_remote(&self, call: CallId, remote: &RemoteCall, error: GatewayError) {
        if self.shared.config.log_events {
            let request_id = error.details["requestId"].as_str().unwrap_or_default();
            let metadata = self.metadata_of(request_id);
            let to = Recipient::of(remote.kind, &remote.phone_number);
            let event = LogEvent::send_failed(&remote.device, to, request_id, &error)
                .with_metadata(metadata);
            self.shared.host.deliver(Delivery::Log(event));
        }
        self.reject(call, error);
    }

    /// The `metadata` of a call of this process, from its record.
    fn metadata_of(&self, request_id: &str) -> Option<Value> {
        let id = uuid::Uuid::try_parse(request_id).ok()?;
        let registry = lock(&self.shared.registry);
        registry.statuses.get(id.as_u128())?.metadata()
    }

    /// A send another process routed here.
    fn on_command(&self, command: Command) {
        if now_ms() >= command.expires_at {
            return;
        }
        // Its key is known here: the device it was routed to connected here.
        let api_key = self.known_key(&command.key_digest);
        let wants = Wants {
            session: command.pinned.then_some(command.session_id.as_str()),
            command: (command.kind == SendKind::Command).then_some(command.phone_number.as_str()),
        };
        let takes = self.shared.lifecycle() == Lifecycle::Running
            && api_key
                .as_ref()
                .is_some_and(|k| lock(&self.shared.registry).has_device_for(k, wants));
        let Some(api_key) = api_key.filter(|_| takes || command.rerouted) else {
            return self.relay.send(Outgoing::Envelope {
                to: command.from.as_str().into(),
                envelope: Envelope::Reroute(Box::new(command)),
                call: None,
            });
        };
        let origin: Arc<str> = command.from.as_str().into();
        // Its acks and a late result go to the caller, for as long as it keeps records.
        let until = Instant::now() + self.shared.config.idempotency_ttl;
        self.relay
            .remember_route(&command.request_id, origin.clone(), until);
        let call = self.relay.adopt(Origin {
            node: origin,
            call: command.call,
        });
        let target: Arc<str> = command.session_id.as_str().into();
        let (mut request, media) = request_of(command, &api_key);
        // Pinned or not: the session the caller chose.
        request.target = Some(target);
        // Woken together once the inbox read is handled (`wake_corked`).
        self.shared.dispatch(call, request, media, Wake::Later);
    }

    /// `stop()` drains (5.3): the sends still waiting unwritten in this process's pacing
    /// queues go back to selection on their callers (those called here: among the
    /// other processes' devices).
    pub fn hand_back_queued(self: &Arc<Self>) {
        let taken = lock(&self.shared.registry).take_queued();
        for (settled, frame) in taken {
            let written = crate::protocol::command_of_frame(&frame);
            // A send for one of this process's sessions (`target`) cannot go elsewhere.
            let Some(written) = written.filter(|_| !settled.pending.pinned) else {
                self.shared.fail(settled, shutdown_error);
                continue;
            };
            let pending = &settled.pending;
            let left = pending
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            let (media, document_name) = (written.media, written.document_name);
            let api_key = settled.identity.api_key.clone();
            let mut command = Command {
                from: self.node_id.to_string(),
                call: pending.call,
                key_digest: self.know(&api_key),
                session_id: String::new(),
                kind: written.kind,
                phone_number: written.phone_number,
                text: written.text,
                media: media.map(|(data_url, mime_type)| CarriedMedia {
                    data_url,
                    mime_type,
                    file_name: None,
                }),
                document_name,
                wait_for: (pending.wait_for > Ack::Sent).then(|| pending.wait_for.as_str().into()),
                timeout_ms: pending.timeout_ms,
                expires_at: now_ms() + left,
                request_id: uuid::Uuid::from_u128(settled.request_id).to_string(),
                rerouted: false,
                pinned: false,
                unpaced: !pending.paced,
            };
            if pending.call & CLUSTER_CALL == 0 {
                self.route_elsewhere(command, api_key);
                continue;
            }
            let Some(origin) = self.relay.take_origin(pending.call) else {
                continue;
            };
            command.call = origin.call;
            command.from = origin.node.to_string();
            self.relay.send(Outgoing::Envelope {
                to: origin.node,
                envelope: Envelope::Reroute(Box::new(command)),
                call: None,
            });
        }
    }

    /// 5.2 `waitForDevice` across the cluster: sends called here that wait for a
    /// device of their key go to one that connected to another process (a rolling
    /// restart moves extensions between processes).
    pub(super) async fn unpark_elsewhere(self: &Arc<Self>) {
        let waiting: Vec<Arc<str>> = lock(&self.shared.registry)
            .parking
            .keys()
            .cloned()
            .collect();
        for api_key in waiting {
            let Some(remote) = self.read_remote_devices(&api_key).await else {
                return;
            };
            if remote.is_empty() {
                continue;
            }
            let parked = lock(&self.shared.registry).parking.take(&api_key);
            // Its own calls that a device there will do for (the target, the command).
            let (own, others): (VecDeque<_>, VecDeque<_>) = parked.into_iter().partition(|p| {
                let wants = Wants {
                    session: p.target.as_deref(),
                    command: p.pending.command(),
                };
                p.pending.call & CLUSTER_CALL == 0
                    && remote.iter().any(|d| wants.accepts(&d.identity))
            });
            lock(&self.shared.registry)
                .parking
                .restore(api_key.clone(), others);
            let strategy = self.shared.config.strategy;
            for parked in own {
                let call = parked.pending.call;
                let Some((request, media)) = unparked_request(&api_key, parked) else {
                    let error = crate::state::requests::shutdown_error("", "");
                    self.reject(call, error);
                    continue;
                };
                let wants = request.wants();
                let usable = remote.iter().filter(|d| wants.accepts(&d.identity));
                let choice = lock(&self.view).choose(
                    &api_key,
                    request.strategy.unwrap_or(strategy),
                    Vec::new(),
                    usable.cloned().map(|d| (d, 0)).collect(),
                );
                match choice {
                    Some(Choice::Remote(device)) => self.forward(call, request, media, device),
                    _ => self.shared.dispatch(call, request, media, Wake::Now),
                }
            }
        }
    }

    /// A send called on this draining process: to another process's device, if any.
    fn route_elsewhere(self: &Arc<Self>, command: Command, api_key: Arc<str>) {
        let cluster = self.clone();
        self.rt.spawn(async move {
            let call = command.call;
            let session_id = command.session_id.clone();
            let request_id = command.request_id.clone();
            let (request, media) = request_of(command, &api_key);
            let remote = match cluster.usable() {
                true => cluster.read_remote_devices(&request.api_key).await,
                false => None,
            };
            let strategy = request.strategy.unwrap_or(cluster.shared.config.strategy);
            let wants = request.wants();
            let remote: Vec<(RemoteDevice, usize)> = remote
                .unwrap_or_default()
                .into_iter()
                .filter(|d| wants.accepts(&d.identity))
                .map(|d| (d, 0))
                .collect();
            let choice = lock(&cluster.view).choose(&request.api_key, strategy, Vec::new(), remote);
            match choice {
                Some(Choice::Remote(device)) => cluster.forward(call, request, media, device),
                _ => {
                    let mut error = shutdown_error(&request_id, &session_id);
                    error.details["sent"] = false.into();
                    cluster.reject(call, error);
                }
            }
        });
    }

    /// A send the chosen holder could not take: chosen again among fresh listings.
    fn on_reroute(self: &Arc<Self>, command: Command) {
        let call = command.call;
        let Some(remote) = lock(&self.calls).take(call) else {
            return;
        };
        let api_key = remote.device.api_key.clone();
        lock(&self.view).forget(&api_key);
        let (request, media) = request_of(command, &api_key);
        self.dispatch(call, request, media, Wake::Now);
    }

    /// A send written for a holder whose inbox is gone (the holder left): chosen
    /// again once; a second time it fails, never sent.
    pub(super) fn holder_gone(self: &Arc<Self>, call: CallId, command: Command) {
        if !command.rerouted {
            return self.on_reroute(command);
        }
        let Some(remote) = lock(&self.calls).take(call) else {
            return;
        };
        let mut error =
            crate::state::requests::connection_lost(&remote.request_id, remote.device.session_id());
        error.message = format!(
            "The gateway process holding the device ({}) left before the send reached it",
            remote.holder
        );
        error.details["sent"] = false.into();
        error.details["nodeId"] = (*remote.holder).into();
        self.fail_remote(call, &remote, error);
    }

    /// The outcome of a send this process routed elsewhere.
    fn on_outcome(&self, outcome: Outcome) {
        let call = outcome.call;
        match outcome.result {
            Ok(success) => {
                let stage = Stage::from_code(success.stage);
                // Still owed: kept while the caller waits for a later ack.
                let owed = {
                    let mut calls = lock(&self.calls);
                    if stage == Stage::ResultAwaitingAck {
                        calls.get(call).map(|c| c.device.api_key.clone())
                    } else {
                        calls.take(call).map(|c| c.device.api_key.clone())
                    }
                };
                let Some(api_key) = owed else {
                    return;
                };
                let dialect = self.shared.config.dialect;
                let session = Arc::new(success.device.into_identity(api_key, dialect));
                let request_id =
                    uuid::Uuid::try_parse(&success.request_id).map_or(0, |u| u.as_u128());
                self.shared.host.deliver(Delivery::Resolved(Resolved {
                    id: call,
                    request_id,
                    message_id: success.message_id,
                    timestamp: success.timestamp,
                    session,
                    ack: Ack::parse(&success.ack).unwrap_or(Ack::Sent),
                    stage,
                }));
            }
            Err(error) => {
                let Some(remote) = lock(&self.calls).take(call) else {
                    return;
                };
                if error.code == ErrorCode::NoActiveDevice {
                    lock(&self.view).forget(&remote.device.api_key);
                }
                self.fail_remote(call, &remote, error);
            }
        }
    }

    /// A `message-ack` for a send called here and carried out elsewhere.
    fn on_ack(&self, ack: AckEvent) {
        let (Some(level), true) = (Ack::parse(&ack.ack), self.shared.config.log_events) else {
            return;
        };
        // Known here: this process called the send.
        let Some(api_key) = self.known_key(&ack.key_digest) else {
            return;
        };
        // This process's record of the send moves too (forward only).
        let mut metadata = None;
        let mut keyed = None;
        if let Ok(id) = uuid::Uuid::try_parse(&ack.request_id) {
            let mut registry = lock(&self.shared.registry);
            let id = id.as_u128();
            match registry
                .statuses
                .advance(id, &api_key, level, ack.message_id.clone())
            {
                Some(advanced) => {
                    let record = advanced.record;
                    metadata = record.metadata();
                    keyed = record
                        .call()
                        .filter(|c| c.idempotency_key.is_some() && !c.open)
                        .map(|_| record.stored(id));
                }
                None => metadata = registry.statuses.get(id).and_then(|r| r.metadata()),
            }
        }
        if let Some(stored) = keyed {
            self.publish_record(&api_key, stored, false);
        }
        let texts = Texts {
            session_id: &ack.session_id,
            ..Texts::default()
        };
        let device = Identity::new(
            api_key,
            ack.user_id,
            texts,
            self.shared.config.dialect,
            Commands::default(),
        );
        let event = LogEvent::message_ack(
            &device,
            &ack.request_id,
            Recipient::of(SendKind::Message, &ack.phone_number),
            ack.message_id,
            level,
        )
        .with_metadata(metadata);
        self.shared.host.deliver(Delivery::Log(event));
    }

    pub(super) fn on_envelope(self: &Arc<Self>, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(Envelope::Send(command)) => self.on_command(*command),
            Ok(Envelope::Reroute(command)) => self.on_reroute(*command),
            Ok(Envelope::Outcome(outcome)) => self.on_outcome(*outcome),
            Ok(Envelope::Ack(ack)) => self.on_ack(*ack),
            Ok(Envelope::Late(late)) => self.on_late(*late),
            Ok(Envelope::StatusQuery {
                from,
                token,
                request_id,
                by_message,
            }) => {
                // By message id: the key, named by its digest, is known here if this
                // process has a record of it.
                let status = match by_message {
                    Some((digest, message_id)) => self.known_key(&digest).and_then(|api_key| {
                        lock(&self.shared.registry)
                            .message_status_by(&api_key, &StatusKey::Message(message_id))
                    }),
                    None => self.local_status(&request_id),
                };
                self.relay.send(Outgoing::Envelope {
                    to: from.into(),
                    envelope: Envelope::StatusReply { token, status },
                    call: None,
                });
            }
            Ok(Envelope::StatusReply { token, status }) => {
                if let Some(waiting) = lock(&self.status_queries).get(&token) {
                    let _ = waiting.send(status);
                }
            }
            Err(e) => self.shared.report(GatewayError::new(
                ErrorCode::ServerError,
                format!("Unreadable message from another gateway process: {e}"),
                Value::Null,
            )),
        }
    }
}

/// The send a routed command carries; its timeout still counts from the call.
fn request_of(command: Command, api_key: &str) -> (SendRequest, Option<Media>) {
    let timeout = Duration::from_millis(command.timeout_ms.max(1));
    let left = Duration::from_millis(command.expires_at.saturating_sub(now_ms()));
    let mut request = SendRequest::new(
        command.kind,
        api_key.to_string(),
        command.phone_number,
        command.text,
    );
    request.called_at = std::time::Instant::now().checked_sub(timeout.saturating_sub(left));
    request.timeout = Some(timeout);
    request.wait_for = command.wait_for.as_deref().and_then(Ack::parse);
    request.document_name = command.document_name;
    request.request_id = uuid::Uuid::try_parse(&command.request_id)
        .ok()
        .map(|id| id.as_u128());
    request.rerouted = true;
    request.paced = !command.unpaced;
    if command.pinned {
        request.target = Some(command.session_id.as_str().into());
        request.pinned = true;
    }
    let media = command.media.map(|m| Media {
        data_url: m.data_url.into(),
        mime_type: m.mime_type,
        file_name: m.file_name,
    });
    (request, media)
}

/// When a send was called (now, if it has not been stamped) and until when it may
/// wait for a device: its `waitForDevice` or its `timeout`, both from the call,
/// whichever ends first.
pub(super) fn device_wait(request: &SendRequest, config: &Config) -> (Instant, Instant) {
    let called_at = request
        .called_at
        .map_or_else(Instant::now, Instant::from_std);
    let deadline = called_at + request.timeout.unwrap_or(config.request_timeout);
    let wait = request.wait_for_device.unwrap_or(config.wait_for_device);
    (called_at, (called_at + wait).min(deadline))
}

/// Why none of a key's active devices (here and elsewhere) will do for a send that
/// `wants` something of them; `None` if one will.
pub(super) fn refusal(
    wants: Wants,
    local: &[(Arc<Identity>, usize)],
    remote: &[RemoteDevice],
) -> Option<Unavailable> {
    let devices = || {
        local
            .iter()
            .map(|(who, _)| &**who)
            .chain(remote.iter().map(|d| &*d.identity))
    };
    if devices().any(|who| wants.accepts(who)) {
        return None;
    }
    let named = |who: &Identity| wants.session.is_none_or(|s| who.session_id() == s);
    match devices().any(named) {
        // The target is active (or, without one, devices are): none handles the command.
        true if wants.command.is_some() => Some(Unavailable::Unsupported),
        true => None,
        false if wants.session.is_some() => Some(Unavailable::Target),
        false => None,
    }
}

/// A send that waited here for a device, as a request to route: its request id and
/// its deadline (from the call) are kept.
fn unparked_request(
    api_key: &str,
    parked: Parked<Pending>,
) -> Option<(SendRequest, Option<Media>)> {
    let written = crate::protocol::command_of_frame(&parked.frame)?;
    let pending = parked.pending;
    let timeout = Duration::from_millis(pending.timeout_ms.max(1));
    let mut request = SendRequest::new(
        written.kind,
        api_key.to_string(),
        written.phone_number,
        written.text,
    );
    request.called_at = pending.deadline.into_std().checked_sub(timeout);
    request.timeout = Some(timeout);
    request.wait_for = (pending.wait_for > Ack::Sent).then_some(pending.wait_for);
    request.document_name = written.document_name;
    request.request_id = Some(parked.request_id);
    request.rerouted = true;
    request.strategy = Some(parked.strategy);
    request.paced = pending.paced;
    if let Some(target) = parked.target {
        request.target = Some(target);
        request.pinned = true;
    }
    let media = written.media.map(|(data_url, mime_type)| Media {
        data_url: data_url.into(),
        mime_type,
        file_name: None,
    });
    Some((request, media))
}

fn remote_device(listing: Listing, api_key: &str) -> RemoteDevice {
    let info = listing.info;
    let device = Device {
        session_id: info.session_id.to_string(),
        user_id: info.user_id,
        ip: info.ip,
        extension_version: info.extension_version,
        browser: info.browser,
        commands: info.commands,
    };
    RemoteDevice {
        node_id: listing.node_id.into(),
        // Its holder writes its commands, in its own dialect.
        identity: Arc::new(device.into_identity(api_key.into(), crate::config::Dialect::Compat)),
    }
}
