//! The facade: starts and stops the server and its timer tasks, and takes send calls,
//! handed-over connections and queries from the host. No napi types here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::runtime::Handle;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::cluster::{self, Cluster, ClusterHealth};
use crate::config::Config;
use crate::error::{GatewayError, StartError};
use crate::host::{Delivery, Host};
use crate::identity::CallId;
use crate::media::MediaKind;
use crate::net::handshake::Upgrade;
use crate::net::{connection, listener, Transport};
use crate::protocol::SendKind;
use crate::state::link::{lock, CloseRequest};
use crate::state::records::StatusKey;
use crate::state::registry::SessionInfo;
pub use crate::state::requests::SendRequest;
use crate::state::requests::{shutdown_error, Wake};
use crate::state::{Lifecycle, Shared};
use crate::store::{self, Store};
use crate::supervise::{catch_panic, panic_error};
use crate::timers::{deadlines, delivery, heartbeat};

/// How long `stop()` waits for connections to finish their close handshake; sessions
/// still there then are dropped, which takes at most `STOP_ABORT`. Together well
/// within the 5 s `stop()` may take whatever the peers do.
const STOP_GRACE: Duration = Duration::from_secs(3);
const STOP_ABORT: Duration = Duration::from_secs(1);

/// What `getHealth()` reports.
#[derive(Debug, Clone)]
pub struct Health {
    pub running: bool,
    pub active_sessions: usize,
    /// Milliseconds since `start()`, 0 while stopped.
    pub uptime_ms: u64,
    pub timestamp_ms: u64,
    pub connections: usize,
    pub pending_requests: usize,
    /// Sends in pacing queues or waiting for a device (5.2).
    pub queued_sends: usize,
    /// The standalone server's port while it listens.
    pub port: Option<u16>,
    /// Sessions of this process (`active_sessions` counts the cluster's in cluster mode).
    pub local_sessions: usize,
    pub cluster: Option<ClusterHealth>,
    /// 6.3: running, not draining, and Redis connected in cluster mode.
    pub ready: bool,
    /// 6.3: the core's runtime answers (its pulse is recent).
    pub live: bool,
}

/// How often the running core's runtime shows it is alive, and how stale that may get
/// before `getHealth().live` says no.
const PULSE: Duration = Duration::from_secs(1);
const PULSE_STALE_MS: u64 = 5_000;

struct Run {
    shutdown: CancellationToken,
    /// Cancelled first when a cluster member drains: no new connections.
    accepting: CancellationToken,
    tasks: TaskTracker,
    started_at: u64,
    /// Where the standalone server listens; `None` when attached to a Node server.
    addr: Option<SocketAddr>,
    /// When the runtime last ran the pulse task (ms since the epoch).
    pulse: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    cluster: Option<Arc<Cluster>>,
    /// Durable mode (`store`).
    store: Option<Arc<Store>>,
    run: Arc<Mutex<Option<Run>>>,
    rt: Handle,
}

impl Gateway {
    pub fn new(config: Config, host: Arc<dyn Host>, rt: Handle) -> Result<Self, GatewayError> {
        let (prepared, host) = match config.cluster.clone() {
            Some(settings) => {
                let (prepared, host) = cluster::prepare(settings, host);
                (Some(prepared), host)
            }
            None => (None, host),
        };
        // Durable mode: every delivery passes the store's writer, after its commit.
        let store = config
            .store
            .clone()
            .map(|settings| Store::new(settings, host.clone()));
        let host = match &store {
            Some(store) => store.clone() as Arc<dyn Host>,
            None => host,
        };
        let shared = Shared::new(config, host)?;
        if let Some(store) = &store {
            store.attach(&shared);
            let _ = shared.journal.set(store.clone());
            let mut registry = lock(&shared.registry);
            registry.journal = Some(store.clone());
            registry.statuses.track_changes();
        }
        let cluster = prepared
            .map(|p| Cluster::new(p, shared.clone(), rt.clone()))
            .transpose()?;
        if let Some(cluster) = &cluster {
            let _ = shared.directory.set(Arc::new(cluster.clone()));
            // Every record this process calls is written to Redis as it changes.
            lock(&shared.registry).statuses.track_changes();
        }
        let gateway = Self {
            shared,
            cluster,
            store,
            run: Arc::default(),
            rt,
        };
        // A call whose key an earlier call freed is sent like a new one. Weak: the
        // shared state must not keep its own facade alive.
        let weak = gateway.downgrade();
        let _ = gateway.shared.resend.set(Box::new(move |call, request| {
            if let Some(gateway) = weak.upgrade() {
                gateway.send_with(call, request, Wake::Now);
            }
        }));
        Ok(gateway)
    }

    fn downgrade(&self) -> WeakGateway {
        WeakGateway {
            shared: Arc::downgrade(&self.shared),
            cluster: self.cluster.as_ref().map(Arc::downgrade),
            store: self.store.as_ref().map(Arc::downgrade),
            run: Arc::downgrade(&self.run),
            rt: self.rt.clone(),
        }
    }

    /// Binds and starts serving. Synchronous so that a taken port is reported to
    /// the caller of `start()` directly.
    pub fn start(&self) -> Result<SocketAddr, StartError> {
        let shared = &self.shared;
        let mut run = lock(&self.run);
        if run.is_some() {
            return Err(StartError::AlreadyRunning);
        }
        let _runtime = self.rt.enter();
        let port = shared.config.port;
        let listener = bind(
            shared.config.host.as_deref(),
            port,
            shared.config.reuse_port,
        )
        .map_err(|source| StartError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { port, source })?;
        let contents = self.open_store()?;
        let started = self.begin(Some(addr), contents);
        started.tasks.spawn(listener::run(
            listener,
            shared.clone(),
            started.shutdown.clone(),
            started.accepting.clone(),
            started.tasks.clone(),
        ));
        *run = Some(started);
        Ok(addr)
    }

    /// Starts serving connections that a Node server hands over (`adopt_*`).
    pub fn start_attached(&self) -> Result<(), StartError> {
        let mut run = lock(&self.run);
        if run.is_some() {
            return Err(StartError::AlreadyRunning);
        }
        let _runtime = self.rt.enter();
        let contents = self.open_store()?;
        *run = Some(self.begin(None, contents));
        Ok(())
    }

    /// Durable mode: opens the store (`STORE_LOCKED` if another gateway has it).
    fn open_store(&self) -> Result<Option<store::Contents>, StartError> {
        self.store
            .as_ref()
            .map(|store| store.open().map_err(StartError::Store))
            .transpose()
    }

    /// The timer tasks every running gateway has; in durable mode, what the store
    /// held is taken up again first.
    fn begin(&self, addr: Option<SocketAddr>, contents: Option<store::Contents>) -> Run {
        let shared = &self.shared;
        lock(&shared.registry).reopen();
        shared.set_lifecycle(Lifecycle::Running);
        if let Some(contents) = contents {
            store::recover(shared, contents);
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeat::run(shared.clone(), shutdown.clone()));
        tasks.spawn(deadlines::run(shared.clone(), shutdown.clone()));
        tasks.spawn(delivery::run(shared.clone(), shutdown.clone()));
        if let Some(cluster) = &self.cluster {
            tasks.spawn(cluster.clone().run(shutdown.clone()));
        }
        let pulse = Arc::new(std::sync::atomic::AtomicU64::new(now_ms()));
        let beating = pulse.clone();
        let stopped = shutdown.clone();
        tasks.spawn(async move {
            loop {
                beating.store(now_ms(), Ordering::Relaxed);
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(PULSE) => {}
                }
            }
        });
        Run {
            accepting: shutdown.child_token(),
            shutdown,
            tasks,
            started_at: now_ms(),
            addr,
            pulse,
        }
    }

    /// Serves a TCP connection whose upgrade request Node has parsed.
    pub fn adopt_tcp(
        &self,
        stream: std::net::TcpStream,
        upgrade: Upgrade,
        peer: IpAddr,
    ) -> io::Result<()> {
        let _runtime = self.rt.enter();
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let transport = Either::Left(TcpStream::from_std(stream)?);
        self.adopt(transport, upgrade, peer)
    }

    /// Serves a connection whose bytes Node relays (it terminates TLS): returns the
    /// socket Node writes the decrypted bytes to and reads the replies from.
    pub fn adopt_relayed(&self, upgrade: Upgrade, peer: IpAddr) -> io::Result<OwnedFd> {
        let _runtime = self.rt.enter();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        self.adopt(Either::Right(UnixStream::from_std(ours)?), upgrade, peer)?;
        Ok(theirs.into())
    }

    fn adopt(&self, transport: Transport, upgrade: Upgrade, peer: IpAddr) -> io::Result<()> {
        let run = lock(&self.run);
        let accepting = self.shared.lifecycle() == Lifecycle::Running;
        let Some(run) = run.as_ref().filter(|_| accepting) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "Gateway is not running",
            ));
        };
        let shared = self.shared.clone();
        run.tasks.spawn(connection::serve(
            transport,
            upgrade,
            peer,
            shared,
            run.shutdown.clone(),
            run.tasks.clone(),
        ));
        Ok(())
    }

    /// The Node server the gateway is attached to is closing: its sessions end with
    /// it, and their pending sends fail with `CONNECTION_LOST`.
    pub fn close_sessions(&self) {
        lock(&self.shared.registry).close_all(CloseRequest::ServerClosing);
    }

    /// `stop()`: see `stop_draining`, with no `drainMs`.
    pub fn stop(&self) {
        self.stop_draining(None);
    }

    /// Starts stopping; the host gets `Delivery::Stopped` once the port is free and
    /// every session has closed. Every pending send fails with `GATEWAY_SHUTDOWN`,
    /// unless the gateway drains first: in cluster mode always (5.3), else with a
    /// `drainMs`. Draining takes no new connections or sends and gives written sends up
    /// to `drain` (cluster mode: `requestTimeout` without it) to settle. Sends not yet
    /// written reject `GATEWAY_SHUTDOWN` (cluster mode: go back to selection on their
    /// callers), or in durable mode stay in the store for the next start.
    pub fn stop_draining(&self, drain: Option<Duration>) {
        let cap = match (&self.cluster, drain) {
            (_, Some(drain)) => drain,
            (Some(_), None) => self.shared.config.request_timeout,
            (None, None) => Duration::ZERO,
        };
        let run = lock(&self.run);
        let Some(accepting) = run.as_ref().map(|r| r.accepting.clone()) else {
            drop(run);
            return self.finish_stop();
        };
        drop(run);
        if self.cluster.is_none() && cap.is_zero() {
            return self.finish_stop();
        }
        if self.shared.lifecycle() != Lifecycle::Running {
            return; // Already draining: its `Stopped` comes once.
        }
        self.shared.set_lifecycle(Lifecycle::Stopping);
        accepting.cancel();
        match &self.cluster {
            Some(cluster) => {
                cluster.unlist_all();
                cluster.hand_back_queued();
            }
            None => self.end_waiting(),
        }
        let gateway = self.clone();
        self.rt.spawn(async move {
            let until = tokio::time::Instant::now() + cap;
            while tokio::time::Instant::now() < until {
                // Sends waiting for a device count too: one that connects to another
                // process takes them (`waitForDevice` is cluster-wide).
                let busy = {
                    let registry = lock(&gateway.shared.registry);
                    registry.pending_count() + registry.parking.len()
                } + gateway.cluster.as_ref().map_or(0, |c| c.in_flight());
                if busy == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            gateway.finish_stop();
        });
    }

    /// Sends not yet written, when stopping: kept in the store (durable mode) for the
    /// next start, else rejected `GATEWAY_SHUTDOWN` (`sent: false`).
    fn end_waiting(&self) {
        let shared = &self.shared;
        if self.store.is_some() {
            let kept = lock(&shared.registry).keep_waiting();
            let mut calls = lock(&shared.kept);
            for (request_id, call) in kept {
                shared.settling.forget(call);
                calls.insert(request_id, call);
            }
            return;
        }
        let queued = lock(&shared.registry).take_queued();
        for (settled, _) in queued {
            shared.fail(settled, shutdown_error);
        }
        shared.abandon_parked();
    }

    fn finish_stop(&self) {
        let shared = self.shared.clone();
        let Some(run) = lock(&self.run).take() else {
            shared.host.deliver(Delivery::Stopped);
            return;
        };
        shared.set_lifecycle(Lifecycle::Stopping);
        if self.store.is_some() {
            self.end_waiting();
        }
        run.shutdown.cancel();
        let owed = lock(&shared.registry).shut_down();
        for settled in owed {
            shared.fail(settled, shutdown_error);
        }
        shared.abandon_ack_waits();
        shared.abandon_parked();
        run.tasks.close();
        self.rt.spawn(async move {
            if tokio::time::timeout(STOP_GRACE, run.tasks.wait())
                .await
                .is_err()
            {
                let links: Vec<_> = lock(&shared.registry).links().cloned().collect();
                for link in links {
                    link.abort();
                }
                let _ = tokio::time::timeout(STOP_ABORT, run.tasks.wait()).await;
            }
            shared.stopped();
            shared.host.deliver(Delivery::Stopped);
        });
    }

    /// Accepts a send call; its outcome is delivered to the host later, exactly once.
    /// A text command goes out at the next `flush()`.
    pub fn send(&self, call: CallId, request: SendRequest) {
        self.send_with(call, request, Wake::Later);
    }

    /// A call with an `idempotencyKey` claims it first; one with a key or `metadata`
    /// gets its record (docs/delivery-records.md), and so does every call in durable
    /// mode. In cluster mode a key is claimed in Redis too, before anything is sent.
    fn send_with(&self, call: CallId, request: SendRequest, wake: Wake) {
        let running = self.shared.lifecycle() == Lifecycle::Running;
        let recorded = request.has_record_from_the_start() || self.store.is_some();
        if !running || !recorded {
            return self.submit(call, request, wake);
        }
        let cluster = self
            .cluster
            .clone()
            .filter(|_| request.idempotency_key.is_some());
        let Some(request) = self.shared.claim(call, request, cluster.is_none()) else {
            return;
        };
        let Some(cluster) = cluster else {
            return self.submit(call, request, wake);
        };
        let gateway = self.clone();
        self.rt.spawn(async move {
            if let Some(request) = cluster.claim_key(call, request).await {
                gateway.submit(call, request, Wake::Now);
            }
        });
    }

    /// Loads the call's media, if any, and hands it to device selection.
    fn submit(&self, call: CallId, mut request: SendRequest, wake: Wake) {
        let source = request.media_source.take();
        // Not running: refused at once, before any media is loaded.
        let Some(source) = source.filter(|_| self.shared.lifecycle() == Lifecycle::Running) else {
            match &self.cluster {
                Some(cluster) => cluster.dispatch(call, request, None, wake),
                None => self.shared.dispatch(call, request, None, wake),
            }
            return;
        };
        let cluster = self.cluster.clone();
        request
            .called_at
            .get_or_insert_with(std::time::Instant::now);
        let shared = self.shared.clone();
        let running = lock(&self.run)
            .as_ref()
            .map(|r| (r.shutdown.clone(), r.tasks.clone()));
        let shutdown = running.as_ref().map(|(token, _)| token.clone());
        let kind = match request.kind {
            SendKind::Video => MediaKind::Video,
            SendKind::Document => MediaKind::Document,
            _ => MediaKind::Image,
        };
        let load = async move {
            let cancelled = async {
                match &shutdown {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let loading = async {
                tokio::select! {
                    loaded = shared.media.load(kind, source) => loaded.map_err(Some),
                    _ = cancelled => Err(None),
                }
            };
            // A panic while loading still settles the call, as SERVER_ERROR.
            match catch_panic(loading).await {
                Ok(Ok(media)) => match &cluster {
                    Some(cluster) => cluster.dispatch(call, request, Some(media), Wake::Now),
                    None => shared.dispatch(call, request, Some(media), Wake::Now),
                },
                Ok(Err(Some(error))) => shared.host.deliver(Delivery::Rejected { call, error }),
                Ok(Err(None)) => shared.host.deliver(Delivery::Rejected {
                    call,
                    error: shutdown_error("", ""),
                }),
                Err(panic) => {
                    let error = panic_error("media loader", &panic);
                    shared.report(error.clone());
                    shared.host.deliver(Delivery::Rejected { call, error });
                }
            }
        };
        match running {
            Some((_, tasks)) => drop(tasks.spawn_on(load, &self.rt)),
            None => drop(self.rt.spawn(load)),
        }
    }

    /// Wakes the sessions that `send` queued commands for.
    pub fn flush(&self) {
        self.shared.wake_corked();
    }

    pub fn sessions(&self, api_key: &str) -> Vec<SessionInfo> {
        lock(&self.shared.registry).sessions_of(api_key)
    }

    /// `getMessageStatus(requestId)`: `None` for an id that is not a request id
    /// this gateway issued within `idempotencyTtl` (or was forgotten).
    pub fn message_status(&self, request_id: &str) -> Option<Value> {
        let id = uuid::Uuid::try_parse(request_id).ok()?;
        lock(&self.shared.registry).message_status(id.as_u128())
    }

    /// `getMessageStatus({ apiKey, idempotencyKey })` or `({ apiKey, messageId })`.
    pub fn message_status_by(&self, api_key: &str, by: &StatusKey) -> Option<Value> {
        lock(&self.shared.registry).message_status_by(api_key, by)
    }

    /// Every session of every key, with its key (`getAllSessions`).
    pub fn all_sessions(&self) -> Vec<(Arc<str>, SessionInfo)> {
        lock(&self.shared.registry).all_sessions()
    }

    /// Answers `token` with what `query` finds across the cluster (5.3: queries that
    /// need Redis); a gateway without cluster mode answers `alone`.
    fn ask_cluster<Q, F>(&self, token: u32, alone: Value, query: Q)
    where
        Q: FnOnce(Arc<Cluster>) -> F + Send + 'static,
        F: std::future::Future<Output = Result<Value, GatewayError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let cluster = self.cluster.clone();
        self.rt.spawn(async move {
            let result = match cluster {
                Some(cluster) => query(cluster).await,
                None => Ok(alone),
            };
            shared.host.deliver(Delivery::Answer { token, result });
        });
    }

    /// Cluster mode: takes this process's lease (after `start`); answered with null,
    /// or `CLUSTER_UNAVAILABLE` if another live process uses the same node id.
    pub fn join_cluster(&self, token: u32) {
        self.ask_cluster(token, Value::Null, |cluster| async move {
            cluster.join().await.map(|()| Value::Null)
        });
    }

    /// `getActiveSessions` across the cluster (each session with `nodeId`).
    pub fn cluster_sessions(&self, token: u32, api_key: String) {
        self.ask_cluster(token, json!([]), |cluster| async move {
            Ok(cluster.sessions(&api_key).await)
        });
    }

    /// `getAllSessions` across the cluster (each session with `apiKey` and `nodeId`).
    pub fn cluster_all_sessions(&self, token: u32) {
        self.ask_cluster(token, json!([]), |cluster| async move {
            Ok(cluster.all_sessions().await)
        });
    }

    /// `getMessageStatus` across the cluster: the status (JSON) or null.
    pub fn cluster_message_status(&self, token: u32, request_id: String) {
        self.ask_cluster(token, Value::Null, |cluster| async move {
            Ok(cluster.message_status(&request_id).await)
        });
    }

    /// `getMessageStatus` by key across the cluster: the status (JSON) or null.
    pub fn cluster_message_status_by(&self, token: u32, selector: Option<(String, StatusKey)>) {
        self.ask_cluster(token, Value::Null, |cluster| async move {
            Ok(match selector {
                Some((api_key, by)) => cluster.message_status_by(&api_key, &by).await,
                None => Value::Null,
            })
        });
    }

    pub fn health(&self) -> Health {
        let run = lock(&self.run);
        let cluster = self.cluster.as_ref().map(|c| c.health());
        let registry = lock(&self.shared.registry);
        let draining = self.shared.lifecycle() != Lifecycle::Running;
        let redis_ok = cluster.as_ref().is_none_or(|c| c.connected && !c.duplicate);
        let live = run.as_ref().is_none_or(|r| {
            now_ms().saturating_sub(r.pulse.load(Ordering::Relaxed)) <= PULSE_STALE_MS
        });
        Health {
            ready: run.is_some() && !draining && redis_ok && live,
            live,
            running: run.is_some(),
            active_sessions: cluster
                .as_ref()
                .map_or(registry.session_count(), |c| c.sessions),
            local_sessions: registry.session_count(),
            cluster,
            uptime_ms: run
                .as_ref()
                .map_or(0, |r| now_ms().saturating_sub(r.started_at)),
            timestamp_ms: now_ms(),
            connections: self.shared.connections.load(Ordering::Relaxed),
            pending_requests: registry.pending_count(),
            queued_sends: registry.queued_count(),
            port: run.as_ref().and_then(|r| r.addr).map(|a| a.port()),
        }
    }
}

/// A `Gateway` that does not keep it alive.
struct WeakGateway {
    shared: Weak<Shared>,
    cluster: Option<Weak<Cluster>>,
    store: Option<Weak<Store>>,
    run: Weak<Mutex<Option<Run>>>,
    rt: Handle,
}

impl WeakGateway {
    fn upgrade(&self) -> Option<Gateway> {
        Some(Gateway {
            shared: self.shared.upgrade()?,
            cluster: match &self.cluster {
                Some(cluster) => Some(cluster.upgrade()?),
                None => None,
            },
            store: match &self.store {
                Some(store) => Some(store.upgrade()?),
                None => None,
            },
            run: self.run.upgrade()?,
            rt: self.rt.clone(),
        })
    }
}

/// Without a host, listen on IPv6 and IPv4 alike where the machine has IPv6.
fn bind(host: Option<&str>, port: u16, reuse_port: bool) -> io::Result<TcpListener> {
    let candidates: Vec<SocketAddr> = match host {
        Some(h) => std::net::ToSocketAddrs::to_socket_addrs(&(h, port))?.collect(),
        None => vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ],
    };
    let mut last_error = io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "host resolved to no address",
    );
    for addr in candidates {
        let socket = if addr.is_ipv6() {
            TcpSocket::new_v6()
        } else {
            TcpSocket::new_v4()
        };
        let attempt = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            if reuse_port {
                s.set_reuseport(true)?;
            }
            s.bind(addr)?;
            s.listen(1024)
        });
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::host::{AuthAnswer, Validation};
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;
    use uuid::Uuid;

    /// A host that accepts one key and hands every delivery to the test.
    struct TestHost(mpsc::UnboundedSender<Delivery>);

    impl Host for TestHost {
        fn deliver(&self, delivery: Delivery) {
            let _ = self.0.send(delivery);
        }
        fn validate(&self, api_key: String) -> Validation {
            Box::pin(async move {
                Ok(AuthAnswer {
                    valid: api_key == "good-key-123",
                    ..AuthAnswer::default()
                })
            })
        }
    }

    async fn started() -> (Gateway, SocketAddr, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = Config {
            port: 0,
            host: Some("127.0.0.1".into()),
            log_events: false,
            ..Config::default()
        };
        let gateway = Gateway::new(config, Arc::new(TestHost(tx)), Handle::current()).unwrap();
        let addr = gateway.start().unwrap();
        (gateway, addr, rx)
    }

    type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

    async fn ready_client(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/wa-ext-ws"), tcp)
            .await
            .unwrap();
        ws.send(Message::text(r#"{"type":"auth","apiKey":"good-key-123"}"#))
            .await
            .unwrap();
        ws.send(Message::text(
            r#"{"type":"status","data":{"whatsappLoggedIn":true,"ready":true}}"#,
        ))
        .await
        .unwrap();
        next_of(&mut ws, "authenticated").await;
        ws
    }

    async fn next_of(ws: &mut Client, kind: &str) -> Value {
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                panic!("socket ended before {kind}")
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    fn text(api_key: &str) -> SendRequest {
        SendRequest::new(
            SendKind::Message,
            api_key.into(),
            "+1234567890".into(),
            "hi".into(),
        )
    }

    /// Sends until the status frame has made the device active.
    async fn send_when_active(
        gateway: &Gateway,
        rx: &mut mpsc::UnboundedReceiver<Delivery>,
        call: CallId,
    ) {
        for _ in 0..100 {
            if gateway
                .sessions("good-key-123")
                .iter()
                .any(|s| s.device_active)
            {
                gateway.send(call, text("good-key-123"));
                return gateway.flush();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("device never became active: {:?}", rx.try_recv());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_round_trips_through_an_extension() {
        let (gateway, addr, mut rx) = started().await;
        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 7).await;
        let command = next_of(&mut ws, "send-message").await;
        let request_id = command["requestId"].as_str().unwrap();
        let result = json!({ "type": "message-result", "requestId": request_id, "success": true, "messageId": "m1" });
        ws.send(Message::text(result.to_string())).await.unwrap();
        match rx.recv().await.unwrap() {
            Delivery::Resolved(r) => {
                assert_eq!(r.id, 7);
                assert_eq!(Uuid::from_u128(r.request_id).to_string(), request_id);
                assert_eq!(r.message_id, json!("m1"));
                assert_eq!(r.session.api_key.as_ref(), "good-key-123");
            }
            other => panic!("{other:?}"),
        }
        gateway.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_device_and_lost_connection_fail_the_call() {
        let (gateway, addr, mut rx) = started().await;
        gateway.send(1, text("nobody-key-123"));
        assert!(
            matches!(rx.recv().await, Some(Delivery::Rejected { call: 1, error: e }) if e.code == ErrorCode::NoActiveDevice)
        );

        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 2).await;
        next_of(&mut ws, "send-message").await;
        drop(ws);
        assert!(
            matches!(rx.recv().await, Some(Delivery::Rejected { call: 2, error: e }) if e.code == ErrorCode::ConnectionLost)
        );
        gateway.stop();
    }

    /// A host whose validator has a bug: it panics for one key.
    struct PanickyHost(mpsc::UnboundedSender<Delivery>);

    impl Host for PanickyHost {
        fn deliver(&self, delivery: Delivery) {
            let _ = self.0.send(delivery);
        }
        fn validate(&self, api_key: String) -> Validation {
            Box::pin(async move {
                assert_ne!(api_key, "panic-key", "validator bug");
                Ok(AuthAnswer {
                    valid: api_key == "good-key-123",
                    ..AuthAnswer::default()
                })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_connection_is_reported_and_the_gateway_keeps_serving() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = Config {
            port: 0,
            host: Some("127.0.0.1".into()),
            log_events: false,
            ..Config::default()
        };
        let gateway = Gateway::new(config, Arc::new(PanickyHost(tx)), Handle::current()).unwrap();
        let addr = gateway.start().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut doomed, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/wa-ext-ws"), tcp)
                .await
                .unwrap();
        doomed
            .send(Message::text(r#"{"type":"auth","apiKey":"panic-key"}"#))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Delivery::Error(e))) => {
                assert_eq!(e.code, ErrorCode::ServerError);
                assert!(e.message.contains("validator bug"), "{}", e.message);
            }
            other => panic!("expected SERVER_ERROR, got {other:?}"),
        }
        assert!(matches!(
            doomed.next().await,
            None | Some(Err(_)) | Some(Ok(Message::Close(_)))
        ));
        for _ in 0..100 {
            if gateway.health().connections == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            gateway.health().connections,
            0,
            "the panicked connection is not counted"
        );
        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 9).await;
        next_of(&mut ws, "send-message").await;
        gateway.stop();
    }

    /// Cluster mode with Redis that does not answer: admissions never complete.
    struct HangingDirectory(std::sync::atomic::AtomicUsize);

    impl crate::state::directory::Directory for HangingDirectory {
        fn admit(
            &self,
            _: &Arc<crate::identity::Identity>,
            _: SessionInfo,
            _: usize,
        ) -> crate::state::directory::Admission {
            Box::pin(std::future::pending())
        }
        fn update(&self, _: &Arc<crate::identity::Identity>, _: SessionInfo) {}
        fn remove(&self, _: &Arc<crate::identity::Identity>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn first_incoming(&self, _: &str, _: &str) -> crate::state::directory::Admission {
            Box::pin(async { true })
        }
        fn record_changed(&self, _: &str, _: crate::state::records::StoredRecord, _: bool) {}
        fn late_result(&self, _: &str, _: crate::state::records::StoredRecord) {}
    }

    async fn local_sessions_become(gateway: &Gateway, n: usize) -> usize {
        for _ in 0..200 {
            if gateway.health().local_sessions == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gateway.health().local_sessions
    }

    /// An auth cancelled (auth deadline, stop()) while the cluster admits its session
    /// leaves no session behind: none that holds a maxSessionsPerKey slot, none that
    /// outlives stop() and start().
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_auth_cancelled_while_the_cluster_admits_it_leaves_no_session() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = Config {
            port: 0,
            host: Some("127.0.0.1".into()),
            log_events: false,
            auth_timeout: Duration::from_millis(300),
            max_sessions_per_key: 1,
            ..Config::default()
        };
        let gateway = Gateway::new(config, Arc::new(TestHost(tx)), Handle::current()).unwrap();
        let directory = Arc::new(HangingDirectory(Default::default()));
        assert!(gateway.shared.directory.set(directory.clone()).is_ok());
        let addr = gateway.start().unwrap();
        let auth = || async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut ws, _) =
                tokio_tungstenite::client_async(format!("ws://{addr}/wa-ext-ws"), tcp)
                    .await
                    .unwrap();
            ws.send(Message::text(r#"{"type":"auth","apiKey":"good-key-123"}"#))
                .await
                .unwrap();
            ws
        };
        // The auth deadline passes while the cluster admits the session.
        let mut ws = auth().await;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 1008),
            other => panic!("expected the auth timeout's close, got {other:?}"),
        }
        assert_eq!(
            local_sessions_become(&gateway, 0).await,
            0,
            "no session left by the timed-out auth"
        );
        // stop() while the cluster admits one.
        let _admitting = auth().await;
        local_sessions_become(&gateway, 1).await;
        gateway.stop();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Delivery::Stopped)) => break,
                Ok(Some(_)) => continue,
                other => panic!("expected Stopped, got {other:?}"),
            }
        }
        assert_eq!(gateway.health().local_sessions, 0, "none after stop()");
        gateway.start().unwrap();
        assert_eq!(gateway.health().local_sessions, 0, "none after start()");
        assert!(
            directory.0.load(Ordering::SeqCst) >= 2,
            "the directory is told each one left"
        );
        gateway.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_fails_pending_sends_and_frees_the_port() {
        let (gateway, addr, mut rx) = started().await;
        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 3).await;
        next_of(&mut ws, "send-message").await;
        gateway.stop();
        assert!(
            matches!(rx.recv().await, Some(Delivery::Rejected { call: 3, error: e }) if e.code == ErrorCode::GatewayShutdown)
        );
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(matches!(rx.recv().await, Some(Delivery::Stopped)));
        std::net::TcpListener::bind(addr).expect("port is free after stop");
        assert!(!gateway.health().running);
    }
}
