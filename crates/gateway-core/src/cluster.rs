//! 5.3 cluster mode: several processes sharing one Redis act as one gateway. Each
//! process lists its sessions in Redis under a lease, chooses devices over the whole
//! cluster, routes a send for another process's device through that process's inbox
//! stream, and gets the outcome back through its own.
//!
//! - `keys`: where the state lives in Redis, and its scripts;
//! - `redis_io`: the commands; `envelope`: what processes tell each other;
//! - `view`: other processes' devices as last read, and device choice;
//! - `routing`: sends across processes; `calls`: this process's sends carried out
//!   elsewhere; `relay`: the outcomes of sends carried out here for others;
//! - `once`: idempotency keys and late results across processes;
//! - `queries`: sessions and statuses across the cluster;
//! - `directory`: what the session tasks tell the cluster;
//! - `run`: the tasks (lease, outbox, inbox).

mod calls;
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::host::Host;
use crate::state::link::lock;
use crate::state::Shared;
use calls::RemoteCalls;
use envelope::Listing;
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
