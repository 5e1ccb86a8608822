//! What the core needs from whoever embeds it (the Node binding, or a test):
//! somewhere to deliver outcomes and events, and a way to ask if an API key is valid.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use serde_json::Value;

use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::identity::{CallId, Identity};

/// The validator's answer, already normalised by the host.
#[derive(Clone, Debug, Default)]
pub struct AuthAnswer {
    pub valid: bool,
    pub user_id: Value,
    pub reason: Option<String>,
}

pub type Validation = Pin<Box<dyn Future<Output = Result<AuthAnswer, String>> + Send>>;

pub trait Host: Send + Sync + 'static {
    /// Called from any thread, never while the core holds a lock; must not block.
    fn deliver(&self, delivery: Delivery);
    /// `Err` carries what went wrong in the validator (a throw, a rejection, a bad answer).
    fn validate(&self, api_key: String) -> Validation;
}

/// Everything that flows from the core to the host, in order.
#[derive(Debug)]
pub enum Delivery {
    /// The hot path, one per successful send: plain data that the host turns into
    /// the call's result without serializing it.
    Resolved(Resolved),
    Rejected {
        call: CallId,
        error: GatewayError,
    },
    Log(LogEvent),
    Error(GatewayError),
    /// `stop()` has finished: sessions closed, port free.
    Stopped,
}

/// The extension reported success: what the host needs to build the send's result
/// (`{ success, requestId, messageId, timestamp, deviceInfo }`) and its `*-sent` event.
#[derive(Debug)]
pub struct Resolved {
    pub id: CallId,
    pub request_id: u128,
    /// The extension's message id, or null.
    pub message_id: Value,
    /// The extension's timestamp, else when the result arrived (ms since the epoch).
    pub timestamp: f64,
    pub session: Arc<Identity>,
}
