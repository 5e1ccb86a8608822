//! What the core needs from whoever embeds it (the Node binding, or a test):
//! somewhere to deliver outcomes and events, and a way to ask if an API key is valid.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::registry::CallId;

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
#[derive(Serialize, Debug)]
#[serde(tag = "k")]
pub enum Delivery {
    #[serde(rename = "ok")]
    Resolved { id: CallId, r: SendResult },
    #[serde(rename = "fail")]
    Rejected { id: CallId, e: GatewayError },
    #[serde(rename = "log")]
    Log { e: LogEvent },
    #[serde(rename = "error")]
    Error { e: GatewayError },
    /// `stop()` has finished: sessions closed, port free.
    #[serde(rename = "stopped")]
    Stopped,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SendResult {
    pub success: bool,
    pub request_id: String,
    pub message_id: Value,
    pub timestamp: f64,
    pub device_info: DeviceInfo,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub session_id: String,
    pub extension_version: String,
    pub browser: String,
}
