//! Frames between the gateway and extensions: parsing what extensions send in any
//! of the three dialects, and writing what the gateway sends.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Dialect;
use crate::media::MediaText;

pub mod custom;
pub mod delivery;
mod quick_result;
use delivery::{AckFrame, IncomingFrame, RefusedIncoming};

/// What an extension sent, reduced to what the gateway acts on.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Auth(AuthFrame),
    Status(StatusFrame),
    Heartbeat,
    Result(ResultFrame),
    /// `message-ack` (5.2); `None` if unusable, which is ignored.
    Ack(Option<AckFrame>),
    /// `incoming-message` (5.2), checked.
    Incoming(Result<IncomingFrame, RefusedIncoming>),
    /// Valid JSON object with a `type` the gateway does not know.
    Unknown(String),
    /// Not a JSON object with a string `type`, or a known type with unusable fields.
    Invalid(&'static str),
}

#[derive(Debug, PartialEq)]
pub struct AuthFrame {
    pub api_key: String,
    pub extension_version: String,
    pub browser: String,
    /// `authenticate` (the guide's dialect) rather than `auth`.
    pub guide_dialect: bool,
    /// The custom command types the extension handles (`data.commands`), checked.
    pub commands: Vec<String>,
    /// `data.fields: 'dataUrl'`: it reads media from `dataUrl` alone. Anything else
    /// (`'compat'`, nothing) leaves the gateway's dialect in charge.
    pub data_url_only: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusFrame {
    /// The extension's own status text, if it sent one.
    pub text: Option<String>,
    pub ready: bool,
    pub whatsapp_logged_in: bool,
}

/// A `message-result` or a `command-result`: either answers any command.
#[derive(Debug, PartialEq)]
pub struct ResultFrame {
    pub request_id: String,
    pub success: bool,
    pub message_id: Value,
    pub error: Value,
    pub timestamp: Option<f64>,
    /// A `command-result`'s `data`, null if none.
    pub data: Value,
    /// Why it failed, as an upper-case word (`NOT_ON_WHATSAPP`...), if the extension said.
    pub code: Option<String>,
}

impl ResultFrame {
    /// What a success answers: a custom command's `data`, a send's `messageId`.
    pub fn answer(&mut self, kind: SendKind) -> Value {
        let answer = match kind {
            SendKind::Command => &mut self.data,
            _ => &mut self.message_id,
        };
        std::mem::take(answer)
    }
}

/// Every field any dialect uses; unknown fields are ignored.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "apiKey", default)]
    api_key: Option<Value>,
    #[serde(rename = "requestId", default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(default)]
    success: Option<Value>,
    #[serde(rename = "messageId", default)]
    message_id: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    ready: Option<Value>,
    #[serde(rename = "whatsappLoggedIn", default)]
    whatsapp_logged_in: Option<Value>,
    #[serde(default)]
    code: Option<Value>,
}

pub fn parse(text: &str) -> Inbound {
    parse_with_limit(text, usize::MAX)
}

/// `parse`, with the largest media an `incoming-message` may carry.
pub fn parse_with_limit(text: &str, max_media_bytes: usize) -> Inbound {
    match quick_result::read(text) {
        Some(result) => Inbound::Result(result),
        None => parse_wire(text, max_media_bytes),
    }
}

/// `parse_with_limit` through serde, for every frame.
pub(crate) fn parse_wire(text: &str, max_media_bytes: usize) -> Inbound {
    let wire: Wire = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(_) => return Inbound::Invalid("Invalid message format: expected a JSON object"),
    };
    let Some(kind) = wire.kind.as_deref() else {
        return Inbound::Invalid("Invalid message format: missing string field 'type'");
    };
    match kind {
        "auth" | "authenticate" => parse_auth(&wire, kind == "authenticate"),
        "status" => Inbound::Status(parse_status(&wire)),
        "heartbeat" => Inbound::Heartbeat,
        "message-result" | "command-result" => parse_result(wire),
        "message-ack" => Inbound::Ack(delivery::parse_ack(text)),
        "incoming-message" => {
            Inbound::Incoming(delivery::parse_incoming(wire.data, max_media_bytes))
        }
        other => Inbound::Unknown(other.to_string()),
    }
}

fn parse_auth(wire: &Wire, guide_dialect: bool) -> Inbound {
    let api_key = match &wire.api_key {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Inbound::Invalid("Missing or invalid apiKey"),
    };
    let field = |name: &str| {
        wire.data
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    };
    let commands = wire.data.as_ref().and_then(|d| d.get("commands"));
    let fields = wire.data.as_ref().and_then(|d| d.get("fields"));
    Inbound::Auth(AuthFrame {
        api_key,
        extension_version: field("extensionVersion"),
        browser: field("browser"),
        guide_dialect,
        commands: custom::listed_commands(commands),
        data_url_only: fields.and_then(Value::as_str) == Some("dataUrl"),
    })
}

/// v1 and its doc put `whatsappLoggedIn`/`ready` under `data`; the guide sends a
/// status text and `ready` at the top level. Explicit flags win over the text.
fn parse_status(wire: &Wire) -> StatusFrame {
    let pick = |name: &str, top: &Option<Value>| -> Option<Value> {
        wire.data
            .as_ref()
            .and_then(|d| d.get(name))
            .cloned()
            .or_else(|| top.clone())
    };
    let text = match pick("status", &wire.status) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let ready = pick("ready", &wire.ready).as_ref().is_some_and(truthy);
    let whatsapp_logged_in = match pick("whatsappLoggedIn", &wire.whatsapp_logged_in) {
        Some(flag) => truthy(&flag),
        None => match &text {
            Some(t) => text_says_logged_in(t),
            None => ready,
        },
    };
    StatusFrame {
        text,
        ready,
        whatsapp_logged_in,
    }
}

fn text_says_logged_in(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("logged in") && !t.contains("not logged in")
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Null => false,
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn parse_result(wire: Wire) -> Inbound {
    let Some(request_id) = wire.request_id else {
        return Inbound::Invalid("A result needs a string requestId");
    };
    let success = match wire.success {
        Some(Value::Bool(b)) => b,
        _ => return Inbound::Invalid("A result needs a boolean success"),
    };
    let command_result = wire.kind.as_deref() == Some("command-result");
    let data = wire.data.filter(|_| command_result);
    if !bounded(wire.message_id.as_ref())
        || !bounded(wire.error.as_ref())
        || !bounded(data.as_ref())
    {
        return Inbound::Invalid(TOO_LARGE);
    }
    Inbound::Result(ResultFrame {
        request_id: request_id.into_owned(),
        success,
        message_id: wire.message_id.unwrap_or(Value::Null),
        error: wire.error.unwrap_or(Value::Null),
        timestamp: wire.timestamp.as_ref().and_then(Value::as_f64),
        data: data.unwrap_or(Value::Null),
        code: wire
            .code
            .as_ref()
            .and_then(Value::as_str)
            .and_then(failure_code),
    })
}

/// An extension's failure `code`: one upper-case word (letters, digits, `_`), at most
/// 64 characters. Anything else is ignored: a code is advice, and a malformed one
/// must not cost the caller its error.
fn failure_code(code: &str) -> Option<String> {
    let mut chars = code.chars();
    let shaped = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && code.len() <= 64;
    shaped.then(|| code.to_string())
}

/// Failure codes after which the same command may well succeed later.
pub fn retryable(code: &str) -> bool {
    matches!(code, "RATE_LIMITED" | "LOGGED_OUT")
}

/// How deep and how large a value from an extension that the gateway hands on
/// (`messageId`, `error`, a command-result's `data`, an incoming message's `data`) may be.
/// Far beyond any real
/// one; what JavaScript receives stays cheap to build and within what napi converts
/// (128 levels, a million items), wrapped in an event or an error as it is.
pub const MAX_VALUE_DEPTH: usize = 32;
pub const MAX_VALUE_ITEMS: usize = 10_000;

pub(crate) const TOO_LARGE: &str =
    "A value in this frame is nested deeper than 32 levels or has more than 10000 items";

/// Whether `value` is within `MAX_VALUE_DEPTH` and `MAX_VALUE_ITEMS` (absent is).
/// Walked without recursion, stopping at the first item over the limits.
pub fn bounded(value: Option<&Value>) -> bool {
    let Some(value) = value else {
        return true;
    };
    // Most are a string or a number: no walk, no stack to allocate.
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return true;
    }
    let mut items = 0usize;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        items += 1;
        if items > MAX_VALUE_ITEMS || depth > MAX_VALUE_DEPTH {
            return false;
        }
        match value {
            Value::Array(list) => stack.extend(list.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    true
}

// ---- gateway to extension ----

pub const PING: &str = r#"{"type":"ping"}"#;

/// What an extension may send after auth: its frames' size (`maxPayload`) and an
/// incoming message's media (`maxMediaBytes`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_payload: usize,
    pub max_media_bytes: usize,
}

/// The replies to a successful auth, in the order they are sent; each tells the
/// extension its `limits`, so that a client can refuse an oversized frame itself.
pub fn auth_replies(
    dialect: Dialect,
    guide_client: bool,
    session_id: &str,
    limits: Limits,
) -> Vec<String> {
    let limits = serde_json::json!({
        "maxPayload": limits.max_payload,
        "maxMediaBytes": limits.max_media_bytes,
    });
    let reply = |kind: &str| {
        serde_json::json!({ "type": kind, "sessionId": session_id, "limits": limits }).to_string()
    };
    match (dialect, guide_client) {
        (_, true) | (Dialect::Doc, _) => vec![reply("authenticated")],
        (Dialect::V1, false) => vec![reply("auth-success")],
        (Dialect::Compat, false) => vec![reply("auth-success"), reply("authenticated")],
    }
}

/// Error frames carry both shapes: `code`/`message` at the top (integration doc)
/// and `error: {code, message}` (v1 package).
pub fn error_frame(code: &str, message: &str) -> String {
    serde_json::json!({
        "type": "error",
        "code": code,
        "message": message,
        "error": { "code": code, "message": message },
    })
    .to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendKind {
    Message,
    Image,
    Video,
    Document,
    /// A custom command (`gateway.request()`): its type stands where a send's
    /// recipient does, its data (JSON text) where a message's text does.
    Command,
}

impl SendKind {
    /// The frame type of a built-in command; a custom command's type is its own.
    pub fn command(self) -> &'static str {
        match self {
            Self::Message => "send-message",
            Self::Image => "send-image",
            Self::Video => "send-video",
            Self::Document => "send-document",
            Self::Command => "command",
        }
    }
}

/// Who a send is for, read from the one text a request, a record and an event keep
/// for it: a phone number (E.164), a chat id (`…@c.us`, `…@g.us`: the only form with
/// an `@`, which a phone number never has), or, for a custom command, its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient<'a> {
    Phone(&'a str),
    Chat(&'a str),
    Command(&'a str),
}

impl<'a> Recipient<'a> {
    pub fn of(kind: SendKind, text: &'a str) -> Self {
        match kind {
            SendKind::Command => Self::Command(text),
            _ if text.contains('@') => Self::Chat(text),
            _ => Self::Phone(text),
        }
    }

    /// The field that names it in commands, events and records.
    pub fn field(self) -> &'static str {
        match self {
            Self::Phone(_) => "phoneNumber",
            Self::Chat(_) => "chatId",
            Self::Command(_) => "command",
        }
    }

    pub fn text(self) -> &'a str {
        match self {
            Self::Phone(t) | Self::Chat(t) | Self::Command(t) => t,
        }
    }
}

/// A frame on its way to an extension.
#[derive(Debug)]
pub enum Frame {
    Text(Utf8Bytes),
    /// A media command, written as consecutive parts, so that a data URL of megabytes
    /// goes out from the buffer it arrived in: never copied, and shared when the compat
    /// dialect names it twice. Boxed: every queued frame would carry its size.
    Media(Box<MediaFrame>),
}

/// A `send-image|video|document` command as the parts it is written in. Cloning
/// shares its buffers.
#[derive(Clone, Debug)]
pub struct MediaFrame {
    /// Everything before the media fields: `{"type":…,"data":{…,"mimeType":"…"`.
    head: Bytes,
    /// `imageDataUrl`, `videoDataUrl` or `documentDataUrl`, if written.
    kind_field: Option<&'static str>,
    /// Whether `dataUrl` is written.
    data_url_field: bool,
    /// The data URL as the inside of a JSON string (escaped only if it had to be).
    url: Bytes,
}

const CLOSING: &[u8] = b"\"}}";

impl MediaFrame {
    /// The extension said it reads `dataUrl` (`auth` `data.fields`): the command
    /// carries the media once, there, whatever the gateway's dialect.
    pub fn only_data_url(&mut self) {
        self.kind_field = None;
        self.data_url_field = true;
    }

    fn fields(&self) -> impl Iterator<Item = &'static str> {
        self.kind_field
            .into_iter()
            .chain(self.data_url_field.then_some("dataUrl"))
    }

    /// Payload bytes: what `into_parts` adds up to.
    pub fn len(&self) -> usize {
        let (count, fields) = self.fields().fold((0usize, 0), |(n, sum), f| {
            (n + 1, sum + f.len() + 5 + self.url.len())
        });
        let between = count.saturating_sub(1);
        let closing = if count == 0 { 2 } else { CLOSING.len() };
        self.head.len() + fields + between + closing
    }

    /// The payload in one buffer (reading a command back, tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.clone().into_parts().concat()
    }

    /// The payload in the order it is written: the data URL's buffer once per field.
    pub fn into_parts(self) -> Vec<Bytes> {
        let mut parts = Vec::with_capacity(6);
        let fields: Vec<&str> = self.fields().collect();
        parts.push(self.head);
        for (i, field) in fields.iter().enumerate() {
            // `,"<field>":"` opens a field; the one before it first closes its string.
            let opening = format!(r#"{}"{field}":""#, if i == 0 { "," } else { "\"," });
            parts.push(Bytes::from(opening));
            parts.push(self.url.clone());
        }
        parts.push(Bytes::from_static(if fields.is_empty() {
            b"}}"
        } else {
            CLOSING
        }));
        parts
    }
}

/// A `send-message` command to a phone number or a chat id (`recipient`).
///
/// Written out by hand rather than by serde: at 1024 sends in flight serde's writer and
/// the check that its bytes are UTF-8 were 5% of the JavaScript thread's time per call.
/// The bytes are serde's (`tests::message_frames_are_what_serde_writes`).
pub fn message_frame(request_id: &str, recipient: &str, message: &str) -> Frame {
    Frame::Text(message_json(request_id, recipient, message).into())
}

/// A `send-message` command's JSON. When nothing in it needs an escape (nearly always)
/// its buffer is exactly its length: `Bytes` then takes the buffer as it is, where spare
/// room costs it an allocation of its own (and a short estimate, a reallocation).
fn message_json(request_id: &str, recipient: &str, message: &str) -> String {
    const PIECES: [&str; 6] = [
        r#"{"type":""#,
        r#"","requestId":"#,
        r#","data":{""#,
        r#"":"#,
        r#","message":"#,
        "}}",
    ];
    let command = SendKind::Message.command();
    let field = Recipient::of(SendKind::Message, recipient).field();
    let texts = [request_id, recipient, message];
    let plain = texts.iter().all(|t| !needs_json_escape(t.as_bytes()));
    let exact = PIECES
        .iter()
        .chain(&[command, field])
        .chain(&texts)
        .map(|t| t.len())
        .sum::<usize>()
        + 2 * texts.len();
    // With escapes: an eighth more of the message, and room for a few in the rest.
    let escapes = if plain { 0 } else { 16 + message.len() / 8 };
    let mut json = String::with_capacity(exact + escapes);
    // Looked at once above: a plain text is quoted without looking again.
    let quote = if plain { push_quoted } else { push_json_str };
    json.push_str(PIECES[0]);
    json.push_str(command);
    json.push_str(PIECES[1]);
    quote(&mut json, request_id);
    json.push_str(PIECES[2]);
    json.push_str(field);
    json.push_str(PIECES[3]);
    quote(&mut json, recipient);
    json.push_str(PIECES[4]);
    quote(&mut json, message);
    json.push_str(PIECES[5]);
    json
}

/// Appends `text`, which needs no escape, in quotes.
fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    out.push_str(text);
    out.push('"');
}

/// `text` as a JSON string (`push_json_str`).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_str(&mut out, text);
    out
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it: `"` and `\`, the
/// control characters (`\n`, `\r`, `\t`, `\b`, `\f` by name, the others as `\u00XX`),
/// nothing else.
fn push_json_str(out: &mut String, text: &str) {
    // Most texts need no escape: one vectorised look, then one copy.
    if !needs_json_escape(text.as_bytes()) {
        return push_quoted(out, text);
    }
    out.push('"');
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let named = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `at` is an ASCII byte, so a char boundary.
        out.push_str(&text[plain_from..at]);
        if named.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(named);
        }
        plain_from = at + 1;
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

/// What a media command says besides its data URL.
pub struct MediaCommand<'a> {
    pub kind: SendKind,
    pub request_id: &'a str,
    /// A phone number or a chat id.
    pub phone_number: &'a str,
    pub caption: &'a str,
    pub mime_type: &'a str,
    pub document_name: Option<&'a str>,
}

/// A `send-image|video|document` command carrying `data_url` in the field(s) the
/// dialect reads.
pub fn media_frame(command: &MediaCommand, data_url: MediaText, dialect: Dialect) -> Frame {
    let quoted = json_string;
    let mut head = format!(
        r#"{{"type":"{}","requestId":{},"data":{{"{}":{},"caption":{},"mimeType":{}"#,
        command.kind.command(),
        quoted(command.request_id),
        Recipient::of(command.kind, command.phone_number).field(),
        quoted(command.phone_number),
        quoted(command.caption),
        quoted(command.mime_type),
    );
    if let Some(name) = command.document_name {
        head.push_str(&format!(r#","documentName":{}"#, quoted(name)));
    }
    let kind_field = match command.kind {
        SendKind::Video => "videoDataUrl",
        SendKind::Document => "documentDataUrl",
        _ => "imageDataUrl",
    };
    // The whole URL is checked, not only its header: this function alone guarantees
    // that the frame is valid JSON, whatever the media loader let through.
    let url = if !needs_json_escape(data_url.as_bytes()) {
        Bytes::from_owner(data_url)
    } else {
        let escaped = quoted(&data_url);
        Bytes::copy_from_slice(&escaped.as_bytes()[1..escaped.len() - 1])
    };
    Frame::Media(Box::new(MediaFrame {
        head: Bytes::from(head),
        kind_field: (dialect != Dialect::Doc).then_some(kind_field),
        data_url_field: dialect != Dialect::V1,
        url,
    }))
}

/// Branch-free per byte, in chunks, so that megabytes of base64 are scanned at vector speed.
fn needs_json_escape(bytes: &[u8]) -> bool {
    bytes.chunks(64).any(|chunk| {
        chunk.iter().fold(false, |found, &b| {
            found | (b == b'"') | (b == b'\\') | (b < 0x20)
        })
    })
}

/// Appends the header of an unmasked, final text frame of `len` payload bytes
/// (RFC 6455 5.2), as a server writes it.
/// Bytes `frame` takes on the wire, header included.
/// A send command read back from its frame (5.3: a draining process hands the sends
/// still waiting in its pacing queues to other processes).
#[derive(Debug, PartialEq)]
pub struct WrittenCommand {
    pub kind: SendKind,
    /// The phone number or chat id; a custom command's type.
    pub phone_number: String,
    /// The message, or the caption of media; a custom command's data as JSON text.
    pub text: String,
    /// The data URL and its MIME type.
    pub media: Option<(String, String)>,
    pub document_name: Option<String>,
}

pub fn command_of_frame(frame: &Frame) -> Option<WrittenCommand> {
    let value: Value = match frame {
        Frame::Text(text) => serde_json::from_str(text).ok()?,
        Frame::Media(media) => serde_json::from_slice(&media.to_vec()).ok()?,
    };
    let kind = match value["type"].as_str()? {
        "send-message" => SendKind::Message,
        "send-image" => SendKind::Image,
        "send-video" => SendKind::Video,
        "send-document" => SendKind::Document,
        other if custom::is_custom_type(other) => {
            return Some(WrittenCommand {
                kind: SendKind::Command,
                phone_number: other.to_string(),
                text: value["data"].to_string(),
                media: None,
                document_name: None,
            })
        }
        _ => return None,
    };
    let data = &value["data"];
    let text = |field: &str| data[field].as_str().map(str::to_string);
    let media = match kind {
        SendKind::Message => None,
        _ => {
            let url = ["imageDataUrl", "videoDataUrl", "documentDataUrl", "dataUrl"]
                .iter()
                .find_map(|field| text(field))?;
            Some((url, text("mimeType").unwrap_or_default()))
        }
    };
    Some(WrittenCommand {
        kind,
        phone_number: text("phoneNumber").or_else(|| text("chatId"))?,
        text: text("message")
            .or_else(|| text("caption"))
            .unwrap_or_default(),
        media,
        document_name: text("documentName"),
    })
}

pub fn frame_len(frame: &Frame) -> usize {
    let payload = match frame {
        Frame::Text(text) => text.len(),
        Frame::Media(media) => media.len(),
    };
    let header = match payload {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    header + payload
}

/// A whole unmasked text frame (server to client), header and payload.
pub fn push_text_frame(out: &mut Vec<u8>, text: &str) {
    push_text_frame_header(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

pub fn push_text_frame_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x81);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A whole unmasked control frame (server to client): a pong or a close, with at most
/// 125 bytes of payload (the caller's to keep).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= 125, "a control frame's payload is short");
    let mut frame = Vec::with_capacity(2 + payload.len());
    frame.push(0x80 | opcode);
    frame.push(payload.len() as u8);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_frames_are_what_serde_writes() {
        #[derive(serde::Serialize)]
        struct Command<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "requestId")]
            request_id: &'a str,
            data: TextData<'a>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TextData<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            phone_number: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            chat_id: Option<&'a str>,
            message: &'a str,
        }
        let every_control: String = (0u8..0x20).map(char::from).collect();
        let texts = [
            String::new(),
            "benchmark message".to_string(),
            "quote \" backslash \\ slash / del \u{7f}".to_string(),
            every_control.clone(),
            format!("é😀{every_control}ü\u{2028}\u{ffff}"),
            "line one\nline two\r\n\ttabbed".to_string(),
        ];
        for message in &texts {
            for recipient in ["+1234567890", "123@c.us", "a\"b@g.us", message.as_str()] {
                let chat = recipient.contains('@');
                let expected = serde_json::to_string(&Command {
                    kind: "send-message",
                    request_id: message,
                    data: TextData {
                        phone_number: (!chat).then_some(recipient),
                        chat_id: chat.then_some(recipient),
                        message,
                    },
                })
                .unwrap();
                let Frame::Text(written) = message_frame(message, recipient, message) else {
                    panic!("a message frame is text");
                };
                assert_eq!(&*written, expected.as_str(), "{message:?} to {recipient:?}");
            }
        }
    }

    #[test]
    fn a_message_command_without_escapes_fills_its_buffer_exactly() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        for recipient in ["+1234567890", "123@c.us", "123@g.us"] {
            for message in ["", "hi", &"long message ".repeat(400), "é😀"] {
                let json = message_json(id, recipient, message);
                assert_eq!(json.capacity(), json.len(), "{recipient} {message:?}");
            }
        }
    }

    #[test]
    fn a_command_reads_back_from_its_frame_in_every_dialect() {
        let text = message_frame("r1", "+123", "hi \"there\"");
        assert_eq!(
            command_of_frame(&text),
            Some(WrittenCommand {
                kind: SendKind::Message,
                phone_number: "+123".into(),
                text: "hi \"there\"".into(),
                media: None,
                document_name: None,
            })
        );
        for dialect in [Dialect::Compat, Dialect::V1, Dialect::Doc] {
            let command = MediaCommand {
                kind: SendKind::Document,
                request_id: "r2",
                phone_number: "+456",
                caption: "cap",
                mime_type: "application/pdf",
                document_name: Some("a.pdf"),
            };
            let frame = media_frame(&command, "data:application/pdf;base64,AAAA".into(), dialect);
            let read = command_of_frame(&frame).expect("a media command");
            assert_eq!(read.kind, SendKind::Document);
            assert_eq!(read.text, "cap");
            assert_eq!(read.document_name.as_deref(), Some("a.pdf"));
            assert_eq!(
                read.media,
                Some((
                    "data:application/pdf;base64,AAAA".to_string(),
                    "application/pdf".to_string()
                ))
            );
        }
    }

    #[test]
    fn parses_auth_of_each_dialect() {
        let v1 = parse(
            r#"{"type":"auth","apiKey":"k1","data":{"extensionVersion":"1.2","browser":"Chrome"}}"#,
        );
        assert_eq!(
            v1,
            Inbound::Auth(AuthFrame {
                api_key: "k1".into(),
                extension_version: "1.2".into(),
                browser: "Chrome".into(),
                guide_dialect: false,
                commands: Vec::new(),
                data_url_only: false,
            })
        );
        match parse(r#"{"type":"authenticate","apiKey":"k2"}"#) {
            Inbound::Auth(a) => {
                assert!(a.guide_dialect);
                assert_eq!(a.extension_version, "unknown");
                assert!(!a.data_url_only);
            }
            other => panic!("{other:?}"),
        }
        let fields = |value: &str| match parse(&format!(
            r#"{{"type":"auth","apiKey":"k3","data":{{"fields":{value}}}}}"#
        )) {
            Inbound::Auth(a) => a.data_url_only,
            other => panic!("{other:?}"),
        };
        assert!(fields(r#""dataUrl""#));
        for other in [
            r#""compat""#,
            r#""imageDataUrl""#,
            r#"["dataUrl"]"#,
            "1",
            "null",
        ] {
            assert!(!fields(other), "{other}");
        }
        assert!(matches!(parse(r#"{"type":"auth"}"#), Inbound::Invalid(_)));
        assert!(matches!(
            parse(r#"{"type":"auth","apiKey":""}"#),
            Inbound::Invalid(_)
        ));
    }

    #[test]
    fn parses_status_of_each_dialect() {
        let s = |t: &str| match parse(t) {
            Inbound::Status(s) => s,
            other => panic!("{other:?}"),
        };
        let v1 = s(r#"{"type":"status","data":{"whatsappLoggedIn":true,"ready":true}}"#);
        assert!(v1.ready && v1.whatsapp_logged_in && v1.text.is_none());
        let guide = s(r#"{"type":"status","status":"WhatsApp Web is logged in","ready":true}"#);
        assert!(guide.ready && guide.whatsapp_logged_in);
        assert_eq!(guide.text.as_deref(), Some("WhatsApp Web is logged in"));
        let out = s(r#"{"type":"status","status":"WhatsApp Web is not logged in","ready":false}"#);
        assert!(!out.ready && !out.whatsapp_logged_in);
        let flag_wins = s(r#"{"type":"status","data":{"whatsappLoggedIn":false,"ready":true}}"#);
        assert!(!flag_wins.whatsapp_logged_in && flag_wins.ready);
    }

    #[test]
    fn parses_results_and_rejects_garbage() {
        match parse(
            r#"{"type":"message-result","requestId":"r1","success":false,"error":"nope","timestamp":5}"#,
        ) {
            Inbound::Result(r) => {
                assert_eq!(r.request_id, "r1");
                assert!(!r.success);
                assert_eq!(r.error, json!("nope"));
                assert_eq!(r.timestamp, Some(5.0));
                assert_eq!(r.message_id, Value::Null);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"message-result","requestId":"r1"}"#),
            Inbound::Invalid(_)
        ));
        assert!(matches!(parse("not json"), Inbound::Invalid(_)));
        assert!(matches!(parse("[1,2]"), Inbound::Invalid(_)));
        assert!(matches!(parse(r#"{"no":"type"}"#), Inbound::Invalid(_)));
        assert!(matches!(parse(r#"{"type":7}"#), Inbound::Invalid(_)));
        assert_eq!(
            parse(r#"{"type":"dance"}"#),
            Inbound::Unknown("dance".into())
        );
        assert_eq!(
            parse(r#"{"type":"heartbeat","timestamp":"x"}"#),
            Inbound::Heartbeat
        );
    }

    #[test]
    fn results_carry_data_and_failure_codes_of_the_right_shape() {
        let result = |text: &str| match parse(text) {
            Inbound::Result(r) => r,
            other => panic!("{other:?}"),
        };
        let mut answered = result(
            r#"{"type":"command-result","requestId":"r","success":true,"data":{"on":true},"messageId":"m"}"#,
        );
        assert_eq!(answered.answer(SendKind::Command), json!({ "on": true }));
        let mut sent = result(
            r#"{"type":"message-result","requestId":"r","success":true,"data":{"x":1},"messageId":"m"}"#,
        );
        assert_eq!(sent.data, Value::Null, "only a command-result has data");
        assert_eq!(sent.answer(SendKind::Message), json!("m"));
        let long = "X".repeat(65);
        let cases = [
            (json!("NOT_ON_WHATSAPP"), Some("NOT_ON_WHATSAPP")),
            (json!("RATE_LIMITED"), Some("RATE_LIMITED")),
            (json!("X2_Y"), Some("X2_Y")),
            (json!("not_on_whatsapp"), None),
            (json!("_X"), None),
            (json!("A B"), None),
            (json!(""), None),
            (json!(long), None),
            (json!(7), None),
            (json!(["X"]), None),
        ];
        for (code, kept) in cases {
            let frame = json!({ "type": "message-result", "requestId": "r", "success": false, "code": code });
            let r = result(&frame.to_string());
            assert_eq!(r.code.as_deref(), kept, "{code}");
        }
        assert!(retryable("RATE_LIMITED") && retryable("LOGGED_OUT"));
        assert!(!retryable("NOT_ON_WHATSAPP"));
        match parse(r#"{"type":"auth","apiKey":"k","data":{"commands":["check-number","ping",3]}}"#)
        {
            Inbound::Auth(a) => assert_eq!(a.commands, ["check-number"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_an_extension_hands_on_are_bounded_in_depth_and_items() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let items = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        let result = |field: &str, value: &str| {
            parse(&format!(
                r#"{{"type":"message-result","requestId":"r","success":true,"{field}":{value}}}"#
            ))
        };
        for field in ["messageId", "error"] {
            assert!(matches!(
                result(field, &nested(MAX_VALUE_DEPTH)),
                Inbound::Result(_)
            ));
            assert_eq!(
                result(field, &nested(MAX_VALUE_DEPTH + 1)),
                Inbound::Invalid(TOO_LARGE)
            );
            // The array itself is an item.
            assert!(matches!(
                result(field, &items(MAX_VALUE_ITEMS - 1)),
                Inbound::Result(_)
            ));
            assert_eq!(
                result(field, &items(MAX_VALUE_ITEMS)),
                Inbound::Invalid(TOO_LARGE)
            );
        }
        assert!(TOO_LARGE.contains(&MAX_VALUE_DEPTH.to_string()));
        assert!(TOO_LARGE.contains(&MAX_VALUE_ITEMS.to_string()));
        let ack = |value: &str| {
            parse(&format!(
                r#"{{"type":"message-ack","requestId":"r","ack":"read","messageId":{value}}}"#
            ))
        };
        assert!(matches!(ack("\"m\""), Inbound::Ack(Some(_))));
        assert_eq!(ack(&items(MAX_VALUE_ITEMS)), Inbound::Ack(None));
        let incoming = parse(&format!(
            r#"{{"type":"incoming-message","data":{{"messageId":"in","from":"x","timestamp":1,"extra":{}}}}}"#,
            nested(MAX_VALUE_DEPTH)
        ));
        match incoming {
            Inbound::Incoming(Err(refused)) => {
                assert_eq!(refused.message_id.as_deref(), Some("in"));
                assert_eq!(refused.why, TOO_LARGE);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_chat_is_named_by_chat_id_and_commands_read_back_from_their_frames() {
        let group = "120363025246125486@g.us";
        let v = json_of(message_frame("r", group, "hi"));
        assert_eq!(v["data"], json!({ "chatId": group, "message": "hi" }));
        let command = MediaCommand {
            phone_number: "15551234567@c.us",
            ..image("cap")
        };
        let url = || MediaText::from("data:image/png;base64,AA==");
        let read = command_of_frame(&media_frame(&command, url(), Dialect::Doc)).unwrap();
        assert_eq!(read.phone_number, "15551234567@c.us");
        let v = json_of(media_frame(&command, url(), Dialect::Doc));
        assert!(v["data"].get("phoneNumber").is_none());
        let custom = custom::custom_frame("r", "check-number", r#"{"phone":"+1"}"#);
        let read = command_of_frame(&custom).unwrap();
        assert_eq!(read.kind, SendKind::Command);
        assert_eq!(read.phone_number, "check-number");
        assert_eq!(read.text, r#"{"phone":"+1"}"#);
        assert_eq!(
            Recipient::of(SendKind::Message, "+1").field(),
            "phoneNumber"
        );
        assert_eq!(Recipient::of(SendKind::Image, "1@c.us").field(), "chatId");
        assert_eq!(Recipient::of(SendKind::Command, "x").field(), "command");
    }

    #[test]
    fn auth_replies_follow_the_dialect() {
        let limits = Limits {
            max_payload: 1 << 20,
            max_media_bytes: 10 << 20,
        };
        let kinds = |d, g| -> Vec<String> {
            auth_replies(d, g, "s1", limits)
                .iter()
                .map(|f| {
                    serde_json::from_str::<Value>(f).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            kinds(Dialect::Compat, false),
            ["auth-success", "authenticated"]
        );
        assert_eq!(kinds(Dialect::Compat, true), ["authenticated"]);
        assert_eq!(kinds(Dialect::V1, false), ["auth-success"]);
        assert_eq!(kinds(Dialect::Doc, false), ["authenticated"]);
        for reply in auth_replies(Dialect::Compat, false, "s1", limits) {
            let v: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(v["sessionId"], "s1");
            assert_eq!(
                v["limits"],
                serde_json::json!({ "maxPayload": 1 << 20, "maxMediaBytes": 10 << 20 })
            );
        }
    }

    #[test]
    fn error_frames_carry_both_shapes() {
        let v: Value = serde_json::from_str(&error_frame("INVALID_MESSAGE", "bad")).unwrap();
        assert_eq!(v["code"], "INVALID_MESSAGE");
        assert_eq!(v["error"]["message"], "bad");
    }

    fn json_of(frame: Frame) -> Value {
        let bytes: Vec<u8> = match frame {
            Frame::Text(text) => text.as_bytes().to_vec(),
            Frame::Media(media) => media.to_vec(),
        };
        serde_json::from_slice(&bytes).unwrap()
    }

    fn image(caption: &str) -> MediaCommand<'_> {
        MediaCommand {
            kind: SendKind::Image,
            request_id: "r",
            phone_number: "+1",
            caption,
            mime_type: "image/png",
            document_name: None,
        }
    }

    #[test]
    fn media_fields_follow_the_dialect() {
        let url = "data:image/png;base64,AA==";
        let frame = |d| json_of(media_frame(&image("hi \"there\""), url.into(), d));
        let compat = frame(Dialect::Compat);
        assert_eq!(compat["data"]["imageDataUrl"], url);
        assert_eq!(compat["data"]["dataUrl"], url);
        assert_eq!(compat["data"]["mimeType"], "image/png");
        assert_eq!(compat["data"]["caption"], "hi \"there\"");
        assert!(frame(Dialect::V1)["data"].get("dataUrl").is_none());
        assert!(frame(Dialect::Doc)["data"].get("imageDataUrl").is_none());
        let doc = MediaCommand {
            kind: SendKind::Document,
            document_name: Some("a.pdf"),
            ..image("")
        };
        let v = json_of(media_frame(
            &doc,
            "data:application/pdf;base64,AA".into(),
            Dialect::V1,
        ));
        assert_eq!(
            (v["type"].as_str(), v["data"]["documentName"].as_str()),
            (Some("send-document"), Some("a.pdf"))
        );
        assert_eq!(
            v["data"]["documentDataUrl"],
            "data:application/pdf;base64,AA"
        );
    }

    #[test]
    fn a_data_url_needing_escapes_is_escaped() {
        let url = r#"data:image/png;name="a\b";base64,AA=="#;
        let v = json_of(media_frame(&image(""), url.into(), Dialect::Doc));
        assert_eq!(v["data"]["dataUrl"], url);
    }

    #[test]
    fn quotes_anywhere_in_a_data_url_cannot_add_fields() {
        let url =
            r#"data:image/x,","phoneNumber":"+19999999999","caption":"injected","x":";base64,AA=="#;
        let v = json_of(media_frame(&image("mine"), url.into(), Dialect::Compat));
        assert_eq!(v["data"]["phoneNumber"], "+1");
        assert_eq!(v["data"]["caption"], "mine");
        assert_eq!(v["data"]["dataUrl"], url);
        let mut keys: Vec<&String> = v["data"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "caption",
                "dataUrl",
                "imageDataUrl",
                "mimeType",
                "phoneNumber"
            ]
        );
    }

    #[test]
    fn media_parts_share_the_callers_data_url() {
        let url = MediaText::from("data:image/png;base64,AA==");
        let Frame::Media(media) = media_frame(&image(""), url.clone(), Dialect::Compat) else {
            panic!("media goes out in parts");
        };
        let parts = media.into_parts();
        assert_eq!(parts[2].as_ptr(), url.as_ptr(), "the caller's buffer");
        assert_eq!(parts[4].as_ptr(), url.as_ptr(), "both fields point at it");
    }

    #[test]
    fn media_frames_say_their_length_and_narrow_to_data_url() {
        let url = || MediaText::from("data:image/png;base64,AA==");
        for dialect in [Dialect::Compat, Dialect::V1, Dialect::Doc] {
            for narrowed in [false, true] {
                let Frame::Media(mut media) = media_frame(&image("c"), url(), dialect) else {
                    panic!("media goes out in parts");
                };
                if narrowed {
                    media.only_data_url();
                }
                let bytes = media.to_vec();
                assert_eq!(media.len(), bytes.len(), "{dialect:?} {narrowed}");
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                let mut keys: Vec<&String> = v["data"].as_object().unwrap().keys().collect();
                keys.sort();
                let expected: &[&str] = match (dialect, narrowed) {
                    (_, true) | (Dialect::Doc, _) => {
                        &["caption", "dataUrl", "mimeType", "phoneNumber"]
                    }
                    (Dialect::V1, _) => &["caption", "imageDataUrl", "mimeType", "phoneNumber"],
                    (Dialect::Compat, _) => &[
                        "caption",
                        "dataUrl",
                        "imageDataUrl",
                        "mimeType",
                        "phoneNumber",
                    ],
                };
                assert_eq!(keys, expected, "{dialect:?} {narrowed}");
                assert_eq!(
                    v["data"]["dataUrl"].as_str().unwrap_or(url().as_str()),
                    url().as_str()
                );
            }
        }
    }

    #[test]
    fn text_messages_are_escaped_json() {
        let v = json_of(message_frame("r", "+1", "a\"b"));
        assert_eq!(
            v,
            json!({"type":"send-message","requestId":"r","data":{"phoneNumber":"+1","message":"a\"b"}})
        );
    }

    #[test]
    fn frame_headers_encode_the_length() {
        let header = |len| {
            let mut out = Vec::new();
            push_text_frame_header(&mut out, len);
            out
        };
        assert_eq!(header(5), [0x81, 5]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(70_000), [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
