//! The Node binding of the gateway core (`crates/gateway-core`): JavaScript values in
//! and out, the tokio runtime, and the one threadsafe function that carries the
//! core's deliveries to JavaScript in batches. `index.js` wraps it into the v1 API.

mod deliveries;
mod gateway;
mod types;
mod validations;

pub use deliveries::{batch_layout, BatchLayout};
pub use gateway::NativeGateway;
