//! What JavaScript reads here instead of repeating it: the name of every option of the
//! constructor's config (README "new WhatsAppGateway(config)"), their defaults (the
//! core's `Config::default()`), and every error code (`ErrorCode::ALL`, README
//! "Errors"). lib/known-options.js, lib/options.js and lib/errors.js are built from them;
//! a test holds the README's table and index.d.ts to them.

use napi_derive::napi;
use wa_gateway_core as core;

use crate::types::{DeviceSelectionStrategy, Dialect};

/// The constructor's config. Order matters a little: of two names equally close to a
/// typo, lib/warnings.js suggests the first.
const CONFIG: &[&str] = &[
    "port",
    "host",
    "path",
    "server",
    "validateApiKey",
    "onMessageLog",
    "onError",
    "heartbeatInterval",
    "heartbeatTimeout",
    "requestTimeout",
    "maxSessionsPerKey",
    "deviceSelectionStrategy",
    "authTimeout",
    "maxPayload",
    "maxMediaBytes",
    "allowedOrigins",
    "mediaFileRoots",
    "mediaAllowPrivateHosts",
    "mediaFetchTimeout",
    "trustProxy",
    "reusePort",
    "cluster",
    "dialect",
    "maxPendingAuth",
    "maxPendingAuthPerIp",
    "maxPreAuthPayload",
    "maxQueuedBytes",
    "pacing",
    "maxQueuedSends",
    "waitForDevice",
    "idempotencyTtl",
    "logger",
    "maxMessageStatuses",
    "store",
    "storeSync",
];

/// Option objects inside the config, by their path in it.
const NESTED: &[(&str, &[&str])] = &[
    ("pacing", &["minIntervalMs", "jitterMs", "maxPerMinute"]),
    (
        "cluster",
        &["redis", "nodeId", "keyPrefix", "leaseMs", "tls", "secret"],
    ),
    (
        "cluster.redis",
        &[
            "sentinels",
            "name",
            "username",
            "password",
            "sentinelUsername",
            "sentinelPassword",
            "db",
        ],
    ),
    (
        "cluster.tls",
        &["ca", "cert", "key", "servername", "rejectUnauthorized"],
    ),
];

/// One option object inside the config.
#[napi(object)]
pub struct NestedOptions {
    /// Where it is in the config: `'pacing'`, `'cluster.tls'`...
    pub path: String,
    pub names: Vec<String>,
}

/// Every key the constructor's config takes, at every depth.
#[napi(object)]
pub struct OptionNames {
    pub config: Vec<String>,
    pub nested: Vec<NestedOptions>,
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[napi]
pub fn option_names() -> OptionNames {
    OptionNames {
        config: strings(CONFIG),
        nested: NESTED
            .iter()
            .map(|(path, names)| NestedOptions {
                path: path.to_string(),
                names: strings(names),
            })
            .collect(),
    }
}

/// `pacing`'s defaults besides `minIntervalMs` (which it needs).
#[napi(object)]
pub struct PacingDefaults {
    pub jitter_ms: f64,
}

/// `cluster`'s defaults besides `redis` (which it needs).
#[napi(object)]
pub struct ClusterDefaults {
    pub key_prefix: String,
    pub lease_ms: f64,
}

/// The default of each option that has a value when not given (durations in ms, sizes
/// in bytes). The others are off, none or required.
#[napi(object)]
pub struct Defaults {
    pub port: u32,
    pub path: String,
    pub heartbeat_interval: f64,
    /// Not given, `heartbeatTimeout` is this many `heartbeatInterval`s.
    pub heartbeat_timeout_intervals: u32,
    pub request_timeout: f64,
    pub max_sessions_per_key: u32,
    pub device_selection_strategy: DeviceSelectionStrategy,
    pub auth_timeout: f64,
    pub max_payload: f64,
    pub max_media_bytes: f64,
    pub media_allow_private_hosts: bool,
    pub media_fetch_timeout: f64,
    pub dialect: Dialect,
    pub trust_proxy: bool,
    pub reuse_port: bool,
    pub idempotency_ttl: f64,
    pub max_message_statuses: u32,
    pub max_queued_sends: u32,
    pub wait_for_device: f64,
    pub max_pending_auth: u32,
    pub max_pending_auth_per_ip: u32,
    pub max_pre_auth_payload: u32,
    pub max_queued_bytes: f64,
    /// `'normal'`: a commit survives a crash of the process (`'full'`: also a power loss).
    pub store_sync: String,
    pub pacing: PacingDefaults,
    pub cluster: ClusterDefaults,
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_millis() as f64
}

/// Counts the core keeps as `usize`; each default fits a u32 (the unit test says so).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[napi]
pub fn defaults() -> Defaults {
    let d = core::Config::default();
    Defaults {
        port: u32::from(d.port),
        path: d.path,
        heartbeat_interval: ms(d.heartbeat_interval),
        heartbeat_timeout_intervals: core::Config::HEARTBEAT_TIMEOUT_INTERVALS,
        request_timeout: ms(d.request_timeout),
        max_sessions_per_key: count(d.max_sessions_per_key),
        device_selection_strategy: d.strategy.into(),
        auth_timeout: ms(d.auth_timeout),
        max_payload: d.max_payload as f64,
        max_media_bytes: d.media.max_bytes as f64,
        media_allow_private_hosts: d.media.allow_private_hosts,
        media_fetch_timeout: ms(d.media.fetch_timeout),
        dialect: d.dialect.into(),
        trust_proxy: d.trust_proxy,
        reuse_port: d.reuse_port,
        idempotency_ttl: ms(d.idempotency_ttl),
        max_message_statuses: count(d.max_message_statuses),
        max_queued_sends: count(d.max_queued_sends),
        wait_for_device: ms(d.wait_for_device),
        max_pending_auth: count(d.max_pending_auth),
        max_pending_auth_per_ip: count(d.max_pending_auth_per_ip),
        max_pre_auth_payload: count(d.max_pre_auth_payload),
        max_queued_bytes: d.max_queued_bytes as f64,
        store_sync: "normal".into(),
        pacing: PacingDefaults { jitter_ms: 0.0 },
        cluster: ClusterDefaults {
            key_prefix: core::ClusterConfig::DEFAULT_KEY_PREFIX.into(),
            lease_ms: ms(core::ClusterConfig::DEFAULT_LEASE),
        },
    }
}

/// Every `code` an error can carry, as `ERROR_CODES` lists them.
#[napi]
pub fn error_codes() -> Vec<String> {
    core::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counted_default_fits_a_u32() {
        let d = core::Config::default();
        for n in [
            d.max_sessions_per_key,
            d.max_message_statuses,
            d.max_queued_sends,
            d.max_pending_auth,
            d.max_pending_auth_per_ip,
            d.max_pre_auth_payload,
        ] {
            assert!(u32::try_from(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn nested_option_objects_are_options_of_the_config_or_of_each_other() {
        for (path, _) in NESTED {
            let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
            let holder = if parent.is_empty() {
                CONFIG
            } else {
                NESTED.iter().find(|(p, _)| *p == parent).expect("parent").1
            };
            assert!(holder.contains(&name), "{path}");
        }
    }
}
