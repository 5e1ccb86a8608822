//! The frames of README "Delivery" that extensions may send (`message-ack`, `incoming-message`)
//! and the gateway's answers to them. Old extensions never send these.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ErrorCode;

/// How far a sent message got, in the order WhatsApp reports it. `Sent` is the
/// extension's `message-result`; the others come in `message-ack` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    Sent,
    Server,
    Delivered,
    Read,
    Played,
}

impl Ack {
    /// Every ack, in order: `ALL[a.index()] == a`.
    pub const ALL: [Ack; 5] = [
        Self::Sent,
        Self::Server,
        Self::Delivered,
        Self::Read,
        Self::Played,
    ];

    pub fn index(self) -> u32 {
        self as u32
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sent" => Some(Self::Sent),
            "server" => Some(Self::Server),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            "played" => Some(Self::Played),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Server => "server",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Played => "played",
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct AckFrame {
    pub request_id: String,
    pub message_id: Value,
    pub ack: Ack,
}

#[derive(Deserialize)]
struct WireAck {
    #[serde(rename = "requestId")]
    request_id: Option<String>,
    #[serde(rename = "messageId", default)]
    message_id: Option<Value>,
    ack: Option<String>,
}

/// `None` when the frame is unusable; acks are advisory, so a bad one is ignored.
pub fn parse_ack(text: &str) -> Option<AckFrame> {
    let wire: WireAck = serde_json::from_str(text).ok()?;
    let ack = Ack::parse(wire.ack.as_deref()?)?;
    // `sent` is what the result already said.
    if ack == Ack::Sent {
        return None;
    }
    if !super::bounded(wire.message_id.as_ref()) {
        return None;
    }
    Some(AckFrame {
        request_id: wire.request_id?,
        message_id: wire.message_id.unwrap_or(Value::Null),
        ack,
    })
}

/// An incoming message, checked: `data` is passed on as the extension sent it.
#[derive(Debug, PartialEq)]
pub struct IncomingFrame {
    pub message_id: String,
    pub data: Value,
}

/// Why an `incoming-message` was refused, with its `messageId` when it had one.
#[derive(Debug, PartialEq)]
pub struct RefusedIncoming {
    pub message_id: Option<String>,
    pub why: String,
}

const MAX_MESSAGE_ID: usize = 200;

pub fn parse_incoming(
    data: Option<Value>,
    max_media_bytes: usize,
) -> Result<IncomingFrame, RefusedIncoming> {
    let Some(Value::Object(fields)) = data else {
        return Err(refused(None, "incoming-message needs an object 'data'"));
    };
    let message_id = match fields.get("messageId") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_MESSAGE_ID => id.clone(),
        _ => {
            return Err(refused(
                None,
                "incoming-message needs data.messageId, a string of 1 to 200 characters",
            ))
        }
    };
    let fail = |why: &str| Err(refused(Some(message_id.clone()), why));
    if !matches!(fields.get("from"), Some(Value::String(s)) if !s.is_empty()) {
        return fail("incoming-message needs data.from, a non-empty string");
    }
    if !fields.get("timestamp").is_some_and(Value::is_number) {
        return fail("incoming-message needs data.timestamp, a number");
    }
    for optional in ["chatId", "body"] {
        if !matches!(
            fields.get(optional),
            None | Some(Value::Null) | Some(Value::String(_))
        ) {
            return fail(&format!(
                "incoming-message data.{optional} must be a string"
            ));
        }
    }
    if let Some(media) = fields.get("media").filter(|m| !m.is_null()) {
        if let Err(why) = check_media(media, max_media_bytes) {
            return fail(&why);
        }
    }
    let data = Value::Object(fields);
    if !super::bounded(Some(&data)) {
        return Err(refused(Some(message_id), super::TOO_LARGE));
    }
    Ok(IncomingFrame { message_id, data })
}

fn check_media(media: &Value, max_media_bytes: usize) -> Result<(), String> {
    let Some(media) = media.as_object() else {
        return Err("incoming-message data.media must be an object".into());
    };
    if !matches!(media.get("mimeType"), Some(Value::String(_))) {
        return Err("incoming-message data.media needs a string mimeType".into());
    }
    let string_or_absent = |name: &str| {
        matches!(
            media.get(name),
            None | Some(Value::Null) | Some(Value::String(_))
        )
    };
    if !string_or_absent("dataUrl") || !string_or_absent("fileName") {
        return Err("incoming-message data.media.dataUrl and fileName must be strings".into());
    }
    if let Some(Value::String(url)) = media.get("dataUrl") {
        let payload = url.split_once(',').map_or(url.as_str(), |(_, p)| p);
        // Base64 carries 3 bytes in 4 characters.
        if payload.len() / 4 * 3 > max_media_bytes {
            return Err(format!(
                "incoming-message media is larger than maxMediaBytes ({max_media_bytes} bytes)"
            ));
        }
    }
    Ok(())
}

fn refused(message_id: Option<String>, why: &str) -> RefusedIncoming {
    RefusedIncoming {
        message_id,
        why: why.to_string(),
    }
}

/// `{type:'incoming-ack', messageId}`: the extension may stop retrying.
pub fn incoming_ack_frame(message_id: &str) -> String {
    json!({ "type": "incoming-ack", "messageId": message_id }).to_string()
}

/// An `INVALID_MESSAGE` error frame (both shapes of `error_frame`) naming the
/// incoming message it refuses.
pub fn refused_incoming_frame(refused: &RefusedIncoming) -> String {
    let mut frame = Map::new();
    frame.insert("type".into(), "error".into());
    let code = ErrorCode::InvalidMessage.as_str();
    frame.insert("code".into(), code.into());
    frame.insert("message".into(), refused.why.clone().into());
    frame.insert(
        "error".into(),
        json!({ "code": code, "message": refused.why }),
    );
    if let Some(id) = &refused.message_id {
        frame.insert("messageId".into(), id.clone().into());
    }
    Value::Object(frame).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_ordered_and_sent_is_not_an_ack_frame() {
        assert!(Ack::Sent < Ack::Server && Ack::Server < Ack::Delivered);
        assert!(Ack::Delivered < Ack::Read && Ack::Read < Ack::Played);
        let ack = parse_ack(r#"{"type":"message-ack","requestId":"r","ack":"read"}"#).unwrap();
        assert_eq!(ack.ack, Ack::Read);
        assert_eq!(ack.message_id, Value::Null);
        assert!(parse_ack(r#"{"type":"message-ack","requestId":"r","ack":"sent"}"#).is_none());
        assert!(parse_ack(r#"{"type":"message-ack","requestId":"r","ack":"seen"}"#).is_none());
        assert!(parse_ack(r#"{"type":"message-ack","ack":"read"}"#).is_none());
    }

    #[test]
    fn incoming_messages_are_checked_and_passed_through() {
        let data = json!({ "messageId": "in-1", "from": "+1555", "timestamp": 5, "body": "hi", "extra": [1] });
        let ok = parse_incoming(Some(data.clone()), 100).unwrap();
        assert_eq!(ok.message_id, "in-1");
        assert_eq!(ok.data, data);

        let no_from =
            parse_incoming(Some(json!({ "messageId": "in-2", "timestamp": 5 })), 100).unwrap_err();
        assert_eq!(no_from.message_id.as_deref(), Some("in-2"));
        assert!(parse_incoming(None, 100).unwrap_err().message_id.is_none());

        let big = json!({ "messageId": "in-3", "from": "x", "timestamp": 1,
            "media": { "mimeType": "image/png", "dataUrl": format!("data:image/png;base64,{}", "A".repeat(400)) } });
        let refused = parse_incoming(Some(big), 100).unwrap_err();
        assert!(refused.why.contains("maxMediaBytes"));
        let frame: Value = serde_json::from_str(&refused_incoming_frame(&refused)).unwrap();
        assert_eq!(frame["code"], "INVALID_MESSAGE");
        assert_eq!(frame["error"]["code"], "INVALID_MESSAGE");
        assert_eq!(frame["messageId"], "in-3");
    }
}
