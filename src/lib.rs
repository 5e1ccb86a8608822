//! The Node binding of the gateway core (`crates/gateway-core`): JavaScript values in
//! and out, the tokio runtime, and the wake-up that carries the core's deliveries to
//! JavaScript in batches. `index.js` wraps it into the v1 API. napi-rs generates
//! `native.d.ts` from the `#[napi]` items (`npm run native-types`; CI fails when it is stale).
//!
//! Modules depend one way (`tests/module_layers.rs`): `gateway` (the class) over `outbox`
//! (the two queues for JavaScript and when to wake it) over `deliveries` (a batch's
//! layout), `validations` (key checks), `args` and `options` (the config's names and
//! defaults, the error codes), over the leaves `js_wake` (waking the
//! JavaScript thread to drain something), `exception`, `types` and `media_shares`
//! (media sources shared by calls in flight), over `uv` (the libuv calls on Node's loop).

mod args;
mod deliveries;
mod exception;
mod gateway;
mod inline;
mod js_wake;
mod media_shares;
mod options;
mod outbox;
mod types;
mod uv;
mod validations;

pub use deliveries::{batch_layout, test_sample_batch_decoded, test_sample_batches, BatchLayout};
pub use gateway::{flush_calls, send_call, NativeGateway};
pub use options::{defaults, error_codes, option_names};
