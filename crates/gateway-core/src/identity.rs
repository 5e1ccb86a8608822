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
///
/// Every idle session keeps one, so its texts (session id, address, extension version,
/// browser) share one allocation rather than four: each small string is a malloc chunk
/// of at least 32 bytes with its own header, which cost an idle session 160 bytes.
#[derive(Debug)]
pub struct Identity {
    pub api_key: Arc<str>,
    pub user_id: Value,
    /// The session id, ip, extension version and browser, one after another.
    texts: Box<str>,
    /// Where the first three of `texts` end.
    ends: [u32; 3],
    pub dialect: Dialect,
    /// The custom command types it handles (`auth` `data.commands`).
    pub commands: Commands,
}

/// An identity's texts, copied by `Identity::new` into one allocation; empty where unknown
/// (`Default`: all of them).
#[derive(Debug, Default)]
pub struct Texts<'a> {
    pub session_id: &'a str,
    pub ip: &'a str,
    pub extension_version: &'a str,
    pub browser: &'a str,
}

impl Identity {
    pub fn new(
        api_key: Arc<str>,
        user_id: Value,
        texts: Texts<'_>,
        dialect: Dialect,
        commands: Commands,
    ) -> Self {
        let parts = [
            texts.session_id,
            texts.ip,
            texts.extension_version,
            texts.browser,
        ];
        let mut all = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 3];
        for (i, part) in parts.iter().enumerate() {
            all.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                // Texts from an auth frame, which the pre-auth payload limit keeps far
                // below 4 GiB.
                *end = u32::try_from(all.len()).unwrap_or(u32::MAX);
            }
        }
        Self {
            api_key,
            user_id,
            texts: all.into_boxed_str(),
            ends,
            dialect,
            commands,
        }
    }

    fn text(&self, nth: usize) -> &str {
        let start = nth.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        let end = self.ends.get(nth).map_or(self.texts.len(), |&e| e as usize);
        self.texts.get(start..end).unwrap_or_default()
    }

    pub fn session_id(&self) -> &str {
        self.text(0)
    }

    pub fn ip(&self) -> &str {
        self.text(1)
    }

    pub fn extension_version(&self) -> &str {
        self.text(2)
    }

    pub fn browser(&self) -> &str {
        self.text(3)
    }
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
        let texts = Texts {
            session_id,
            ip: "127.0.0.1",
            extension_version: "1",
            browser: "test",
        };
        Self::new(
            api_key.into(),
            Value::Null,
            texts,
            Dialect::Compat,
            Commands::default(),
        )
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
    /// 88 bytes it is a 112-byte glibc chunk (it was 176, with four more chunks for its
    /// texts).
    #[test]
    fn an_identity_stays_within_88_bytes() {
        let size = std::mem::size_of::<Identity>();
        assert!(size <= 88, "Identity grew to {size} bytes");
        assert_eq!(std::mem::size_of::<Commands>(), 8);
    }

    #[test]
    fn its_texts_read_back_as_given_empty_ones_included() {
        let texts = Texts {
            session_id: "6f1c2a9e-0000-4000-8000-000000000001",
            ip: "",
            extension_version: "2.1.0-é",
            browser: "",
        };
        let who = Identity::new(
            "k".into(),
            Value::Null,
            texts,
            Dialect::Compat,
            Commands::default(),
        );
        assert_eq!(who.session_id(), "6f1c2a9e-0000-4000-8000-000000000001");
        assert_eq!(who.ip(), "");
        assert_eq!(who.extension_version(), "2.1.0-é");
        assert_eq!(who.browser(), "");
        let plain = Identity::for_test("k", "s1");
        assert_eq!(
            (
                plain.session_id(),
                plain.ip(),
                plain.extension_version(),
                plain.browser()
            ),
            ("s1", "127.0.0.1", "1", "test")
        );
    }
}
