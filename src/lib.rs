//! WhatsApp extension gateway: a WebSocket server on its own tokio runtime, exposed
//! to Node through napi. `binding` is the only module that knows about napi.

pub mod binding;
pub mod clock;
pub mod config;
pub mod connection;
pub mod deadlines;
pub mod error;
pub mod events;
pub mod frame_meter;
pub mod gateway;
pub mod handshake;
pub mod heartbeat;
pub mod host;
pub mod link;
pub mod listener;
pub mod media;
pub mod pending_auth;
pub mod protocol;
pub mod registry;
pub mod session;
pub mod supervise;
pub mod transport;
pub mod wire;

pub use config::Config;
pub use gateway::{Gateway, SendRequest};
pub use host::{AuthAnswer, Delivery, Host};
