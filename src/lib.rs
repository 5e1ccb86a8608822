//! The Node binding of the gateway core (`crates/gateway-core`): JavaScript values in
//! and out, the tokio runtime, and the wake-up that carries the core's deliveries to
//! JavaScript in batches. `index.js` wraps it into the v1 API.

mod args;
mod deliveries;
mod gateway;
mod js_wake;
mod types;
mod validations;

pub use deliveries::{batch_layout, BatchLayout};
pub use gateway::NativeGateway;
