//! 5.3 cluster mode: several processes sharing one Redis act as one gateway. Each
//! process lists its sessions in Redis under a lease, chooses devices over the whole
//! cluster, routes a send for another process's device through that process's inbox
//! stream, and gets the outcome back through its own.
//!
//! - `keys`: where the state lives in Redis, and its scripts;
//! - `connect`: connections to Redis (URL or Sentinel, TLS), and why they fail;
//! - `redis_io`: the commands; `envelope`: what processes tell each other;
//! - `view`: other processes' devices as last read, and device choice;
//! - `routing`: sends across processes; `calls`: this process's sends carried out
//!   elsewhere; `relay`: the outcomes of sends carried out here for others;
//! - `once`: idempotency keys and late results across processes;
//! - `queries`: sessions and statuses across the cluster;
//! - `directory`: what the session tasks tell the cluster;
//! - `run`: the tasks (lease, outbox, inbox).

mod calls;
mod connect;
mod directory;
mod envelope;
mod keys;
mod once;
mod queries;
mod redis_io;
mod relay;
mod routing;
mod run;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::host::Host;
use crate::identity::Identity;
use crate::state::link::lock;
use crate::state::Shared;
use calls::RemoteCalls;
use connect::{Cause, Failure, Target};
use keys::Keys;
use redis_io::{LiveNode, Redis};
use relay::{ClusterHost, Outgoing, Relay};
use view::View;

/// How long an incoming message id is remembered across the cluster (5.2: 10 minutes).
const INCOMING_WINDOW: Duration = Duration::from_secs(600);

/// What `getHealth().cluster` reports.
#[derive(Clone, Debug)]
pub struct ClusterHealth {
    pub node_id: String,
    pub nodes: usize,
    pub connected: bool,
    /// Another live process holds this node id: local service only.
    pub duplicate: bool,
    /// Sessions on every live node, as of the last lease round.
    pub sessions: usize,
}

/// The parts made before the gateway's shared state, which takes the wrapped host.
pub struct Prepared {
    config: ClusterConfig,
    keys: Arc<Keys>,
    relay: Arc<Relay>,
    outbox: mpsc::UnboundedReceiver<Outgoing>,
}

pub fn prepare(config: ClusterConfig, host: Arc<dyn Host>) -> (Prepared, Arc<dyn Host>) {
    let keys = Arc::new(Keys::new(&config.key_prefix, config.secret.as_deref()));
    let (relay, outbox) = Relay::new(keys.clone());
    let host = Arc::new(ClusterHost {
        inner: host,
        relay: relay.clone(),
    });
    let prepared = Prepared {
        config,
        keys,
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
    /// API keys this process knows (a session of it connected here, or a call here
    /// named it), by digest: Redis holds digests only.
    known: Mutex<HashMap<String, Arc<str>>>,
    /// Causes that retrying cannot fix already reported to `onError` (`Cause::bit`).
    reported: AtomicU8,
    /// Local sessions (id -> API key) whose listing in Redis may be wrong: its write
    /// failed, or Redis was away when it was due. Written again once Redis is back
    /// (listings are only written when something changes).
    unsynced: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Wakes the lease round early: a Redis connection broke (it may come back empty).
    nudge: tokio::sync::Notify,
    /// This process has held its lease: finding it gone may mean that Redis lost the
    /// cluster's state.
    held_lease: AtomicBool,
}

/// API keys remembered by digest at most; past that the map starts again.
const KNOWN_MAX: usize = 100_000;

impl Cluster {
    pub fn new(
        prepared: Prepared,
        shared: Arc<Shared>,
        rt: Handle,
    ) -> Result<Arc<Self>, GatewayError> {
        let Prepared {
            config,
            keys,
            relay,
            outbox,
        } = prepared;
        let _runtime = rt.enter();
        // The URL may hold a password: neither it nor the parser's message is repeated.
        let target = Target::new(&config)
            .map_err(|problem| GatewayError::validation("cluster.redis", "", &problem))?;
        let node_id: Arc<str> = config
            .node_id
            .clone()
            .unwrap_or_else(default_node_id)
            .into();
        let redis = Redis::open(target, keys, node_id.clone(), config.lease);
        Ok(Arc::new(Self {
            shared,
            rt: rt.clone(),
            node_id,
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
            known: Mutex::default(),
            reported: AtomicU8::new(0),
            unsynced: Mutex::default(),
            nudge: tokio::sync::Notify::new(),
            held_lease: AtomicBool::new(false),
        }))
    }

    /// Remembers `api_key` under its digest (returned).
    fn know(&self, api_key: &str) -> String {
        let digest = self.redis.keys.digest(api_key);
        let mut known = lock(&self.known);
        if !known.contains_key(&digest) {
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
            known.insert(digest.clone(), api_key.into());
        }
        digest
    }

    /// `who`'s listing is to be written again (or removed) once Redis is reachable.
    fn unsynced(&self, who: &Identity) {
        lock(&self.unsynced).insert(who.session_id().into(), who.api_key.clone());
    }

    /// The API key behind a digest, if this process knows it.
    fn known_key(&self, digest: &str) -> Option<Arc<str>> {
        lock(&self.known).get(digest).cloned()
    }

    /// `CLUSTER_UNAVAILABLE` for a cause that retrying cannot fix, naming it.
    fn cause_error(cause: Cause, failure: &Failure) -> GatewayError {
        let what = match cause {
            Cause::Auth => "Redis refused the user name or password (auth)",
            Cause::Permission => "Redis refused a command the gateway needs: the ACL user lacks a permission (permission)",
            Cause::Tls => "the TLS handshake with Redis failed: a certificate was rejected (tls)",
            Cause::Dns => "the Redis host name does not exist (dns)",
        };
        GatewayError::new(
            ErrorCode::ClusterUnavailable,
            format!("Cannot use the cluster's Redis: {what}: {}", failure.detail),
            json!({ "cause": cause.as_str() }),
        )
    }

    /// A Redis failure seen while running: one that retrying cannot fix goes to
    /// `onError`, once per cause.
    fn trouble(&self, failure: &Failure) {
        let Some(cause) = failure.cause else { return };
        if self.reported.fetch_or(cause.bit(), Ordering::AcqRel) & cause.bit() == 0 {
            self.shared.report(Self::cause_error(cause, failure));
        }
    }

    /// Redis reachable or not, as the lease rounds find it; changes go to the logger.
    fn set_connected(&self, connected: bool, why: Option<&Failure>) {
        if self.connected.swap(connected, Ordering::AcqRel) == connected {
            return;
        }
        let (level, message) = match connected {
            true => ("info", "cluster: Redis connected"),
            false => (
                "warn",
                "cluster: Redis unreachable, serving local devices only until it is back",
            ),
        };
        let mut fields = json!({ "nodeId": &*self.node_id });
        if let Some(failure) = why {
            fields["reason"] = failure.detail.as_str().into();
            if let Some(cause) = failure.cause {
                fields["cause"] = cause.as_str().into();
            }
        }
        self.shared.notice(level, message, fields);
    }

    /// Whether sends may use other processes' devices right now.
    fn usable(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.duplicate.load(Ordering::Acquire)
    }

    /// Takes the lease for `start()`: fails only if another live process holds this
    /// node id; with Redis unreachable the process starts local-only and keeps trying.
    /// A cause that retrying cannot fix (wrong password, missing ACL permission,
    /// rejected certificate, unknown host) fails it too.
    pub async fn join(&self) -> Result<(), GatewayError> {
        let sessions = lock(&self.shared.registry).session_count();
        let claimed = self.redis.claim(&self.token, sessions, true, false).await;
        match claimed {
            Ok((-1, _)) => Err(self.duplicate_error()),
            Ok((_, nodes)) => {
                self.held_lease.store(true, Ordering::Release);
                if let Err(failure) = self.redis.probe(&self.token).await {
                    if let Some(cause) = failure.cause {
                        self.reported.fetch_or(cause.bit(), Ordering::AcqRel);
                        return Err(Self::cause_error(cause, &failure));
                    }
                }
                self.seen_nodes(nodes);
                self.set_connected(true, None);
                Ok(())
            }
            Err(failure) => match failure.cause {
                Some(cause) => {
                    self.reported.fetch_or(cause.bit(), Ordering::AcqRel);
                    Err(Self::cause_error(cause, &failure))
                }
                None => {
                    let fields = json!({ "nodeId": &*self.node_id, "reason": failure.detail });
                    let message = "cluster: Redis unreachable at start, serving local devices only until it is reached";
                    self.shared.notice("warn", message, fields);
                    Ok(())
                }
            },
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
            duplicate: self.duplicate.load(Ordering::Acquire),
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
