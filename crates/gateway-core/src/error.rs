//! Errors as the JavaScript side sees them: a stable `code`, a human message and
//! structured `details`. The binding turns these into `Error` instances.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Every `code` the JavaScript API can show (README "Errors"; `ERROR_CODES` is built from
/// `ALL`), whether the core, the binding or the JavaScript side raises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AuthenticationFailed,
    NoActiveDevice,
    RequestTimeout,
    ConnectionLost,
    ValidationError,
    ExtensionError,
    /// v1's code, kept for v1 code: the gateway reports `VALIDATION_ERROR` instead.
    InvalidApiKey,
    MaxSessionsExceeded,
    /// v1's code, kept for v1 code: the gateway reports `VALIDATION_ERROR` instead.
    InvalidPhoneNumber,
    /// v1's code, kept for v1 code: the gateway reports `VALIDATION_ERROR` instead.
    InvalidData,
    FetchError,
    FileTooLarge,
    GatewayShutdown,
    MediaNotAllowed,
    CallbackError,
    ServerError,
    /// 5.2: a pacing queue, or the sends waiting for a device, are full.
    QueueFull,
    Backpressure,
    /// 5.3: the send needs another process and Redis cannot be reached.
    ClusterUnavailable,
    /// Error frames to extensions: a frame that is not a valid message.
    InvalidMessage,
    /// Error frames to extensions: a `type` the gateway does not know.
    UnknownMessageType,
    /// Error frames to extensions: a frame other than auth before auth.
    NotAuthenticated,
    /// An `idempotencyKey` already used for another message.
    IdempotencyKeyReused,
    /// Durable mode: another gateway has the `store` open.
    StoreLocked,
    /// Active devices of the key are there, but none handles the custom command.
    UnsupportedCommand,
    /// `start()` on a running gateway.
    AlreadyRunning,
    /// `start()` cannot bind: errno names, as Node's own servers report them.
    #[serde(rename = "EADDRINUSE")]
    AddrInUse,
    #[serde(rename = "EADDRNOTAVAIL")]
    AddrNotAvailable,
    #[serde(rename = "EACCES")]
    Access,
}

impl ErrorCode {
    /// Every code, in the order of `ERROR_CODES`' keys.
    pub const ALL: [ErrorCode; 29] = {
        use ErrorCode::*;
        [
            AuthenticationFailed,
            NoActiveDevice,
            RequestTimeout,
            ConnectionLost,
            ValidationError,
            ExtensionError,
            InvalidApiKey,
            MaxSessionsExceeded,
            InvalidPhoneNumber,
            InvalidData,
            FetchError,
            FileTooLarge,
            GatewayShutdown,
            MediaNotAllowed,
            CallbackError,
            ServerError,
            QueueFull,
            Backpressure,
            ClusterUnavailable,
            InvalidMessage,
            UnknownMessageType,
            NotAuthenticated,
            IdempotencyKeyReused,
            StoreLocked,
            UnsupportedCommand,
            AlreadyRunning,
            AddrInUse,
            AddrNotAvailable,
            Access,
        ]
    };

    /// The code as JavaScript and the wire spell it.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            AuthenticationFailed => "AUTHENTICATION_FAILED",
            NoActiveDevice => "NO_ACTIVE_DEVICE",
            RequestTimeout => "REQUEST_TIMEOUT",
            ConnectionLost => "CONNECTION_LOST",
            ValidationError => "VALIDATION_ERROR",
            ExtensionError => "EXTENSION_ERROR",
            InvalidApiKey => "INVALID_API_KEY",
            MaxSessionsExceeded => "MAX_SESSIONS_EXCEEDED",
            InvalidPhoneNumber => "INVALID_PHONE_NUMBER",
            InvalidData => "INVALID_DATA",
            FetchError => "FETCH_ERROR",
            FileTooLarge => "FILE_TOO_LARGE",
            GatewayShutdown => "GATEWAY_SHUTDOWN",
            MediaNotAllowed => "MEDIA_NOT_ALLOWED",
            CallbackError => "CALLBACK_ERROR",
            ServerError => "SERVER_ERROR",
            QueueFull => "QUEUE_FULL",
            Backpressure => "BACKPRESSURE",
            ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            InvalidMessage => "INVALID_MESSAGE",
            UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            NotAuthenticated => "NOT_AUTHENTICATED",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            StoreLocked => "STORE_LOCKED",
            UnsupportedCommand => "UNSUPPORTED_COMMAND",
            AlreadyRunning => "ALREADY_RUNNING",
            AddrInUse => "EADDRINUSE",
            AddrNotAvailable => "EADDRNOTAVAIL",
            Access => "EACCES",
        }
    }
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
        use std::io::ErrorKind;
        let code = match self {
            Self::AlreadyRunning => ErrorCode::AlreadyRunning,
            Self::Store(e) if e.code == ErrorCode::StoreLocked => ErrorCode::StoreLocked,
            Self::Store(_) => ErrorCode::ServerError,
            Self::Bind { source, .. } => match source.kind() {
                ErrorKind::AddrInUse => ErrorCode::AddrInUse,
                ErrorKind::AddrNotAvailable => ErrorCode::AddrNotAvailable,
                ErrorKind::PermissionDenied => ErrorCode::Access,
                _ => ErrorCode::ServerError,
            },
        };
        code.as_str()
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
    fn every_code_is_listed_once_and_spelt_as_serde_writes_it() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} twice");
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                Value::String(code.as_str().into())
            );
        }
        // A code missing from ALL fails to compile here (no wildcard arm).
        let listed = |code: ErrorCode| match code {
            ErrorCode::AuthenticationFailed
            | ErrorCode::NoActiveDevice
            | ErrorCode::RequestTimeout
            | ErrorCode::ConnectionLost
            | ErrorCode::ValidationError
            | ErrorCode::ExtensionError
            | ErrorCode::InvalidApiKey
            | ErrorCode::MaxSessionsExceeded
            | ErrorCode::InvalidPhoneNumber
            | ErrorCode::InvalidData
            | ErrorCode::FetchError
            | ErrorCode::FileTooLarge
            | ErrorCode::GatewayShutdown
            | ErrorCode::MediaNotAllowed
            | ErrorCode::CallbackError
            | ErrorCode::ServerError
            | ErrorCode::QueueFull
            | ErrorCode::Backpressure
            | ErrorCode::ClusterUnavailable
            | ErrorCode::InvalidMessage
            | ErrorCode::UnknownMessageType
            | ErrorCode::NotAuthenticated
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::StoreLocked
            | ErrorCode::UnsupportedCommand
            | ErrorCode::AlreadyRunning
            | ErrorCode::AddrInUse
            | ErrorCode::AddrNotAvailable
            | ErrorCode::Access => ErrorCode::ALL.contains(&code),
        };
        assert!(ErrorCode::ALL.into_iter().all(listed));
        assert_eq!(seen.len(), ErrorCode::ALL.len());
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
