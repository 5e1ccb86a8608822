//! 5.3 cluster mode: several processes sharing one Redis act as one gateway. Each
//! process lists its sessions in Redis under a lease, chooses devices over the whole
//! cluster, routes a send for another process's device through that process's inbox
//! stream, and gets the outcome back through its own.
//!
//! - `keys`: where the state lives in Redis, and its scripts;
//! - `redis_io`: the commands; `envelope`: what processes tell each other;
//! - `view`: other processes' devices as last read, and device choice;
//! - `calls`: this process's sends carried out elsewhere;
//! - `relay`: the outcomes of sends carried out here for others;
//! - `run`: the tasks (lease, outbox, inbox).

mod calls;
mod envelope;
mod keys;
mod redis_io;
mod relay;
mod run;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::ClusterConfig;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::{Delivery, Host, Resolved, Stage};
use crate::identity::{CallId, Identity, CLUSTER_CALL};
use crate::media::Media;
use crate::protocol::delivery::Ack;
use crate::state::directory::{Admission, Directory};
use crate::state::link::lock;
use crate::state::registry::SessionInfo;
use crate::state::requests::{shutdown_error, SendRequest, Wake};
use crate::state::{Lifecycle, Shared};
use calls::{RemoteCall, RemoteCalls};
use envelope::{CarriedMedia, Command, Envelope, Listing, Outcome};
use redis_io::{LiveNode, Redis};
use relay::{ClusterHost, Outgoing, Relay};
use view::{Choice, RemoteDevice, View};

/// How long an incoming message id is remembered across the cluster (5.2: 10 minutes).
const INCOMING_WINDOW: Duration = Duration::from_secs(600);

/// What `getHealth().cluster` reports.
#[derive(Clone, Debug)]
pub struct ClusterHealth {
    pub node_id: String,
    pub nodes: usize,
    pub connected: bool,
    /// Sessions on every live node, as of the last lease round.
    pub sessions: usize,
}

/// The parts made before the gateway's shared state, which takes the wrapped host.
pub struct Prepared {
    config: ClusterConfig,
    relay: Arc<Relay>,
    outbox: mpsc::UnboundedReceiver<Outgoing>,
}

pub fn prepare(config: ClusterConfig, host: Arc<dyn Host>) -> (Prepared, Arc<dyn Host>) {
    let (relay, outbox) = Relay::new();
    let host = Arc::new(ClusterHost {
        inner: host,
        relay: relay.clone(),
    });
    let prepared = Prepared {
        config,
        relay,
        outbox,
    };
    (prepared, host)
}

pub struct Cluster {
    shared: Arc<Shared>,
    rt: Handle,
    node_id: Arc<str>,
    /// Proves the lease is this process's, not another's with the same id.
    token: String,
    lease: Duration,
    redis: Redis,
    relay: Arc<Relay>,
    outbox: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    view: Mutex<View>,
    calls: Mutex<RemoteCalls>,
    connected: AtomicBool,
    /// Another live process took this node id while Redis was away: local only.
    duplicate: AtomicBool,
    cluster_sessions: AtomicUsize,
    /// `getMessageStatus` queries waiting for other processes' replies.
    status_queries: Mutex<HashMap<u64, mpsc::UnboundedSender<Option<Value>>>>,
    next_query: AtomicU64,
}

impl Cluster {
    pub fn new(
        prepared: Prepared,
        shared: Arc<Shared>,
        rt: Handle,
    ) -> Result<Arc<Self>, GatewayError> {
        let Prepared {
            config,
            relay,
            outbox,
        } = prepared;
        let _runtime = rt.enter();
        // The URL may hold a password: neither it nor the parser's message is repeated.
        let redis = Redis::open(&config.redis_url, &config.key_prefix, config.lease).map_err(|_| {
            GatewayError::validation(
                "cluster.redis",
                "",
                "cluster.redis must be a Redis URL: redis://[user:password@]host:port[/db] or rediss://...",
            )
        })?;
        let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
        Ok(Arc::new(Self {
            shared,
            rt: rt.clone(),
            node_id: node_id.into(),
            token: format!("{:032x}", fastrand::u128(..)),
            lease: config.lease,
            redis,
            relay,
            outbox: Mutex::new(Some(outbox)),
            view: Mutex::default(),
            calls: Mutex::default(),
            connected: AtomicBool::new(false),
            duplicate: AtomicBool::new(false),
            cluster_sessions: AtomicUsize::new(0),
            status_queries: Mutex::default(),
            next_query: AtomicU64::new(0),
        }))
    }

    /// Whether sends may use other processes' devices right now.
    fn usable(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.duplicate.load(Ordering::Acquire)
    }

    /// Takes the lease for `start()`: fails only if another live process holds this
    /// node id; with Redis unreachable the process starts local-only and keeps trying.
    pub async fn join(&self) -> Result<(), GatewayError> {
        let sessions = lock(&self.shared.registry).session_count();
        let claimed = self
            .redis
            .claim(&self.token, self.lease, &self.node_id, sessions)
            .await;
        match claimed {
            Ok((-1, _)) => Err(self.duplicate_error()),
            Ok((_, nodes)) => {
                self.seen_nodes(nodes);
                self.connected.store(true, Ordering::Release);
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    fn duplicate_error(&self) -> GatewayError {
        GatewayError::new(
            ErrorCode::ClusterUnavailable,
            format!(
                "Another live gateway process already uses the cluster nodeId '{}'",
                self.node_id
            ),
            json!({ "nodeId": &*self.node_id }),
        )
    }

    fn seen_nodes(&self, nodes: Vec<LiveNode>) {
        let total = nodes.iter().map(|n| n.sessions).sum();
        self.cluster_sessions.store(total, Ordering::Relaxed);
        self.set_live(nodes);
    }

    fn set_live(&self, nodes: Vec<LiveNode>) {
        let now = Instant::now();
        let mut view = lock(&self.view);
        view.set_live(
            nodes
                .into_iter()
                .map(|n| (Arc::from(n.id), now + n.lease_left)),
        );
        lock(&self.calls).seen_alive(view.live());
    }

    pub fn health(&self) -> ClusterHealth {
        let connected = self.usable();
        let local = lock(&self.shared.registry).session_count();
        let nodes = lock(&self.view).live_count();
        ClusterHealth {
            node_id: self.node_id.to_string(),
            nodes: if connected { nodes.max(1) } else { 1 },
            connected: self.connected.load(Ordering::Acquire),
            sessions: if connected {
                self.cluster_sessions.load(Ordering::Relaxed).max(local)
            } else {
                local
            },
        }
    }

    /// Sends in flight that `stop()` lets finish: run here for others, or called here
    /// and run elsewhere.
    pub fn in_flight(&self) -> usize {
        self.relay.in_flight() + lock(&self.calls).len()
    }

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
        if !self.usable() {
            let local = lock(&self.shared.registry).active_devices(&request.api_key);
            if local.is_empty() {
                return self.reject(call, unavailable(&request.api_key));
            }
            return self.shared.dispatch(call, request, media, wake);
        }
        let cached = lock(&self.view).remote_devices(&request.api_key, Instant::now());
        match cached {
            Some(remote) => self.route(call, request, media, wake, remote),
            None => {
                let cluster = self.clone();
                self.rt.spawn(async move {
                    match cluster.read_devices(&request.api_key).await {
                        Some(remote) => cluster.route(call, request, media, Wake::Now, remote),
                        None => cluster.reject(call, unavailable(&request.api_key)),
                    }
                });
            }
        }
    }

    /// The other processes' active devices of a key, read now (and kept a while when
    /// there are local devices to fall back on).
    async fn read_devices(&self, api_key: &str) -> Option<Vec<RemoteDevice>> {
        let (listings, live) = self.redis.listings(api_key).await.ok()?;
        self.set_live(live);
        let view = &mut *lock(&self.view);
        let devices: Vec<RemoteDevice> = listings
            .into_iter()
            .filter(|l| l.info.device_active && *l.node_id != *self.node_id)
            .map(remote_device)
            .collect();
        view.store(api_key, devices.clone(), Instant::now());
        Some(devices)
    }

    fn route(
        &self,
        call: CallId,
        mut request: SendRequest,
        media: Option<Media>,
        wake: Wake,
        remote: Vec<RemoteDevice>,
    ) {
        let local = lock(&self.shared.registry).active_devices(&request.api_key);
        if remote.is_empty() {
            if local.is_empty() {
                // A device that connects elsewhere meanwhile is seen at the next read.
                lock(&self.view).forget(&request.api_key);
            }
            return self.shared.dispatch(call, request, media, wake);
        }
        let strategy = request.strategy.unwrap_or(self.shared.config.strategy);
        let remote: Vec<(RemoteDevice, usize)> = {
            let calls = lock(&self.calls);
            remote
                .into_iter()
                .map(|d| {
                    let load = calls.load_of(&d.identity.session_id);
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
        let rerouted = request.request_id.is_some();
        let request_id = request
            .request_id
            .map_or_else(uuid::Uuid::new_v4, uuid::Uuid::from_u128)
            .to_string();
        let command = Command {
            from: self.node_id.to_string(),
            call,
            api_key: request.api_key,
            session_id: device.identity.session_id.to_string(),
            kind: request.kind,
            phone_number: request.phone_number.clone(),
            text: request.text,
            media: media.map(|m| CarriedMedia {
                data_url: m.data_url,
                mime_type: m.mime_type,
                file_name: m.file_name,
            }),
            document_name: request.document_name,
            wait_for: request.wait_for.map(|a| a.as_str().to_string()),
            timeout_ms: timeout.as_millis() as u64,
            expires_at: now_ms() + left.as_millis() as u64,
            request_id: request_id.clone(),
            rerouted,
        };
        let remote = RemoteCall {
            holder: device.node_id.clone(),
            request_id,
            deadline,
            timeout_ms: timeout.as_millis() as u64,
            device: device.identity,
            phone_number: request.phone_number,
            routed: false,
        };
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

    fn reject(&self, call: CallId, error: GatewayError) {
        self.shared.host.deliver(Delivery::Rejected { call, error });
    }

    /// Settles a call carried out elsewhere with `error`, with its `send-failed` event.
    fn fail_remote(&self, call: CallId, remote: &RemoteCall, error: GatewayError) {
        if self.shared.config.log_events {
            let request_id = error.details["requestId"].as_str().unwrap_or_default();
            let event =
                LogEvent::send_failed(&remote.device, &remote.phone_number, request_id, &error);
            self.shared.host.deliver(Delivery::Log(event));
        }
        self.reject(call, error);
    }

    /// A send another process routed here.
    fn on_command(&self, command: Command) {
        if now_ms() >= command.expires_at {
            return;
        }
        let takes = self.shared.lifecycle() == Lifecycle::Running
            && lock(&self.shared.registry).has_active_device(&command.api_key);
        if !takes && !command.rerouted {
            return self.relay.send(Outgoing::Envelope {
                to: command.from.as_str().into(),
                envelope: Envelope::Reroute(Box::new(command)),
                call: None,
            });
        }
        let call = self.relay.adopt(relay::Origin {
            node: command.from.as_str().into(),
            call: command.call,
        });
        let target: Arc<str> = command.session_id.as_str().into();
        let (mut request, media) = request_of(command);
        request.target = Some(target);
        self.shared.dispatch(call, request, media, Wake::Now);
    }

    /// `stop()` drains (5.3): the sends still waiting unwritten in this process's pacing
    /// queues go back to selection on their callers (those called here: among the
    /// other processes' devices).
    pub fn hand_back_queued(self: &Arc<Self>) {
        let taken = lock(&self.shared.registry).take_queued();
        for (settled, frame) in taken {
            let Some(written) = crate::protocol::command_of_frame(&frame) else {
                self.shared.fail(settled, shutdown_error);
                continue;
            };
            let pending = &settled.pending;
            let left = pending
                .deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            let (media, document_name) = (written.media, written.document_name);
            let mut command = Command {
                from: self.node_id.to_string(),
                call: pending.call,
                api_key: settled.identity.api_key.to_string(),
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
            };
            if pending.call & CLUSTER_CALL == 0 {
                self.route_elsewhere(command);
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

    /// A send called on this draining process: to another process's device, if any.
    fn route_elsewhere(self: &Arc<Self>, command: Command) {
        let cluster = self.clone();
        self.rt.spawn(async move {
            let call = command.call;
            let session_id = command.session_id.clone();
            let request_id = command.request_id.clone();
            let (request, media) = request_of(command);
            let remote = match cluster.usable() {
                true => cluster.read_devices(&request.api_key).await,
                false => None,
            };
            let strategy = request.strategy.unwrap_or(cluster.shared.config.strategy);
            let remote: Vec<(RemoteDevice, usize)> = remote
                .unwrap_or_default()
                .into_iter()
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
        if lock(&self.calls).take(call).is_none() {
            return;
        }
        lock(&self.view).forget(&command.api_key);
        let (request, media) = request_of(command);
        self.dispatch(call, request, media, Wake::Now);
    }

    /// The outcome of a send this process routed elsewhere.
    fn on_outcome(&self, outcome: Outcome) {
        let call = outcome.call;
        match outcome.result {
            Ok(success) => {
                let stage = Stage::from_code(success.stage);
                let remote = {
                    let mut calls = lock(&self.calls);
                    if stage == Stage::ResultAwaitingAck {
                        calls.get(call).map(|c| c.device.clone())
                    } else {
                        calls.take(call).map(|c| c.device)
                    }
                };
                if remote.is_none() {
                    return;
                }
                let d = success.device;
                let session = Arc::new(Identity {
                    session_id: d.session_id.into(),
                    api_key: d.api_key.into(),
                    user_id: d.user_id,
                    ip: d.ip,
                    extension_version: d.extension_version,
                    browser: d.browser,
                    dialect: self.shared.config.dialect,
                });
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
    fn on_ack(&self, ack: envelope::AckEvent) {
        let (Some(level), true) = (Ack::parse(&ack.ack), self.shared.config.log_events) else {
            return;
        };
        let device = Identity {
            session_id: ack.session_id.into(),
            api_key: ack.api_key.into(),
            user_id: ack.user_id,
            ip: String::new(),
            extension_version: String::new(),
            browser: String::new(),
            dialect: self.shared.config.dialect,
        };
        let event = LogEvent::message_ack(
            &device,
            &ack.request_id,
            &ack.phone_number,
            ack.message_id,
            level,
        );
        self.shared.host.deliver(Delivery::Log(event));
    }

    fn local_status(&self, request_id: &str) -> Option<Value> {
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

    fn on_envelope(self: &Arc<Self>, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(Envelope::Send(command)) => self.on_command(*command),
            Ok(Envelope::Reroute(command)) => self.on_reroute(*command),
            Ok(Envelope::Outcome(outcome)) => self.on_outcome(*outcome),
            Ok(Envelope::Ack(ack)) => self.on_ack(*ack),
            Ok(Envelope::StatusQuery {
                from,
                token,
                request_id,
            }) => {
                let status = self.local_status(&request_id);
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

    /// `getActiveSessions` across the cluster: this process's sessions and the others'
    /// as listed in Redis (local only while Redis is unreachable).
    pub async fn sessions(&self, api_key: &str) -> Value {
        let local = lock(&self.shared.registry).sessions_of(api_key);
        let mut all: Vec<Value> = local
            .into_iter()
            .map(|s| self.with_node(&self.node_id, s, None))
            .collect();
        if self.usable() {
            if let Ok((listings, _)) = self.redis.listings(api_key).await {
                all.extend(self.remote_listings(listings, false));
            }
        }
        Value::Array(all)
    }

    /// `getAllSessions` across the cluster, each session with its `apiKey`.
    pub async fn all_sessions(&self) -> Value {
        let local = lock(&self.shared.registry).all_sessions();
        let mut all: Vec<Value> = local
            .into_iter()
            .map(|(key, s)| self.with_node(&self.node_id, s, Some(&key)))
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
                let key = with_key.then_some(l.api_key.as_str());
                self.with_node(&l.node_id, l.info.clone(), key)
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
                Err(_) => {
                    self.connected.store(false, Ordering::Release);
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

    fn listing(&self, who: &Identity, info: SessionInfo) -> Listing {
        Listing {
            node_id: self.node_id.to_string(),
            api_key: who.api_key.to_string(),
            info,
        }
    }
}

impl Directory for Arc<Cluster> {
    fn admit(&self, who: &Arc<Identity>, info: SessionInfo, max_per_key: usize) -> Admission {
        let cluster = self.clone();
        let listing = self.listing(who, info);
        Box::pin(async move {
            if !cluster.usable() {
                // Counted locally; listed when Redis is back (republish).
                return true;
            }
            // Unreachable mid-way: counted locally, like while it is away.
            cluster
                .redis
                .admit(&listing, max_per_key)
                .await
                .unwrap_or(true)
        })
    }

    fn update(&self, who: &Arc<Identity>, info: SessionInfo) {
        // A draining process has taken its sessions off the registry.
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        self.relay.send(Outgoing::List {
            api_key: who.api_key.clone(),
            session_id: who.session_id.clone(),
            listing: Box::new(self.listing(who, info)),
        });
    }

    fn first_incoming(&self, api_key: &str, message_id: &str) -> Admission {
        let cluster = self.clone();
        let key = self.redis.keys.seen_incoming(api_key, message_id);
        Box::pin(async move {
            if !cluster.usable() {
                return true;
            }
            cluster
                .redis
                .first_sighting(&key, INCOMING_WINDOW)
                .await
                .unwrap_or(true)
        })
    }

    fn remove(&self, who: &Arc<Identity>) {
        self.relay.send(Outgoing::Unlist {
            api_key: who.api_key.clone(),
            session_id: who.session_id.clone(),
        });
    }
}

/// The send a routed command carries; its timeout still counts from the call.
fn request_of(command: Command) -> (SendRequest, Option<Media>) {
    let timeout = Duration::from_millis(command.timeout_ms.max(1));
    let left = Duration::from_millis(command.expires_at.saturating_sub(now_ms()));
    let mut request = SendRequest::new(
        command.kind,
        command.api_key,
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
    let media = command.media.map(|m| Media {
        data_url: m.data_url,
        mime_type: m.mime_type,
        file_name: m.file_name,
    });
    (request, media)
}

fn remote_device(listing: Listing) -> RemoteDevice {
    let info = listing.info;
    RemoteDevice {
        node_id: listing.node_id.into(),
        identity: Arc::new(Identity {
            session_id: info.session_id,
            api_key: listing.api_key.into(),
            user_id: info.user_id,
            ip: info.ip,
            extension_version: info.extension_version,
            browser: info.browser,
            dialect: crate::config::Dialect::Compat,
        }),
    }
}

/// `CLUSTER_UNAVAILABLE` for a send that needs another process while Redis is away.
fn unavailable(api_key: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::ClusterUnavailable,
        "No device of this API key is connected to this process, and the cluster (Redis) cannot be reached to use another process's",
        json!({ "apiKey": mask_api_key(api_key) }),
    )
}

/// Unique per process: host name, pid and a random part.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}
