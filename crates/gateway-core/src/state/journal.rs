//! What the send path tells durable mode's store (README "Durable mode"): the `store`
//! module implements it; `state` only sees this trait. Without `store` nothing here is
//! reached: `Shared::journal` is empty and each hook is one check of it.

use std::sync::Arc;

use super::link::SessionLink;
use crate::config::Strategy;
use crate::identity::Identity;
use crate::media::Media;
use crate::protocol::SendKind;

/// A send accepted and not yet written (a pacing queue, waiting for a device), as the
/// store keeps it until it leaves or settles; its record has the rest (key, metadata).
#[derive(Clone, Debug)]
pub struct QueuedSend {
    pub request_id: u128,
    pub api_key: String,
    pub kind: SendKind,
    pub phone_number: String,
    pub text: String,
    pub document_name: Option<String>,
    pub strategy: Option<Strategy>,
    /// Wall-clock ms at which its call times out.
    pub deadline_at: u64,
    pub media: Option<Media>,
}

pub trait Journal: Send + Sync + 'static {
    /// Commands of `link`'s room queue that have room: once their records say
    /// `written` in the store (sent to `identity`), `link.cleared` lets them go.
    fn clear(&self, link: Arc<SessionLink>, identity: Arc<Identity>, request_ids: Vec<u128>);
    /// `send` waits (pacing, a device) or may wait (room on its socket): kept until its
    /// record says it left or settled. Without `wake` it is written with whatever next
    /// wakes the store's writer (its command's leaving, mostly, in the same commit).
    fn queued(&self, send: QueuedSend, wake: bool);
    /// An incoming message id seen for the first time (de-duplication survives a restart).
    fn incoming(&self, api_key: &str, message_id: &str, seen_at: u64);
}
