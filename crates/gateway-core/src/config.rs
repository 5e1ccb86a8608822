//! Gateway settings after the JavaScript side has checked their types.

use std::time::Duration;

use crate::media::MediaPolicy;

/// How a device is picked among the active sessions of one API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Random,
    /// Fewest sends queued plus written and unanswered (5.2).
    LeastBusy,
}

/// Which of the wire dialects (docs/extension-protocol.md, "Dialects") the gateway writes to extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Every reply a known client waits for: `auth-success` and `authenticated`,
    /// and both `<kind>DataUrl` and `dataUrl` in media commands.
    Compat,
    /// The v1 package and its mock client: `auth-success`, `imageDataUrl`...
    V1,
    /// v1's extension integration doc and the guide: `authenticated`, `dataUrl`.
    Doc,
}

/// 5.2 `pacing`: how sends to one device are spaced out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    pub min_interval: Duration,
    pub jitter: Duration,
    /// `None` is no limit.
    pub max_per_minute: Option<usize>,
}

/// 5.3 `cluster`: several processes sharing one Redis act as one gateway.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://`, with user, password and db.
    pub redis_url: String,
    /// `None`: unique per process (host, pid, random).
    pub node_id: Option<String>,
    pub key_prefix: String,
    /// How long a process that stops renewing its lease stays in the registry.
    pub lease: Duration,
    /// 6.3: the master found through Sentinel instead of `redis_url` (then empty).
    pub sentinel: Option<SentinelConfig>,
    /// 6.3 `cluster.tls`: a private CA, client certificates, the name checked.
    pub tls: Option<TlsConfig>,
    /// 6.3 `cluster.secret`: API keys stand in Redis as an HMAC-SHA-256 with it, else
    /// as a SHA-256 digest.
    pub secret: Option<String>,
}

impl ClusterConfig {
    /// `cluster.keyPrefix` when not given.
    pub const DEFAULT_KEY_PREFIX: &'static str = "wa-gw:";
    /// `cluster.leaseMs` when not given.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
}

/// 6.3 `cluster.redis: { sentinels, name, ... }`.
#[derive(Clone, Debug, Default)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<String>,
    /// The master's name in Sentinel.
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub db: i64,
}

/// 6.3 `cluster.tls` (PEM bytes).
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// Trusted roots instead of the bundled Mozilla list.
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// The name the server's certificate must carry (and SNI), instead of the host's.
    pub servername: Option<String>,
    /// `false` accepts any certificate (testing only).
    pub reject_unauthorized: bool,
}

/// Never prints the key or certificates.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.is_some())
            .field("servername", &self.servername)
            .field("reject_unauthorized", &self.reject_unauthorized)
            .finish()
    }
}

/// Durable mode (`store`): the file of an embedded SQLite database.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: std::path::PathBuf,
    /// `storeSync: 'full'`: each commit waits for the disk (power-loss durability);
    /// else a commit survives a crash of the process.
    pub full_sync: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    /// `None` binds every interface (IPv6 and IPv4 where the host has both).
    pub host: Option<String>,
    pub path: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub request_timeout: Duration,
    pub max_sessions_per_key: usize,
    pub strategy: Strategy,
    pub auth_timeout: Duration,
    pub max_payload: usize,
    /// `None` accepts any `Origin`.
    pub allowed_origins: Option<Vec<String>>,
    pub media: MediaPolicy,
    pub dialect: Dialect,
    /// Whether the host wants `onMessageLog` events; building them costs time per call.
    pub log_events: bool,
    /// Take the client's IP from `X-Real-IP` / `X-Forwarded-For`.
    pub trust_proxy: bool,
    /// How long `getMessageStatus` remembers a send (5.2 `idempotencyTtl`).
    pub idempotency_ttl: Duration,
    /// `maxMessageStatuses`: records kept at most (pending ones beyond it).
    pub max_message_statuses: usize,
    /// `None`: commands leave at once.
    pub pacing: Option<Pacing>,
    /// Sends waiting in one device's pacing queue, and sends of one API key waiting
    /// for a device.
    pub max_queued_sends: usize,
    /// How long a send waits for an active device of its key (zero: not at all).
    pub wait_for_device: Duration,
    /// `NODE_DEBUG=wa-gateway`: deliver lines about connections before auth (README "Seeing inside").
    pub debug_log: bool,
    /// `SO_REUSEPORT` on the standalone listener: several processes may serve one port.
    pub reuse_port: bool,
    /// Connections upgraded but not yet authenticated, in all.
    pub max_pending_auth: usize,
    /// The same per client address (loopback exempt without `trust_proxy`).
    pub max_pending_auth_per_ip: usize,
    /// Largest message before auth; `max_payload` applies after.
    pub max_pre_auth_payload: usize,
    /// Bytes of frames waiting for one session's socket.
    pub max_queued_bytes: usize,
    /// 5.3 cluster mode; `None` is one process on its own, with no Redis.
    pub cluster: Option<ClusterConfig>,
    /// Durable mode; `None` writes nothing to disk.
    pub store: Option<StoreConfig>,
}

impl Config {
    /// `heartbeatTimeout`, when not given, is this many `heartbeatInterval`s.
    pub const HEARTBEAT_TIMEOUT_INTERVALS: u32 = 2;
}

/// The defaults of the README's option table (the binding hands them to JavaScript).
impl Default for Config {
    fn default() -> Self {
        let heartbeat_interval = Duration::from_secs(30);
        Self {
            port: 3000,
            host: None,
            path: "/wa-ext-ws".into(),
            heartbeat_interval,
            heartbeat_timeout: heartbeat_interval * Self::HEARTBEAT_TIMEOUT_INTERVALS,
            request_timeout: Duration::from_secs(30),
            max_sessions_per_key: 10,
            strategy: Strategy::RoundRobin,
            auth_timeout: Duration::from_secs(10),
            max_payload: 1 << 20,
            allowed_origins: None,
            media: MediaPolicy {
                max_bytes: 10 << 20,
                file_roots: Vec::new(),
                allow_private_hosts: false,
                fetch_timeout: Duration::from_secs(30),
            },
            dialect: Dialect::Compat,
            log_events: true,
            trust_proxy: false,
            idempotency_ttl: Duration::from_secs(86_400),
            max_message_statuses: 200_000,
            pacing: None,
            max_queued_sends: 1000,
            wait_for_device: Duration::ZERO,
            debug_log: false,
            reuse_port: false,
            max_pending_auth: 1024,
            max_pending_auth_per_ip: 64,
            max_pre_auth_payload: 16 << 10,
            max_queued_bytes: 64 << 20,
            cluster: None,
            store: None,
        }
    }
}
