//! Errors as the JavaScript side sees them: a stable `code`, a human message and
//! structured `details`. The binding turns these into `Error` instances.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Every code of the README's "Errors" that the Rust core can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    NoActiveDevice,
    RequestTimeout,
    ConnectionLost,
    ExtensionError,
    GatewayShutdown,
    FetchError,
    FileTooLarge,
    MediaNotAllowed,
    AuthenticationFailed,
    MaxSessionsExceeded,
    CallbackError,
    ServerError,
    /// 5.2: a pacing queue, or the sends waiting for a device, are full.
    QueueFull,
    Backpressure,
    /// 5.3: the send needs another process and Redis cannot be reached.
    ClusterUnavailable,
    /// An `idempotencyKey` already used for another message.
    IdempotencyKeyReused,
    /// Durable mode: another gateway has the `store` open.
    StoreLocked,
    /// Active devices of the key are there, but none handles the custom command.
    UnsupportedCommand,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        Self {
            code,
            message: message.into(),
            details,
        }
    }

    pub fn validation(field: &str, value: &str, message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::ValidationError,
            message,
            json!({ "field": field, "value": value }),
        )
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}

/// Why `start()` failed; the host shows `code()` as the error's `code`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Gateway is already running")]
    AlreadyRunning,
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    /// Durable mode: the store could not be opened (`STORE_LOCKED`, or why).
    #[error("{}", .0.message)]
    Store(GatewayError),
}

impl StartError {
    /// The errno name for a failed bind (`EADDRINUSE`, `EACCES`...), as Node's own
    /// servers report it.
    pub fn code(&self) -> &'static str {
        use std::io::ErrorKind::*;
        match self {
            Self::AlreadyRunning => "ALREADY_RUNNING",
            Self::Store(e) if e.code == ErrorCode::StoreLocked => "STORE_LOCKED",
            Self::Store(_) => "SERVER_ERROR",
            Self::Bind { source, .. } => match source.kind() {
                AddrInUse => "EADDRINUSE",
                AddrNotAvailable => "EADDRNOTAVAIL",
                PermissionDenied => "EACCES",
                _ => "SERVER_ERROR",
            },
        }
    }
}

/// API keys are secrets: anything the gateway puts in an error shows the first
/// min(8, half its length) characters, so that a short key keeps most of itself
/// hidden (a 9-character key shows 4). `lib/errors.js` masks the same way.
pub fn mask_api_key(api_key: &str) -> String {
    let shown = (api_key.chars().count() / 2).min(8);
    match api_key.char_indices().nth(shown) {
        Some((cut, _)) if shown > 0 => format!("{}***", &api_key[..cut]),
        _ => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_spec_names() {
        let e = GatewayError::new(ErrorCode::MediaNotAllowed, "no", Value::Null);
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains("\"MEDIA_NOT_ALLOWED\""), "{s}");
    }

    #[test]
    fn masking_shows_at_most_eight_chars_and_at_most_half() {
        assert_eq!(mask_api_key("key-abc123456789"), "key-abc1***");
        assert_eq!(mask_api_key("key-abc123456"), "key-ab***");
        assert_eq!(mask_api_key("123456789"), "1234***");
        assert_eq!(mask_api_key("ab"), "a***");
        assert_eq!(mask_api_key("a"), "***");
        assert_eq!(mask_api_key(""), "***");
    }
}
