//! The WhatsApp extension gateway without Node: a WebSocket server on a tokio runtime
//! that authenticates extensions, keeps their sessions, turns send calls into commands
//! and results into deliveries for its [`Host`]. The napi binding at the repository's
//! root is one host; tests and the benchmark's core driver are others.
//!
//! Modules depend one way, top to bottom:
//! - [`Gateway`] (`gateway`): the facade: start, stop, send, adopt, health.
//! - `net` (listener, handshake, connection, session, frame I/O) and `timers`
//!   (heartbeat sweep, request deadlines): tasks on the runtime.
//! - `state`: what those tasks share: the session registry, each session's link,
//!   the request lifecycle.
//! - leaves: `protocol`, `media`, `events`, `error`, `config`, `identity`, `host`, `clock`,
//!   `metrics`.

mod clock;
mod cluster;
mod config;
mod error;
mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod gateway;
mod host;
mod identity;
mod media;
mod metrics;
mod net;
mod protocol;
mod runtime;
mod state;
mod store;
mod supervise;
mod timers;

pub use config::{
    ClusterConfig, Config, Dialect, Pacing, SentinelConfig, StoreConfig, Strategy, TlsConfig,
};
pub use error::{ErrorCode, GatewayError, StartError};
pub use events::LogEvent;
pub use gateway::{Gateway, Health, SendRequest};
pub use host::{AuthAnswer, Delivery, Host, Resolved, Stage, Validation};
pub use identity::{request_id_text, CallId, Identity, Texts};
pub use media::{MediaPolicy, MediaText, WeakMediaText};
pub use metrics::{snapshot as metrics_snapshot, MetricsSnapshot};
pub use net::handshake::{parsed_request, Upgrade};
pub use protocol::custom::is_custom_type;
pub use protocol::delivery::Ack;
pub use protocol::SendKind;
pub use runtime::{build_inline_runtime, build_runtime, runtime_threads_here};
pub use state::link::lock;
pub use state::records::{StatusKey, StoredRecord};
pub use state::registry::SessionInfo;
pub use supervise::quietly;
