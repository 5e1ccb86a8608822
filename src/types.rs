//! The shapes that cross the boundary (napi checks each value against them; `index.js`
//! builds them in lib/options.js and lib/send-args.js), and their conversions into the
//! core's own types.

use std::path::PathBuf;
use std::time::Duration;

use napi_derive::napi;
use serde_json::Value;
use wa_gateway_core as core;

#[napi(string_enum = "lowercase")]
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendKind {
    Message,
    Image,
    Video,
    Document,
    /// `request()`: the type where `send` takes the recipient, the data (JSON text)
    /// where it takes the text.
    Command,
}

impl From<SendKind> for core::SendKind {
    fn from(kind: SendKind) -> Self {
        match kind {
            SendKind::Message => Self::Message,
            SendKind::Image => Self::Image,
            SendKind::Video => Self::Video,
            SendKind::Document => Self::Document,
            SendKind::Command => Self::Command,
        }
    }
}

#[napi(string_enum = "kebab-case")]
pub enum DeviceSelectionStrategy {
    RoundRobin,
    Random,
    LeastBusy,
}

impl From<DeviceSelectionStrategy> for core::Strategy {
    fn from(strategy: DeviceSelectionStrategy) -> Self {
        match strategy {
            DeviceSelectionStrategy::RoundRobin => Self::RoundRobin,
            DeviceSelectionStrategy::Random => Self::Random,
            DeviceSelectionStrategy::LeastBusy => Self::LeastBusy,
        }
    }
}

impl From<core::Strategy> for DeviceSelectionStrategy {
    fn from(strategy: core::Strategy) -> Self {
        match strategy {
            core::Strategy::RoundRobin => Self::RoundRobin,
            core::Strategy::Random => Self::Random,
            core::Strategy::LeastBusy => Self::LeastBusy,
        }
    }
}

#[napi(string_enum = "lowercase")]
pub enum Dialect {
    Compat,
    V1,
    Doc,
}

impl From<Dialect> for core::Dialect {
    fn from(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Compat => Self::Compat,
            Dialect::V1 => Self::V1,
            Dialect::Doc => Self::Doc,
        }
    }
}

impl From<core::Dialect> for Dialect {
    fn from(dialect: core::Dialect) -> Self {
        match dialect {
            core::Dialect::Compat => Self::Compat,
            core::Dialect::V1 => Self::V1,
            core::Dialect::Doc => Self::Doc,
        }
    }
}

/// Settings as `lib/options.js` passes them, already checked there.
#[napi(object)]
pub struct NativeConfig {
    pub port: u32,
    pub host: Option<String>,
    pub path: String,
    pub heartbeat_interval: f64,
    pub heartbeat_timeout: f64,
    pub request_timeout: f64,
    pub max_sessions_per_key: u32,
    pub device_selection_strategy: DeviceSelectionStrategy,
    pub auth_timeout: f64,
    pub max_payload: f64,
    pub max_media_bytes: f64,
    pub allowed_origins: Option<Vec<String>>,
    pub media_file_roots: Vec<String>,
    pub media_allow_private_hosts: bool,
    pub media_fetch_timeout: f64,
    pub dialect: Dialect,
    pub log_events: bool,
    pub trust_proxy: bool,
    /// `NODE_DEBUG=wa-gateway`: the core reports connections before auth.
    pub debug_log: Option<bool>,
    pub reuse_port: bool,
    /// The limits on hostile peers (README "new WhatsAppGateway(config)"); the core's defaults when absent.
    pub max_pending_auth: Option<u32>,
    pub max_pending_auth_per_ip: Option<u32>,
    pub max_pre_auth_payload: Option<f64>,
    pub max_queued_bytes: Option<f64>,
    /// 5.2: ms a send's status (and idempotency key) is remembered.
    pub idempotency_ttl: Option<f64>,
    /// Records of sends kept at most (`maxMessageStatuses`).
    pub max_message_statuses: Option<u32>,
    /// 5.2 `pacing`, checked by lib/delivery.js.
    pub pacing: Option<NativePacing>,
    pub max_queued_sends: Option<u32>,
    pub wait_for_device: Option<f64>,
    /// 5.3 cluster mode, checked by lib/options.js.
    pub cluster: Option<NativeCluster>,
    /// Durable mode: the store's file (`store`), checked by lib/options.js.
    pub store: Option<String>,
    /// `storeSync: 'full'`.
    pub store_full_sync: Option<bool>,
}

#[napi(object)]
pub struct NativeCluster {
    /// The URL; empty when `sentinel` is given.
    pub redis: String,
    pub node_id: Option<String>,
    pub key_prefix: String,
    pub lease_ms: f64,
    /// 6.3: the master found through Sentinel.
    pub sentinel: Option<NativeSentinel>,
    /// 6.3 `cluster.tls`, PEM as bytes.
    pub tls: Option<NativeTls>,
    /// 6.3 `cluster.secret`.
    pub secret: Option<String>,
}

#[napi(object)]
pub struct NativeSentinel {
    pub sentinels: Vec<String>,
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub db: u32,
}

#[napi(object)]
pub struct NativeTls {
    pub ca: Option<napi::bindgen_prelude::Buffer>,
    pub cert: Option<napi::bindgen_prelude::Buffer>,
    pub key: Option<napi::bindgen_prelude::Buffer>,
    pub servername: Option<String>,
    pub reject_unauthorized: bool,
}

impl From<NativeCluster> for core::ClusterConfig {
    fn from(c: NativeCluster) -> Self {
        let bytes = |b: Option<napi::bindgen_prelude::Buffer>| b.map(|b| b.to_vec());
        Self {
            redis_url: c.redis,
            node_id: c.node_id,
            key_prefix: c.key_prefix,
            lease: ms(c.lease_ms),
            sentinel: c.sentinel.map(|s| core::SentinelConfig {
                sentinels: s.sentinels,
                name: s.name,
                username: s.username,
                password: s.password,
                sentinel_username: s.sentinel_username,
                sentinel_password: s.sentinel_password,
                db: i64::from(s.db),
            }),
            tls: c.tls.map(|t| core::TlsConfig {
                ca: bytes(t.ca),
                cert: bytes(t.cert),
                key: bytes(t.key),
                servername: t.servername,
                reject_unauthorized: t.reject_unauthorized,
            }),
            secret: c.secret,
        }
    }
}

#[napi(object)]
pub struct NativePacing {
    pub min_interval_ms: f64,
    pub jitter_ms: f64,
    /// Absent: no limit.
    pub max_per_minute: Option<u32>,
}

impl From<NativePacing> for core::Pacing {
    fn from(p: NativePacing) -> Self {
        Self {
            min_interval: ms_or_zero(p.min_interval_ms),
            jitter: ms_or_zero(p.jitter_ms),
            max_per_minute: p.max_per_minute.map(|n| n as usize),
        }
    }
}

/// A duration that must be positive, from milliseconds (JavaScript has checked that it
/// is a finite number of at least 1). Never zero: a zero period panics a tokio interval
/// and a zero deadline expires at once. Capped far beyond any real use, so that adding it
/// to an instant cannot overflow.
pub fn ms(value: f64) -> Duration {
    const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let value = if value.is_nan() { 1.0 } else { value.max(1.0) };
    Duration::try_from_secs_f64(value / 1000.0).map_or(LONGEST, |d| d.min(LONGEST))
}

/// A duration where 0 means "off" (`minIntervalMs`, `jitterMs`, `waitForDevice`: README "new WhatsAppGateway(config)").
pub fn ms_or_zero(value: f64) -> Duration {
    if value > 0.0 {
        ms(value)
    } else {
        Duration::ZERO
    }
}

impl TryFrom<NativeConfig> for core::Config {
    type Error = napi::Error;

    fn try_from(c: NativeConfig) -> napi::Result<Self> {
        let defaults = core::Config::default();
        let port = u16::try_from(c.port).map_err(|_| invalid("port", "an integer up to 65535"))?;
        // lib/options.js checks these for the package; the class itself is reachable too.
        let durations = [
            ("heartbeatInterval", Some(c.heartbeat_interval)),
            ("heartbeatTimeout", Some(c.heartbeat_timeout)),
            ("requestTimeout", Some(c.request_timeout)),
            ("authTimeout", Some(c.auth_timeout)),
            ("mediaFetchTimeout", Some(c.media_fetch_timeout)),
            ("idempotencyTtl", c.idempotency_ttl),
            ("cluster.leaseMs", c.cluster.as_ref().map(|k| k.lease_ms)),
        ];
        for (name, value) in durations {
            if value.is_some_and(|v| !(v >= 1.0 && v.is_finite())) {
                return Err(invalid(name, "a finite number of milliseconds, at least 1"));
            }
        }
        let sizes = [
            ("maxPayload", Some(c.max_payload)),
            ("maxMediaBytes", Some(c.max_media_bytes)),
            ("maxPreAuthPayload", c.max_pre_auth_payload),
            ("maxQueuedBytes", c.max_queued_bytes),
        ];
        for (name, value) in sizes {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(invalid(name, "a positive finite number"));
            }
        }
        let off_or_more = [
            ("waitForDevice", c.wait_for_device),
            (
                "pacing.minIntervalMs",
                c.pacing.as_ref().map(|p| p.min_interval_ms),
            ),
            ("pacing.jitterMs", c.pacing.as_ref().map(|p| p.jitter_ms)),
        ];
        for (name, value) in off_or_more {
            if value.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
                return Err(invalid(name, "a finite number of milliseconds, 0 or more"));
            }
        }
        Ok(Self {
            port,
            host: c.host,
            path: c.path,
            heartbeat_interval: ms(c.heartbeat_interval),
            heartbeat_timeout: ms(c.heartbeat_timeout),
            request_timeout: ms(c.request_timeout),
            max_sessions_per_key: c.max_sessions_per_key as usize,
            strategy: c.device_selection_strategy.into(),
            auth_timeout: ms(c.auth_timeout),
            max_payload: c.max_payload as usize,
            allowed_origins: c.allowed_origins,
            media: core::MediaPolicy {
                max_bytes: c.max_media_bytes as usize,
                file_roots: c.media_file_roots.into_iter().map(PathBuf::from).collect(),
                allow_private_hosts: c.media_allow_private_hosts,
                fetch_timeout: ms(c.media_fetch_timeout),
            },
            dialect: c.dialect.into(),
            log_events: c.log_events,
            trust_proxy: c.trust_proxy,
            idempotency_ttl: c
                .idempotency_ttl
                .map_or(core::Config::default().idempotency_ttl, ms),
            max_message_statuses: c
                .max_message_statuses
                .map_or(defaults.max_message_statuses, |n| n as usize),
            pacing: c.pacing.map(Into::into),
            max_queued_sends: c
                .max_queued_sends
                .map_or(core::Config::default().max_queued_sends, |n| n as usize),
            wait_for_device: c.wait_for_device.map_or(Duration::ZERO, ms_or_zero),
            debug_log: c.debug_log.unwrap_or(false),
            reuse_port: c.reuse_port,
            max_pending_auth: c
                .max_pending_auth
                .map_or(defaults.max_pending_auth, |n| n as usize),
            max_pending_auth_per_ip: c
                .max_pending_auth_per_ip
                .map_or(defaults.max_pending_auth_per_ip, |n| n as usize),
            max_pre_auth_payload: c
                .max_pre_auth_payload
                .map_or(defaults.max_pre_auth_payload, |n| n as usize),
            max_queued_bytes: c
                .max_queued_bytes
                .map_or(defaults.max_queued_bytes, |n| n as usize),
            cluster: c.cluster.map(Into::into),
            store: c.store.map(|path| core::StoreConfig {
                path: PathBuf::from(path),
                full_sync: c.store_full_sync.unwrap_or(false),
            }),
        })
    }
}

/// A config value the core cannot take (the constructor throws it as a `TypeError`).
fn invalid(name: &str, what: &str) -> napi::Error {
    napi::Error::new(
        napi::Status::InvalidArg,
        format!("config.{name} must be {what}"),
    )
}

/// The optional parts of a send call, absent on a plain text send: the hot path
/// passes only positional values, since every property read is a napi call.
#[napi(object)]
pub struct SendOptions {
    pub media_source: Option<String>,
    /// Calls in flight with one media source share it under this number (see
    /// `media_shares`); the first passes `media_source` too.
    pub media_share: Option<u32>,
    pub document_name: Option<String>,
    pub strategy: Option<DeviceSelectionStrategy>,
    pub timeout: Option<f64>,
    /// 5.2: `'sent'` (the default), `'server'`, `'delivered'`, `'read'`, `'played'`.
    pub wait_for: Option<AckLevel>,
    /// 5.2: ms; 0 turns the config's off.
    pub wait_for_device: Option<f64>,
    pub idempotency_key: Option<String>,
    /// The call's `metadata` as JSON text (checked by lib/send-args.js).
    pub metadata: Option<String>,
    /// `target`: this session of the key and no other.
    pub target: Option<String>,
    /// A custom command is paced only with `paced: true`.
    pub paced: Option<bool>,
}

#[napi(string_enum = "lowercase")]
#[derive(Clone, Copy)]
pub enum AckLevel {
    Sent,
    Server,
    Delivered,
    Read,
    Played,
}

impl From<AckLevel> for core::Ack {
    fn from(ack: AckLevel) -> Self {
        match ack {
            AckLevel::Sent => Self::Sent,
            AckLevel::Server => Self::Server,
            AckLevel::Delivered => Self::Delivered,
            AckLevel::Read => Self::Read,
            AckLevel::Played => Self::Played,
        }
    }
}

/// The core's request for one call.
pub fn send_request(
    kind: SendKind,
    api_key: String,
    phone_number: String,
    text: String,
    options: Option<SendOptions>,
) -> core::SendRequest {
    let mut request = core::SendRequest::new(kind.into(), api_key, phone_number, text);
    if let Some(o) = options {
        request.document_name = o.document_name;
        request.strategy = o.strategy.map(Into::into);
        request.timeout = o.timeout.map(ms);
        request.wait_for = o.wait_for.map(Into::into);
        request.wait_for_device = o.wait_for_device.map(ms_or_zero);
        request.idempotency_key = o.idempotency_key;
        request.metadata = o.metadata;
        if let Some(target) = o.target {
            request.target = Some(target.into());
            request.pinned = true;
        }
        if kind == SendKind::Command {
            request.paced = o.paced == Some(true);
        }
    }
    request
}

/// What `getMessageStatus` looks a send up by, besides its request id.
#[napi(object)]
pub struct StatusSelector {
    pub api_key: String,
    pub idempotency_key: Option<String>,
    /// JSON text of the message id (a string nearly always).
    pub message_id: Option<String>,
}

impl StatusSelector {
    pub fn key(self) -> Option<(String, core::StatusKey)> {
        let by = match (self.idempotency_key, self.message_id) {
            (Some(key), _) => core::StatusKey::Idempotency(key),
            (None, Some(id)) => core::StatusKey::Message(serde_json::from_str(&id).ok()?),
            (None, None) => return None,
        };
        Some((self.api_key, by))
    }
}

/// An upgrade request as Node's `http.Server` parsed it.
#[napi(object)]
pub struct UpgradeRequest {
    pub method: String,
    pub url: String,
    /// `req.rawHeaders`: names and values alternating.
    pub raw_headers: Vec<String>,
    /// `req.socket.remoteAddress`.
    pub remote_address: String,
    /// The bytes the client sent after the request (the `head` of Node's `upgrade` event).
    pub head: napi::bindgen_prelude::Buffer,
}

/// `getHealth()`.
#[napi(object)]
pub struct Health {
    /// `'running'` or `'stopped'`.
    pub status: String,
    pub active_sessions: u32,
    /// Milliseconds since `start()`.
    pub uptime: f64,
    /// Milliseconds since the epoch.
    pub timestamp: f64,
    pub connections: u32,
    pub pending_requests: u32,
    /// Sends in pacing queues or waiting for a device.
    pub queued_sends: u32,
    pub port: Option<u32>,
    /// Sessions of this process (5.3; equal to `active_sessions` without a cluster).
    pub local_sessions: u32,
    pub cluster: Option<ClusterHealth>,
    /// Running, not draining, Redis connected in cluster mode (6.3, `/readyz`).
    pub ready: bool,
    /// The core answers (6.3, `/healthz`).
    pub live: bool,
}

/// `getHealth().cluster` (5.3).
#[napi(object)]
pub struct ClusterHealth {
    pub node_id: String,
    /// Live processes, this one included.
    pub nodes: u32,
    /// `'connected'` or `'reconnecting'`.
    pub redis: String,
}

impl From<core::Health> for Health {
    fn from(h: core::Health) -> Self {
        Self {
            status: if h.running { "running" } else { "stopped" }.to_string(),
            active_sessions: h.active_sessions as u32,
            uptime: h.uptime_ms as f64,
            timestamp: h.timestamp_ms as f64,
            connections: h.connections as u32,
            pending_requests: h.pending_requests as u32,
            queued_sends: h.queued_sends as u32,
            port: h.port.map(u32::from),
            local_sessions: h.local_sessions as u32,
            ready: h.ready,
            live: h.live,
            cluster: h.cluster.map(|c| ClusterHealth {
                node_id: c.node_id,
                nodes: c.nodes as u32,
                redis: if c.connected {
                    "connected"
                } else {
                    "reconnecting"
                }
                .to_string(),
            }),
        }
    }
}

/// One entry of `getActiveSessions()`.
#[napi(object)]
pub struct SessionInfo {
    pub session_id: String,
    pub status: String,
    pub ready: bool,
    pub whatsapp_logged_in: bool,
    pub device_active: bool,
    pub connected_at: f64,
    pub last_heartbeat: f64,
    /// `null` until the first status frame.
    pub last_status_update: Value,
    pub extension_version: String,
    pub browser: String,
    pub ip: String,
    pub user_id: Value,
    /// The custom command types it handles (listed at auth).
    pub commands: Vec<String>,
}

impl From<core::SessionInfo> for SessionInfo {
    fn from(s: core::SessionInfo) -> Self {
        Self {
            session_id: s.session_id.to_string(),
            status: s.status,
            ready: s.ready,
            whatsapp_logged_in: s.whatsapp_logged_in,
            device_active: s.device_active,
            connected_at: s.connected_at as f64,
            last_heartbeat: s.last_heartbeat as f64,
            last_status_update: s.last_status_update.map_or(Value::Null, Value::from),
            extension_version: s.extension_version,
            browser: s.browser,
            ip: s.ip,
            user_id: s.user_id,
            commands: s.commands,
        }
    }
}

/// One entry of `getAllSessions()`: a session and its API key.
#[napi(object)]
pub struct KeyedSession {
    pub api_key: String,
    pub session: SessionInfo,
}

/// What only the core counts, for `metrics()`.
#[napi(object)]
pub struct CoreMetrics {
    pub auth_failures: Vec<AuthFailureCount>,
    pub bytes_written: f64,
    pub media_fetch: FetchHistogram,
    pub status_evictions: f64,
}

#[napi(object)]
pub struct AuthFailureCount {
    pub reason: String,
    pub count: f64,
}

/// Upper bounds in seconds and the count in each bucket (not cumulative, `+Inf`
/// excluded), with the total count and sum.
#[napi(object)]
pub struct FetchHistogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<f64>,
    pub count: f64,
    pub sum: f64,
}

impl From<core::MetricsSnapshot> for CoreMetrics {
    fn from(m: core::MetricsSnapshot) -> Self {
        let h = m.media_fetch;
        Self {
            auth_failures: m
                .auth_failures
                .into_iter()
                .map(|(reason, count)| AuthFailureCount {
                    reason: reason.to_string(),
                    count: count as f64,
                })
                .collect(),
            bytes_written: m.bytes_written as f64,
            status_evictions: m.status_evictions as f64,
            media_fetch: FetchHistogram {
                bounds: h.bounds,
                counts: h.counts.into_iter().map(|c| c as f64).collect(),
                count: h.count as f64,
                sum: h.sum,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_never_zero_nor_truncated() {
        assert_eq!(ms(0.5), Duration::from_millis(1));
        assert_eq!(ms(0.0), Duration::from_millis(1));
        assert_eq!(ms(f64::NAN), Duration::from_millis(1));
        assert_eq!(ms(1.5), Duration::from_micros(1500));
        assert_eq!(ms(30000.0), Duration::from_secs(30));
        let huge = ms(f64::MAX);
        assert!(huge > Duration::from_secs(1 << 30));
        assert!(tokio::time::Instant::now().checked_add(huge).is_some());
        assert_eq!(ms(f64::INFINITY), huge);
    }
}
