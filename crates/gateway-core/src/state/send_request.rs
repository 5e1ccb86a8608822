//! One send call as the host hands it over, validated by the JavaScript side.

use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

use crate::config::Strategy;
use crate::identity::Identity;
use crate::protocol::delivery::Ack;
use crate::protocol::SendKind;

#[derive(Debug)]
pub struct SendRequest {
    pub kind: SendKind,
    pub api_key: String,
    /// Who it is for: a phone number or a chat id (`protocol::Recipient`); a custom
    /// command's type.
    pub phone_number: String,
    /// The message of `sendMessage`, the caption of media sends; a custom command's
    /// data as JSON text.
    pub text: String,
    /// The caller's media source, shared by the calls in flight that name the same
    /// one (the host's `mediaShare`).
    pub media_source: Option<crate::media::MediaText>,
    pub document_name: Option<String>,
    pub strategy: Option<Strategy>,
    pub timeout: Option<Duration>,
    /// `waitFor`; `None` is `'sent'`.
    pub wait_for: Option<Ack>,
    /// `waitForDevice`; `None` is the config's.
    pub wait_for_device: Option<Duration>,
    /// When the call was made, for sends dispatched later (media): timeouts count
    /// from it. `Gateway::send` sets it.
    pub called_at: Option<std::time::Instant>,
    /// The session to use: the caller's `target` (`pinned`), or in cluster mode the
    /// one another process chose for this send (another active one of the key will
    /// do if it is gone).
    pub target: Option<std::sync::Arc<str>>,
    /// The caller named `target`: that session and no other.
    pub pinned: bool,
    /// Whether 5.2 pacing spaces it: sends always, custom commands only when asked.
    pub paced: bool,
    /// The request id given before dispatch: by the calling process of a send routed
    /// here, or with the record of a call that has one from the start.
    pub request_id: Option<u128>,
    /// `idempotencyKey` (1 to 200 characters).
    pub idempotency_key: Option<String>,
    /// The caller's `metadata` as JSON text (checked, and for size, by the host).
    pub metadata: Option<String>,
    /// Cluster mode: this call holds its key's record in Redis, which must say
    /// `placed` before the command may be written anywhere (docs/delivery-records.md).
    pub needs_placing: bool,
    /// Cluster mode: routed once already (its holder could not take it, or drains).
    pub rerouted: bool,
}

impl SendRequest {
    /// A send with none of the optional parts: no media, the config's strategy,
    /// timeout and device wait, resolved on the extension's result.
    pub fn new(kind: SendKind, api_key: String, phone_number: String, text: String) -> Self {
        Self {
            kind,
            api_key,
            phone_number,
            text,
            media_source: None,
            document_name: None,
            strategy: None,
            timeout: None,
            wait_for: None,
            wait_for_device: None,
            called_at: None,
            target: None,
            pinned: false,
            paced: kind != SendKind::Command,
            request_id: None,
            idempotency_key: None,
            metadata: None,
            needs_placing: false,
            rerouted: false,
        }
    }

    /// What it needs of a device besides being an active one of its key.
    pub fn wants(&self) -> Wants<'_> {
        Wants {
            session: self.target.as_deref().filter(|_| self.pinned),
            command: (self.kind == SendKind::Command).then_some(self.phone_number.as_str()),
        }
    }

    /// Whether the call gets its record at once (see docs/delivery-records.md): a
    /// duplicate must find it in flight, and its events carry its metadata.
    pub fn has_record_from_the_start(&self) -> bool {
        self.idempotency_key.is_some() || self.metadata.is_some()
    }

    /// What makes two calls with one `idempotencyKey` the same message: kind,
    /// recipient, text or caption, and media source. XXH3 is a fixed function, so
    /// every process (and a later restart) computes the same value.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Xxh3::new();
        let kind = [self.kind as u8];
        let media = self.media_source.as_deref();
        let parts: [&[u8]; 4] = [
            &kind,
            self.phone_number.as_bytes(),
            self.text.as_bytes(),
            media.unwrap_or("").as_bytes(),
        ];
        for part in parts {
            hash.update(&(part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(&[u8::from(media.is_some())]);
        hash.digest()
    }
}

/// What a send needs of a device besides being an active device of its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants<'a> {
    /// `target`: this session and no other.
    pub session: Option<&'a str>,
    /// A custom command: a device that listed this type.
    pub command: Option<&'a str>,
}

impl Wants<'_> {
    /// Whether `who` handles the command, if any (whichever session it is).
    pub fn handled_by(&self, who: &Identity) -> bool {
        self.command.is_none_or(|c| who.commands.handles(c))
    }

    /// Whether `who` is the target, if any, and handles the command, if any.
    pub fn accepts(&self, who: &Identity) -> bool {
        self.session.is_none_or(|s| who.session_id() == s) && self.handled_by(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(phone: &str, text: &str) -> SendRequest {
        SendRequest::new(SendKind::Message, "k".into(), phone.into(), text.into())
    }

    #[test]
    fn fingerprints_tell_messages_apart_and_are_stable() {
        let base = text("+1555", "hi").fingerprint();
        assert_eq!(base, text("+1555", "hi").fingerprint());
        assert_ne!(base, text("+1556", "hi").fingerprint());
        assert_ne!(base, text("+1555", "ho").fingerprint());
        // Boundaries between fields count.
        assert_ne!(
            text("+15", "55hi").fingerprint(),
            text("+1555", "hi").fingerprint()
        );
        let mut image = text("+1555", "hi");
        image.kind = SendKind::Image;
        assert_ne!(base, image.fingerprint());
        image.media_source = Some("data:image/png;base64,AA==".into());
        let with_media = image.fingerprint();
        image.media_source = Some("data:image/png;base64,AB==".into());
        assert_ne!(with_media, image.fingerprint());
        // Options that do not change the message do not change it.
        let mut later = text("+1555", "hi");
        later.timeout = Some(Duration::from_secs(5));
        later.metadata = Some("1".into());
        assert_eq!(base, later.fingerprint());
        // The same in every process and every build (a record in Redis, or on disk,
        // is compared with a fingerprint computed later): a known value.
        assert_eq!(text("+1", "x").fingerprint(), 0x457e_b373_9504_0323);
    }
}
