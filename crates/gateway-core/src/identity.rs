//! Who is on the other end of a session and of a send call: plain data that events,
//! deliveries and the registry all name.

use std::sync::Arc;

use serde_json::Value;

use crate::config::Dialect;

/// The number the host gave a send call, echoed back when it settles.
pub type CallId = u64;

/// Calls a process runs for another process of its cluster (5.3) carry this bit: their
/// outcomes go back to the caller's process, not to this one's host.
pub const CLUSTER_CALL: CallId = 1 << 63;

/// Calls taken up from the store after a restart (durable mode) carry this bit; their
/// low 32 bits are the host's number for the call when the same gateway still holds
/// its promise (it stopped and started again), else 0.
pub const RECOVERED_CALL: CallId = 1 << 62;

/// Who a session is; fixed at auth.
#[derive(Debug)]
pub struct Identity {
    pub session_id: Arc<str>,
    pub api_key: Arc<str>,
    pub user_id: Value,
    pub ip: String,
    pub extension_version: String,
    pub browser: String,
    pub dialect: Dialect,
    /// The custom command types it handles (`auth` `data.commands`).
    pub commands: Commands,
}

/// The custom command types a session listed at auth; most list none. One pointer
/// (not a slice's two words): every session's identity carries it, and with a second
/// word its allocation moves up a malloc size class (176 to 192 bytes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[allow(clippy::box_collection)]
pub struct Commands(Option<Box<Vec<String>>>);

impl Commands {
    pub fn new(listed: Vec<String>) -> Self {
        Self((!listed.is_empty()).then(|| Box::new(listed)))
    }

    pub fn handles(&self, command: &str) -> bool {
        self.list().iter().any(|c| c == command)
    }

    pub fn list(&self) -> &[String] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
impl Identity {
    /// A session of `api_key` as unit tests need one.
    pub fn for_test(api_key: &str, session_id: &str) -> Self {
        Self {
            session_id: session_id.into(),
            api_key: api_key.into(),
            user_id: Value::Null,
            ip: "127.0.0.1".into(),
            extension_version: "1".into(),
            browser: "test".into(),
            dialect: Dialect::Compat,
            commands: Commands::default(),
        }
    }
}

/// The text form of a request id (a lowercase UUID), written into `buf` so that the
/// hot path allocates nothing.
pub fn request_id_text(id: u128, buf: &mut [u8; 36]) -> &str {
    uuid::Uuid::from_u128(id).hyphenated().encode_lower(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session keeps its identity in an `Arc`: 16 bytes of counts plus this. Up to
    /// 152 bytes it is a 176-byte glibc chunk; a slice's second word for `Commands`
    /// would make it 192 for every idle session.
    #[test]
    fn an_identity_stays_within_152_bytes() {
        let size = std::mem::size_of::<Identity>();
        assert!(size <= 152, "Identity grew to {size} bytes");
        assert_eq!(std::mem::size_of::<Commands>(), 8);
    }
}
