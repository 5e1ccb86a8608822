//! `onMessageLog` events (README "Events").

use serde::Serialize;
use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::error::GatewayError;
use crate::identity::{Identity, Texts};
use crate::protocol::delivery::Ack;
use crate::protocol::{Recipient, SendKind, StatusFrame};

/// The event of a successful send of this kind (a custom command's success or
/// failure: `command-result`, README "Beyond the four commands").
pub fn sent_event(kind: SendKind) -> &'static str {
    match kind {
        SendKind::Message => "message-sent",
        SendKind::Image => "image-sent",
        SendKind::Video => "video-sent",
        SendKind::Document => "document-sent",
        SendKind::Command => "command-result",
    }
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub api_key: String,
    pub session_id: String,
    pub user_id: Value,
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// The fields of 5.2's events and of sends to chats and custom commands, boxed:
    /// most events do without them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Box<DeliveryFields>>,
}

#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFields {
    /// A send to a chat names it here instead of `phoneNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// A custom command's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<&'static str>,
    /// An incoming message, as the extension sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The call's `metadata`, on the events of a send that had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// A `*-sent` for a result that came after its call had settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late: Option<bool>,
    /// An outcome of a send taken up again after a restart (durable mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

impl LogEvent {
    fn about(kind: &'static str, who: &Identity) -> Self {
        Self {
            kind,
            api_key: who.api_key.to_string(),
            session_id: who.session_id().to_string(),
            user_id: who.user_id.clone(),
            timestamp: now_ms(),
            phone_number: None,
            request_id: None,
            message_id: None,
            status: None,
            error: None,
            details: None,
            delivery: None,
        }
    }

    pub fn session_connected(who: &Identity) -> Self {
        let details = json!({ "ip": who.ip(), "extensionVersion": who.extension_version(), "browser": who.browser() });
        Self {
            details: Some(details),
            ..Self::about("session-connected", who)
        }
    }

    pub fn session_status(who: &Identity, status: &StatusFrame) -> Self {
        let text = status.text.clone().unwrap_or_else(|| {
            if status.whatsapp_logged_in {
                "WhatsApp Web logged in"
            } else {
                "WhatsApp Web not logged in"
            }
            .to_string()
        });
        let details = json!({ "status": text, "ready": status.ready, "whatsappLoggedIn": status.whatsapp_logged_in });
        Self {
            details: Some(details),
            ..Self::about("session-status", who)
        }
    }

    pub fn session_disconnected(who: &Identity, reason: &str, code: u16) -> Self {
        let details = json!({ "reason": reason, "code": code });
        Self {
            details: Some(details),
            ..Self::about("session-disconnected", who)
        }
    }

    pub fn heartbeat_timeout(who: &Identity, last_heartbeat: u64) -> Self {
        let details = json!({ "lastHeartbeat": last_heartbeat });
        Self {
            details: Some(details),
            ..Self::about("heartbeat-timeout", who)
        }
    }

    /// Names who a send was for: `phoneNumber`, `chatId`, or a custom command's type.
    fn to(mut self, to: Recipient) -> Self {
        let text = Some(to.text().to_string());
        match to {
            Recipient::Phone(_) => self.phone_number = text,
            Recipient::Chat(_) => self.delivery.get_or_insert_with(Box::default).chat_id = text,
            Recipient::Command(_) => {
                self.delivery.get_or_insert_with(Box::default).command = text;
            }
        }
        self
    }

    /// `send-failed`; for a custom command, `command-result` with `status: 'failure'`.
    pub fn send_failed(
        who: &Identity,
        to: Recipient,
        request_id: &str,
        error: &GatewayError,
    ) -> Self {
        let mut details = json!({ "error": error.message, "code": error.code });
        if let Some(code) = error.details.get("extensionCode") {
            details["extensionCode"] = code.clone();
        }
        let kind = match to {
            Recipient::Command(_) => "command-result",
            _ => "send-failed",
        };
        Self {
            request_id: Some(request_id.to_string()),
            status: Some("failure"),
            error: Some(error.message.clone()),
            details: Some(details),
            ..Self::about(kind, who)
        }
        .to(to)
    }

    /// The kind's `*-sent` (or `command-result`) for a result that came after its
    /// call had settled.
    pub fn sent_late(
        kind: SendKind,
        who: &Identity,
        to: Recipient,
        request_id: &str,
        message_id: Value,
    ) -> Self {
        let sent = Self {
            request_id: Some(request_id.to_string()),
            status: Some("success"),
            delivery: Some(Box::new(DeliveryFields {
                late: Some(true),
                ..DeliveryFields::default()
            })),
            ..Self::about(sent_event(kind), who)
        };
        match to {
            Recipient::Command(_) => sent.to(to),
            _ => Self {
                message_id: Some(message_id),
                ..sent
            }
            .to(to),
        }
    }

    /// Marks the outcome of a send taken up again after a restart (durable mode).
    pub fn recovered(mut self) -> Self {
        self.delivery.get_or_insert_with(Box::default).recovered = Some(true);
        self
    }

    /// The kind's `*-sent` for a send taken up again after a restart; the caller is
    /// gone, so the core makes the event the host makes for other successes.
    pub fn sent_recovered(
        kind: SendKind,
        who: &Identity,
        phone_number: &str,
        request_id: &str,
        message_id: Value,
    ) -> Self {
        let to = Recipient::of(kind, phone_number);
        let mut event = Self::sent_late(kind, who, to, request_id, message_id);
        if let Some(fields) = event.delivery.as_mut() {
            fields.late = None;
        }
        event.recovered()
    }

    /// `send-failed` for a recovered send that failed before any device took it.
    pub fn send_failed_unplaced(
        api_key: &str,
        to: Recipient,
        request_id: &str,
        error: &GatewayError,
    ) -> Self {
        let nobody = Identity::new(
            api_key.into(),
            Value::Null,
            Texts::default(),
            crate::config::Dialect::Compat,
            Default::default(),
        );
        Self::send_failed(&nobody, to, request_id, error)
    }

    /// Adds the call's `metadata`, if it had one.
    pub fn with_metadata(mut self, metadata: Option<Value>) -> Self {
        if let Some(metadata) = metadata {
            self.delivery.get_or_insert_with(Box::default).metadata = Some(metadata);
        }
        self
    }

    pub fn message_ack(
        who: &Identity,
        request_id: &str,
        to: Recipient,
        message_id: Value,
        ack: Ack,
    ) -> Self {
        Self {
            request_id: Some(request_id.to_string()),
            message_id: Some(message_id),
            delivery: Some(Box::new(DeliveryFields {
                ack: Some(ack.as_str()),
                ..DeliveryFields::default()
            })),
            ..Self::about("message-ack", who)
        }
        .to(to)
    }

    pub fn message_received(who: &Identity, data: Value) -> Self {
        Self {
            delivery: Some(Box::new(DeliveryFields {
                data: Some(data),
                ..DeliveryFields::default()
            })),
            ..Self::about("message-received", who)
        }
    }
}
