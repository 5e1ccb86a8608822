//! What processes of a cluster send each other through their inbox streams: a send
//! for a device another process holds, and the outcome of such a send.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Dialect;
use crate::error::GatewayError;
use crate::identity::{CallId, Commands, Identity, Texts};
use crate::protocol::SendKind;

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Envelope {
    Send(Box<Command>),
    Outcome(Box<Outcome>),
    /// A send the holder could not take (it drains, or the device is gone): the caller
    /// chooses again, once.
    Reroute(Box<Command>),
    /// A `message-ack` for a send the receiving process called: its event fires there.
    Ack(Box<AckEvent>),
    /// A `message-result` that came after the call settled, for a send the receiving
    /// process called: its record takes it, and a success fires `*-sent` there.
    Late(Box<LateResult>),
    /// `getMessageStatus` asks every process; each answers what it knows.
    StatusQuery {
        from: String,
        token: u64,
        request_id: String,
        /// A look-up by `(digest of the apiKey, messageId)` instead of by request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_message: Option<(String, Value)>,
    },
    StatusReply {
        token: u64,
        status: Option<Value>,
    },
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AckEvent {
    /// The API key's digest (`keys::Keys::digest`): keys never travel through Redis.
    pub key_digest: String,
    pub session_id: String,
    pub user_id: Value,
    pub request_id: String,
    pub phone_number: String,
    pub message_id: Value,
    pub ack: String,
}

/// The holder's record of a send it ran for the caller, after a late result moved it.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LateResult {
    /// The API key's digest (`keys::Keys::digest`): keys never travel through Redis.
    pub key_digest: String,
    pub record: crate::state::records::StoredRecord,
}

/// A send routed to the process holding its device. Media travels loaded: the calling
/// process fetched it under its own policy.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// The calling process, where the outcome goes.
    pub from: String,
    /// The call's number on the calling process.
    pub call: CallId,
    /// The API key's digest; the holder knows the key of its session.
    pub key_digest: String,
    pub session_id: String,
    pub kind: SendKind,
    pub phone_number: String,
    pub text: String,
    pub media: Option<CarriedMedia>,
    pub document_name: Option<String>,
    /// 5.2 `waitFor`, by name.
    pub wait_for: Option<String>,
    /// The call's timeout (errors name it); it counts from the call.
    pub timeout_ms: u64,
    /// Chosen by the caller, so that its own errors name the request too.
    pub request_id: String,
    /// Routed a second time after a `Reroute`: the holder takes it whatever happens.
    pub rerouted: bool,
    /// The caller's `target`: `session_id` and no other session may take it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// A custom command that pacing does not space (`paced` not asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpaced: bool,
    /// Past this (ms since the epoch) the caller has given up: not worth sending.
    pub expires_at: u64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CarriedMedia {
    pub data_url: String,
    pub mime_type: String,
    pub file_name: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub call: CallId,
    pub result: Result<Success, GatewayError>,
}

/// What the calling process needs to resolve the call and fire its `*-sent` event.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Success {
    pub request_id: String,
    pub message_id: Value,
    pub timestamp: f64,
    pub ack: String,
    /// `host::Stage` as its code.
    pub stage: u32,
    pub device: Device,
}

/// The device that answered, as events and results name it (the caller knows its key).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub session_id: String,
    pub user_id: Value,
    pub ip: String,
    pub extension_version: String,
    pub browser: String,
    /// The custom command types it handles (listings carry them: a caller chooses
    /// among the devices that handle its command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

impl Device {
    pub fn of(who: &Identity) -> Self {
        Self {
            session_id: who.session_id().to_string(),
            user_id: who.user_id.clone(),
            ip: who.ip().to_string(),
            extension_version: who.extension_version().to_string(),
            browser: who.browser().to_string(),
            // Results and events name a device; only choosing one needs its commands.
            commands: Vec::new(),
        }
    }

    /// The device as this process names it in results and events.
    pub fn into_identity(self, api_key: std::sync::Arc<str>, dialect: Dialect) -> Identity {
        let texts = Texts {
            session_id: &self.session_id,
            ip: &self.ip,
            extension_version: &self.extension_version,
            browser: &self.browser,
        };
        Identity::new(
            api_key,
            self.user_id,
            texts,
            dialect,
            Commands::new(self.commands),
        )
    }
}

/// A session as the cluster's registry lists it: its `info` as JSON, in its node's
/// `listings:<nodeId>` hash under the API key's digest (see `keys`).
#[derive(Debug, Clone)]
pub struct Listing {
    pub node_id: String,
    pub api_key_digest: String,
    pub info: crate::state::registry::SessionInfo,
}
