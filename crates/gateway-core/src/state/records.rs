//! The record of every send (docs/delivery-records.md): what `getMessageStatus`
//! answers, what an `idempotencyKey` stands for, what a late result or an ack moves,
//! and the sends whose caller waits for an ack beyond the extension's result
//! (`waitFor`). Lives inside the registry, so that recording a settled send takes no
//! lock of its own.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::own_keys::{request_id_hash, OwnKeys};
use super::send_request::SendRequest;
use super::slot_index::SlotIndex;
use crate::clock::{fixed_wall_ms_at, monotonic_at, monotonic_ms, now_ms};
use crate::error::{ErrorCode, GatewayError};
use crate::identity::{CallId, Identity, Texts};
use crate::metrics;
use crate::protocol::delivery::Ack;
use crate::protocol::{Recipient, SendKind};

/// `maxMessageStatuses` when not set.
pub const DEFAULT_CAPACITY: usize = 200_000;
/// Records the ring and its index are sized for up front (only the memory they write
/// becomes resident): growing them later would copy megabytes under the registry's
/// lock, which every send waits for. Beyond this they grow.
const UP_FRONT: usize = 1 << 20;

type ById<V> = HashMap<u128, V, OwnKeys>;

/// `(apiKey, idempotencyKey)` and `(apiKey, messageId)` pairs: keys a peer chooses, so
/// a real hash (seeded per pair kind), never the cheap mix of request ids.
fn pair_hash(kind: u64, api_key: &str, text: &str) -> u64 {
    xxh3_64_with_seed(text.as_bytes(), xxh3_64_with_seed(api_key.as_bytes(), kind))
}

const IDEMPOTENCY_PAIR: u64 = 1;
const MESSAGE_PAIR: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Queued,
    InFlight,
    Sent,
    /// Known not to have gone out: refused before writing, or the extension said so.
    Failed,
    /// It may have been written, but no result came before the call settled.
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InFlight => "in-flight",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    fn settled(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Unknown)
    }

    /// What a rejection says of its send: `sent: false` is known unwritten, and so is
    /// a rejection without `sent` (it came before any device was chosen; every later
    /// one says); the extension's own failure was written; anything else may have been.
    pub fn of_rejection(error: &GatewayError) -> (Self, bool) {
        match error.details.get("sent") {
            Some(Value::Bool(true)) if error.code == ErrorCode::ExtensionError => {
                (Self::Failed, true)
            }
            Some(Value::Bool(true)) => (Self::Unknown, true),
            _ => (Self::Failed, false),
        }
    }
}

/// A send waiting for an earlier call with its `idempotencyKey` to settle.
pub type Waiting = (CallId, SendRequest);

/// One send. Written on every send, read by look-ups, acks and late results: its
/// texts are kept inline when short (no allocation to make now and free cold many
/// sends later), and what only some sends have is boxed.
#[derive(Debug)]
pub struct Record {
    /// The session that got its command (or answered it); `None` before any did.
    pub identity: Option<Arc<Identity>>,
    /// E.164 numbers have at most 16 bytes.
    phone_number: ShortText<22>,
    /// The extension's, from its result or an ack.
    message_id: MessageId,
    /// The result's timestamp (ms since the epoch).
    pub timestamp: f64,
    pub state: State,
    /// `None` unless the extension reported success.
    pub ack: Option<Ack>,
    pub kind: SendKind,
    /// Its command was (or may have been) written to an extension.
    pub written: bool,
    /// Run here for another cluster process, whose record is the caller's.
    pub for_other: bool,
    /// `monotonic_ms()` of the last change; shown as wall-clock time.
    updated: u64,
    /// `monotonic_ms()` of when its call settled: its TTL counts from here.
    settled_at: u64,
    error: Option<Box<GatewayError>>,
    call: Option<Box<CallPart>>,
}

/// What a call with an `idempotencyKey` or `metadata` adds to its record, which it has
/// from the start.
#[derive(Debug)]
pub struct CallPart {
    pub api_key: Arc<str>,
    pub idempotency_key: Option<Box<str>>,
    pub fingerprint: u64,
    /// As JSON text: a parsed value costs several hundred bytes more per record, and
    /// it is read only for events, look-ups and duplicates.
    metadata: Option<Box<str>>,
    /// Wall-clock ms of the call.
    created_at: u64,
    /// The call has not settled: duplicates wait for it, and it is never evicted.
    pub open: bool,
    pub waiting: Vec<Waiting>,
    /// A custom command's answer (its `data`, as JSON text), kept when it has an
    /// `idempotencyKey`: its duplicates resolve with it.
    answer: Option<Box<str>>,
}

impl Record {
    /// The record of a successful result; `answer` is a send's message id (a custom
    /// command's data is kept by `Records::answered`).
    pub fn sent(
        identity: Arc<Identity>,
        kind: SendKind,
        phone_number: &str,
        answer: &Value,
        timestamp: f64,
    ) -> Self {
        let mut record = Self::new(kind, phone_number, State::Sent);
        record.identity = Some(identity);
        record.timestamp = timestamp;
        record.ack = Some(Ack::Sent);
        record.answered(answer);
        record.written = true;
        record
    }

    /// The record of a rejection after `identity` was chosen.
    pub fn rejected(
        identity: Arc<Identity>,
        kind: SendKind,
        phone_number: &str,
        error: &GatewayError,
    ) -> Self {
        let (state, written) = State::of_rejection(error);
        let mut record = Self::new(kind, phone_number, state);
        record.identity = Some(identity);
        record.written = written;
        record.error = Some(Box::new(error.clone()));
        record
    }

    /// The record a call with an `idempotencyKey` or `metadata` has from the start.
    pub fn opened(request: &SendRequest, api_key: Arc<str>) -> Self {
        let mut record = Self::new(request.kind, &request.phone_number, State::Queued);
        record.call = Some(Box::new(CallPart {
            api_key,
            idempotency_key: request.idempotency_key.as_deref().map(Into::into),
            fingerprint: request.fingerprint(),
            metadata: request.metadata.as_deref().map(Into::into),
            created_at: now_ms(),
            open: true,
            waiting: Vec::new(),
            answer: None,
        }));
        record
    }

    /// Takes a success's answer: a send's message id, or a custom command's data (kept
    /// only for a call with an `idempotencyKey`, whose duplicates need it).
    fn answered(&mut self, answer: &Value) {
        if self.kind != SendKind::Command {
            self.message_id = MessageId::of(answer);
            return;
        }
        // Acks are for messages.
        self.ack = None;
        if let Some(call) = self.call.as_mut().filter(|c| c.idempotency_key.is_some()) {
            call.answer = Some(answer.to_string().into());
        }
    }

    /// A custom command's answer, if kept.
    fn answer(&self) -> Option<Value> {
        let text = self.call.as_ref()?.answer.as_deref()?;
        serde_json::from_str(text).ok()
    }

    fn new(kind: SendKind, phone_number: &str, state: State) -> Self {
        // One clock reading per send.
        let now = monotonic_ms();
        Self {
            identity: None,
            phone_number: ShortText::new(phone_number),
            message_id: MessageId::Null,
            timestamp: 0.0,
            state,
            ack: None,
            kind,
            written: false,
            for_other: false,
            updated: now,
            settled_at: now,
            error: None,
            call: None,
        }
    }

    pub fn phone_number(&self) -> &str {
        self.phone_number.as_str()
    }

    /// Whom the send was for, as events name it.
    pub fn recipient(&self) -> Recipient<'_> {
        Recipient::of(self.kind, self.phone_number.as_str())
    }

    pub fn message_id(&self) -> Value {
        match &self.message_id {
            MessageId::Null => Value::Null,
            MessageId::Text(text) => Value::from(text.as_str()),
            MessageId::Other(value) => (**value).clone(),
        }
    }

    pub fn api_key(&self) -> Option<&str> {
        match (&self.call, &self.identity) {
            (Some(call), _) => Some(&call.api_key),
            (None, Some(who)) => Some(&who.api_key),
            (None, None) => None,
        }
    }

    pub fn call(&self) -> Option<&CallPart> {
        self.call.as_deref()
    }

    /// The call's `metadata`, if it had one (JSON text the host checked; kept as text
    /// if it somehow is not JSON).
    pub fn metadata(&self) -> Option<Value> {
        let text = self.call.as_ref()?.metadata.as_deref()?;
        Some(serde_json::from_str(text).unwrap_or_else(|_| Value::from(text)))
    }

    pub fn is_open(&self) -> bool {
        self.call.as_ref().is_some_and(|c| c.open)
    }

    /// A call whose key another call may take: it failed before its command was written.
    pub fn freed(&self) -> bool {
        self.state == State::Failed && !self.written
    }

    fn has_key(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.idempotency_key.is_some())
    }

    fn key_hash(&self) -> Option<u64> {
        let call = self.call.as_ref()?;
        let key = call.idempotency_key.as_deref()?;
        Some(pair_hash(IDEMPOTENCY_PAIR, &call.api_key, key))
    }

    fn message_hash(&self) -> Option<u64> {
        let api_key = self.api_key()?;
        match &self.message_id {
            MessageId::Null => None,
            MessageId::Text(text) => Some(pair_hash(MESSAGE_PAIR, api_key, text.as_str())),
            MessageId::Other(value) => Some(pair_hash(MESSAGE_PAIR, api_key, &value.to_string())),
        }
    }

    fn matches_message(&self, api_key: &str, message_id: &Value) -> bool {
        self.api_key() == Some(api_key) && self.message_id() == *message_id
    }

    /// Takes the outcome of `settled` (a settlement path's record) and keeps what
    /// this record had from the start.
    fn take_outcome(&mut self, settled: Record) {
        let call = self.call.take();
        let for_other = self.for_other;
        *self = settled;
        self.call = call;
        self.for_other |= for_other;
    }

    /// The record as stored and shown (see docs/delivery-records.md).
    pub fn stored(&self, request_id: u128) -> StoredRecord {
        let call = self.call.as_deref();
        StoredRecord {
            request_id: uuid::Uuid::from_u128(request_id).to_string(),
            kind: self.kind,
            phone_number: self.phone_number().to_string(),
            idempotency_key: call.and_then(|c| c.idempotency_key.as_deref().map(str::to_string)),
            fingerprint: call.map(|c| format!("{:016x}", c.fingerprint)),
            state: self.state,
            written: self.written,
            ack: self.ack,
            message_id: self.message_id(),
            timestamp: self.timestamp,
            device: self.identity.as_deref().map(StoredDevice::of),
            metadata: self.metadata().unwrap_or(Value::Null),
            error: self.error.as_deref().cloned(),
            created_at: call.map_or_else(|| fixed_wall_ms_at(self.updated), |c| c.created_at),
            updated_at: fixed_wall_ms_at(self.updated),
            settled_at: (!self.is_open() && self.state.settled())
                .then(|| fixed_wall_ms_at(self.settled_at)),
            data: self.answer(),
        }
    }
}

/// A record as a store writes it and `getMessageStatus` reads it: every field but the
/// API key (which the process keeps, and a shared store names by its key instead).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    pub request_id: String,
    pub kind: SendKind,
    pub phone_number: String,
    pub idempotency_key: Option<String>,
    /// 16 hex digits (`SendRequest::fingerprint`).
    pub fingerprint: Option<String>,
    pub state: State,
    pub written: bool,
    pub ack: Option<Ack>,
    pub message_id: Value,
    pub timestamp: f64,
    pub device: Option<StoredDevice>,
    pub metadata: Value,
    pub error: Option<GatewayError>,
    pub created_at: u64,
    pub updated_at: u64,
    pub settled_at: Option<u64>,
    /// A custom command's answer (`data`), kept for a call with an `idempotencyKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDevice {
    pub session_id: String,
    pub extension_version: String,
    pub browser: String,
    pub user_id: Value,
}

impl StoredDevice {
    fn of(who: &Identity) -> Self {
        Self {
            session_id: who.session_id().to_string(),
            extension_version: who.extension_version().to_string(),
            browser: who.browser().to_string(),
            user_id: who.user_id.clone(),
        }
    }
}

impl StoredRecord {
    /// A send that has no record yet (a plain call, still pending).
    pub fn pending(
        request_id: u128,
        kind: SendKind,
        phone_number: &str,
        device: Option<&Identity>,
        state: State,
    ) -> Self {
        let now = now_ms();
        Self {
            request_id: uuid::Uuid::from_u128(request_id).to_string(),
            kind,
            phone_number: phone_number.to_string(),
            idempotency_key: None,
            fingerprint: None,
            state,
            written: false,
            ack: None,
            message_id: Value::Null,
            timestamp: 0.0,
            device: device.map(StoredDevice::of),
            metadata: Value::Null,
            error: None,
            created_at: now,
            updated_at: now,
            settled_at: None,
            data: None,
        }
    }

    /// What `getMessageStatus` answers; `state` as seen now (a call still open may be
    /// further along than its record says).
    /// A send names its recipient by `phoneNumber` (null when it named a chat) or
    /// `chatId`; a custom command by `command`.
    pub fn status(&self, state: State) -> Value {
        let mut status = json!({
            "requestId": self.request_id,
            "state": state.as_str(),
            "ack": self.ack.map(Ack::as_str),
            "sessionId": self.device.as_ref().map(|d| d.session_id.as_str()),
            "updatedAt": self.updated_at,
            "messageId": self.message_id,
            "idempotencyKey": self.idempotency_key,
            "metadata": self.metadata,
            "error": self.error.as_ref().map(status_error),
            "kind": self.kind,
            "phoneNumber": Value::Null,
        });
        let to = Recipient::of(self.kind, &self.phone_number);
        status[to.field()] = to.text().into();
        status
    }

    /// The fingerprint as a number, if readable.
    pub fn fingerprint(&self) -> Option<u64> {
        u64::from_str_radix(self.fingerprint.as_deref()?, 16).ok()
    }
}

/// A record's error as `getMessageStatus` shows it: code and message, and the
/// extension's own failure code when it gave one.
fn status_error(error: &GatewayError) -> Value {
    let mut shown = json!({ "code": error.code, "message": error.message });
    if let Some(code) = error.details.get("extensionCode") {
        shown["extensionCode"] = code.clone();
    }
    shown
}

/// A string stored in place when it has at most `N` bytes (`N` < 256).
#[derive(Debug)]
enum ShortText<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<str>),
}

impl<const N: usize> ShortText<N> {
    fn new(text: &str) -> Self {
        if text.len() > N {
            return Self::Heap(text.into());
        }
        let mut bytes = [0; N];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Self::Inline {
            len: text.len() as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `&str` in `new`, so the bytes are UTF-8.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            Self::Heap(text) => text,
        }
    }
}

/// The extension's message id: a string nearly always, any JSON value in principle.
#[derive(Debug)]
enum MessageId {
    Null,
    /// Most WhatsApp message ids fit (`true_<number>@c.us_<20 hex digits>`).
    Text(ShortText<46>),
    Other(Box<Value>),
}

impl MessageId {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::String(text) => Self::Text(ShortText::new(text)),
            other => Self::Other(Box::new(other.clone())),
        }
    }
}

/// A caller waiting for an ack at or above `wait_for`.
#[derive(Debug)]
pub struct Waiter {
    pub call: CallId,
    pub wait_for: Ack,
    pub timeout_ms: u64,
    pub deadline: Instant,
}

/// An ack that moved a send forward.
pub struct Advanced<'a> {
    pub record: &'a Record,
    /// The caller waiting for this ack (or a lower one), now due its result.
    pub waiter: Option<Waiter>,
}

/// What the record of an `idempotencyKey` says to a new call with that key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds it (never used, past its TTL, or freed): the call takes it.
    Free,
    /// Another message used it: `IDEMPOTENCY_KEY_REUSED` naming that request.
    Reused(u128),
    /// Its first call is still open: the new one waits for it.
    Wait(u128),
    /// Its first call settled: the new one settles by that record now.
    Settled(u128),
}

/// A look-up of `getMessageStatus` other than by request id, within one API key.
#[derive(Clone, Debug)]
pub enum StatusKey {
    Idempotency(String),
    /// The extension's message id (any JSON value, a string nearly always).
    Message(Value),
}

/// A late result: the extension's success (its answer, as `Record::sent` takes it, and
/// timestamp) or failure.
pub type LateAnswer = Result<(Value, f64), GatewayError>;

/// How a call ended, for its record.
pub enum Outcome<'a> {
    Resolved {
        identity: Arc<Identity>,
        message_id: &'a Value,
        timestamp: f64,
        ack: Ack,
    },
    Rejected(&'a GatewayError),
}

/// A record's call has settled.
pub struct Closed {
    /// The key is free again (the call failed before writing): the first waiting
    /// call is sent anew.
    pub freed: bool,
    pub waiting: Vec<Waiting>,
}

/// A request id's hash in `Records::by_id`: ids that differ only in their last three
/// bits get neighbouring homes in one aligned run of 8 entries (one cache line), the
/// rest of the id picks the run. This gateway's ids count up (`request_ids`) and its
/// records are written and forgotten in about that order, so eight sends in a row touch
/// one line of the index instead of eight lines at random.
fn by_id_hash(request_id: u128) -> u64 {
    const LOW: u64 = 0b111;
    let run = request_id_hash(request_id >> 3) & !(LOW << SlotIndex::HOME_SHIFT);
    run | ((request_id as u64 & LOW) << SlotIndex::HOME_SHIFT)
}

pub struct Records {
    /// Records in the order they were written, oldest first: the next record goes
    /// where the oldest one was, so recording touches memory in sequence.
    ring: VecDeque<Slot>,
    /// The sequence number of `ring[0]`; each record gets the next one.
    first_seq: u32,
    by_id: SlotIndex,
    /// Records with an `idempotencyKey`, by `(apiKey, key)`: the latest call of each.
    by_key: SlotIndex,
    keyed: usize,
    /// By `(apiKey, messageId)`; made at the first such look-up, kept from then on.
    by_message: Option<SlotIndex>,
    with_message: usize,
    waiters: ById<Waiter>,
    deadlines: BTreeSet<(Instant, u128)>,
    ttl_ms: u64,
    capacity: usize,
    /// Durable mode: request ids whose record changed since the store last took them.
    changed: Option<Vec<u128>>,
}

#[derive(Debug)]
struct Slot {
    request_id: u128,
    record: Record,
}

/// Without the up-front room: the placeholder a registry starts with until
/// `configure`. Allocating the room here and dropping it there would be the process's
/// first free of tens of megabytes, after which glibc serves every allocation below
/// that size (a media copy, Node's own buffers) from its heap and keeps what is freed
/// resident, instead of mapping and unmapping it.
impl Default for Records {
    fn default() -> Self {
        Self::with_room(Duration::from_secs(86_400), DEFAULT_CAPACITY, 16)
    }
}

impl Records {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self::with_room(ttl, capacity, capacity.min(UP_FRONT))
    }

    fn with_room(ttl: Duration, capacity: usize, room: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: VecDeque::with_capacity(room + 1),
            first_seq: 0,
            by_id: SlotIndex::with_room_for(room),
            by_key: SlotIndex::with_room_for(16),
            keyed: 0,
            by_message: None,
            with_message: 0,
            waiters: ById::default(),
            deadlines: BTreeSet::new(),
            ttl_ms: ttl.as_millis() as u64,
            capacity,
            changed: None,
        }
    }

    /// `idempotencyTtl` and `maxMessageStatuses`; forgets every record.
    pub fn configure(&mut self, ttl: Duration, capacity: usize) {
        let changed = self.changed.take().map(|_| Vec::new());
        *self = Self::new(ttl, capacity);
        self.changed = changed;
    }

    /// Durable mode: every change of a record is noted for the store.
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// A record to be taken by `take_changed` again (cluster mode: Redis refused it).
    pub fn changed(&mut self, request_id: u128) {
        self.note(request_id);
    }

    fn note(&mut self, request_id: u128) {
        let Some(changed) = &mut self.changed else {
            return;
        };
        changed.push(request_id);
        // Not taken for a long while (Redis down in cluster mode): each record once, and
        // only those still kept, so it never holds more ids than there are records.
        if changed.len() >= 2 * self.capacity.max(1024) {
            let mut ids = std::mem::take(changed);
            ids.sort_unstable();
            ids.dedup();
            ids.retain(|&id| self.position(id).is_some());
            self.changed = Some(ids);
        }
    }

    /// The records changed since the last call, as the store writes them (with their
    /// API key); each once, whatever its changes.
    pub fn take_changed(&mut self) -> Vec<(Arc<str>, StoredRecord)> {
        let Some(changed) = self.changed.as_mut().filter(|c| !c.is_empty()) else {
            return Vec::new();
        };
        let mut ids = std::mem::take(changed);
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let record = &self.ring[self.position(id)?].record;
                // Run here for another process: that process's record is the one kept.
                if record.for_other {
                    return None;
                }
                let api_key: Arc<str> = match (&record.call, &record.identity) {
                    (Some(call), _) => call.api_key.clone(),
                    (None, Some(who)) => who.api_key.clone(),
                    (None, None) => return None,
                };
                Some((api_key, record.stored(id)))
            })
            .collect()
    }

    /// Durable mode: a command is about to leave for `identity`: its record says it may
    /// have been written from now on.
    pub fn leaving(&mut self, request_id: u128, identity: &Arc<Identity>) {
        if let Some(at) = self.position(request_id) {
            let record = &mut self.ring[at].record;
            if !record.state.settled() {
                record.identity = Some(identity.clone());
                record.state = State::InFlight;
                record.written = true;
                record.updated = monotonic_ms();
                self.note(request_id);
            }
        }
    }

    /// Durable mode: a record read back from the store after a restart. `open`: its
    /// call is taken up again (it waits unwritten), so it is never evicted and its key
    /// makes duplicates wait.
    pub fn restore(
        &mut self,
        api_key: Arc<str>,
        stored: &StoredRecord,
        open: bool,
    ) -> Option<u128> {
        let request_id = uuid::Uuid::try_parse(&stored.request_id).ok()?.as_u128();
        let mut record = Self::restored(api_key, stored, open);
        if self.position(request_id).is_some() {
            return Some(request_id);
        }
        if open {
            record.state = State::Queued;
        }
        if record.call.is_some() {
            self.open(request_id, record);
        } else {
            self.forget_old(record.settled_at, 1);
            self.push(request_id, record);
        }
        Some(request_id)
    }

    fn restored(api_key: Arc<str>, stored: &StoredRecord, open: bool) -> Record {
        let mut record = Record::new(stored.kind, &stored.phone_number, stored.state);
        record.identity = stored.device.as_ref().map(|d| {
            let texts = Texts {
                session_id: &d.session_id,
                ip: "",
                extension_version: &d.extension_version,
                browser: &d.browser,
            };
            Arc::new(Identity::new(
                api_key.clone(),
                d.user_id.clone(),
                texts,
                crate::config::Dialect::Compat,
                Default::default(),
            ))
        });
        record.message_id = MessageId::of(&stored.message_id);
        record.timestamp = stored.timestamp;
        record.ack = stored.ack;
        record.written = stored.written;
        record.updated = monotonic_at(stored.updated_at);
        record.settled_at = monotonic_at(stored.settled_at.unwrap_or(stored.updated_at));
        record.error = stored.error.clone().map(Box::new);
        record.call = Some(Box::new(CallPart {
            api_key,
            idempotency_key: stored.idempotency_key.as_deref().map(Into::into),
            fingerprint: stored.fingerprint().unwrap_or(0),
            metadata: (!stored.metadata.is_null()).then(|| stored.metadata.to_string().into()),
            created_at: stored.created_at,
            open,
            waiting: Vec::new(),
            answer: stored.data.as_ref().map(|data| data.to_string().into()),
        }));
        record
    }

    /// Writes the outcome of a settled send; a record it had from the start keeps
    /// what the call gave it. Returns the record.
    pub fn record(&mut self, request_id: u128, record: Record) -> &Record {
        let at = match self.position(request_id) {
            Some(at) => {
                self.unindex_message(at);
                self.ring[at].record.take_outcome(record);
                self.index_message(at);
                at
            }
            None => {
                self.forget_old(record.settled_at, 1);
                self.push(request_id, record)
            }
        };
        self.note(request_id);
        &self.ring[at].record
    }

    /// Adds the record of a call that has one from the start; its key, if any, now
    /// stands for it.
    pub fn open(&mut self, request_id: u128, record: Record) {
        if let Some(hash) = record.key_hash() {
            // A freed or expired earlier call of the key stops answering for it.
            let call = record.call.as_deref();
            let (api_key, key) = call
                .map(|c| (c.api_key.clone(), c.idempotency_key.clone()))
                .unwrap_or_default();
            if let Some((old, _)) = self.keyed_record(&api_key, key.as_deref().unwrap_or("")) {
                if let Some(at) = self.position(old) {
                    self.by_key.remove(hash, self.seq_at(at));
                    self.keyed -= 1;
                }
            }
        }
        let now = record.updated;
        self.forget_old(now, 1);
        self.push(request_id, record);
        self.note(request_id);
    }

    /// A custom command's answer, for the record of its call (see `Record::answered`).
    pub fn answered(&mut self, request_id: u128, answer: &Value) {
        if let Some(at) = self.position(request_id) {
            self.ring[at].record.answered(answer);
        }
    }

    /// The device now holding an open record's command (cluster mode: another
    /// process's).
    pub fn placed(&mut self, request_id: u128, identity: Arc<Identity>) {
        if let Some(at) = self.position(request_id) {
            let record = &mut self.ring[at].record;
            if !record.state.settled() {
                record.identity = Some(identity);
                record.state = State::InFlight;
                record.updated = monotonic_ms();
                self.note(request_id);
            }
        }
    }

    /// Adds a call to those waiting for the open record `request_id`; gives it back
    /// if that record is not open.
    pub fn wait_for_call(&mut self, request_id: u128, waiting: Waiting) -> Option<Waiting> {
        let at = self.position(request_id);
        match at.and_then(|at| self.ring[at].record.call.as_mut()) {
            Some(call) if call.open => {
                call.waiting.push(waiting);
                None
            }
            _ => Some(waiting),
        }
    }

    /// The call of an open record has settled with `outcome`; a record no settlement
    /// path wrote (a result carried from another process, a refusal before any device)
    /// takes it from there.
    pub fn close(&mut self, request_id: u128, outcome: Outcome) -> Option<Closed> {
        let at = self.position(request_id)?;
        if !self.ring[at].record.state.settled() {
            self.unindex_message(at);
            let record = &mut self.ring[at].record;
            record.updated = monotonic_ms();
            match outcome {
                Outcome::Resolved {
                    identity,
                    message_id,
                    timestamp,
                    ack,
                } => {
                    record.identity = Some(identity);
                    record.state = State::Sent;
                    record.written = true;
                    record.ack = Some(ack);
                    record.answered(message_id);
                    record.timestamp = timestamp;
                }
                Outcome::Rejected(error) => {
                    let (state, written) = State::of_rejection(error);
                    record.state = state;
                    record.written = written;
                    record.error = Some(Box::new(error.clone()));
                }
            }
            self.index_message(at);
        }
        self.note(request_id);
        let record = &mut self.ring[at].record;
        record.settled_at = monotonic_ms();
        let freed = record.freed();
        let call = record.call.as_mut()?;
        call.open = false;
        Some(Closed {
            freed,
            waiting: std::mem::take(&mut call.waiting),
        })
    }

    /// What the record of `(api_key, key)` says to a new call with that fingerprint.
    pub fn claim(&self, api_key: &str, key: &str, fingerprint: u64) -> Claim {
        let Some((request_id, record)) = self.keyed_record(api_key, key) else {
            return Claim::Free;
        };
        let open = record.is_open();
        if !open && (record.freed() || self.expired(record)) {
            return Claim::Free;
        }
        if record.call().is_some_and(|c| c.fingerprint != fingerprint) {
            return Claim::Reused(request_id);
        }
        if open {
            Claim::Wait(request_id)
        } else {
            Claim::Settled(request_id)
        }
    }

    fn expired(&self, record: &Record) -> bool {
        !record.is_open() && monotonic_ms().saturating_sub(record.settled_at) > self.ttl_ms
    }

    fn keyed_record(&self, api_key: &str, key: &str) -> Option<(u128, &Record)> {
        if self.keyed == 0 {
            return None;
        }
        let hash = pair_hash(IDEMPOTENCY_PAIR, api_key, key);
        let at = self.by_key.find(hash, |seq| {
            let at = seq.wrapping_sub(self.first_seq) as usize;
            let slot = self.ring.get(at)?;
            let call = slot.record.call.as_deref()?;
            (&*call.api_key == api_key && call.idempotency_key.as_deref() == Some(key))
                .then_some(at)
        })?;
        let slot = &self.ring[at];
        Some((slot.request_id, &slot.record))
    }

    /// A record within its TTL.
    pub fn get(&self, request_id: u128) -> Option<&Record> {
        let record = &self.ring[self.position(request_id)?].record;
        (!self.expired(record)).then_some(record)
    }

    /// The latest call of `(api_key, idempotency_key)` within its TTL.
    pub fn by_key(&self, api_key: &str, key: &str) -> Option<(u128, &Record)> {
        self.keyed_record(api_key, key)
            .filter(|(_, record)| !self.expired(record))
    }

    /// The records by which this process holds `idempotencyKey`s now, with the TTL
    /// each has left: every key's latest call, unless freed or past its TTL, if it is
    /// still open or settled within `settled_within`. For writing them again to a
    /// shared store that lost them (cluster mode: Redis restarted empty).
    pub fn held_keys(&self, settled_within: Duration) -> Vec<(u128, &Record, Duration)> {
        if self.keyed == 0 {
            return Vec::new();
        }
        let now = monotonic_ms();
        let within = settled_within.as_millis() as u64;
        let held = |slot: &Slot| {
            let record = &slot.record;
            let call = record.call.as_deref()?;
            let key = call.idempotency_key.as_deref()?;
            let age = now.saturating_sub(record.settled_at);
            if !call.open && (record.freed() || age > within || age >= self.ttl_ms) {
                return None;
            }
            let (latest, _) = self.keyed_record(&call.api_key, key)?;
            let left = match call.open {
                true => self.ttl_ms,
                false => self.ttl_ms - age,
            };
            (latest == slot.request_id).then(|| Duration::from_millis(left))
        };
        self.ring
            .iter()
            .filter_map(|slot| held(slot).map(|left| (slot.request_id, &slot.record, left)))
            .collect()
    }

    /// The records this process would write to a shared store (those `take_changed`
    /// gives: not run for another process, not past their TTL), with the TTL each has
    /// left, oldest first, from sequence number `from` on (None: the oldest kept), at
    /// most `max` slots looked at; and where the next page starts (None: no more). For
    /// writing them again, a page at a time, to a shared store that lost them (cluster
    /// mode: Redis restarted empty). A record moved behind the others meanwhile (an
    /// open call the capacity made room around) may come twice, never not at all.
    pub fn kept_from(
        &self,
        from: Option<u32>,
        max: usize,
    ) -> (Vec<(u128, &Record, Duration)>, Option<u32>) {
        let now = monotonic_ms();
        // A start already evicted: the oldest kept is next.
        let start = from
            .map(|seq| seq.wrapping_sub(self.first_seq) as usize)
            .filter(|&at| at <= self.ring.len())
            .unwrap_or(0);
        let end = self.ring.len().min(start.saturating_add(max.max(1)));
        let page = self
            .ring
            .range(start..end)
            .filter_map(|slot| {
                let record = &slot.record;
                if record.for_other || (record.call.is_none() && record.identity.is_none()) {
                    return None;
                }
                let left = match record.is_open() {
                    true => self.ttl_ms,
                    false => self
                        .ttl_ms
                        .checked_sub(now.saturating_sub(record.settled_at))?,
                };
                (left > 0).then(|| (slot.request_id, record, Duration::from_millis(left)))
            })
            .collect();
        let next = (end < self.ring.len()).then(|| self.seq_at(end));
        (page, next)
    }

    /// The latest send of `api_key` whose extension named it `message_id`.
    pub fn by_message(&mut self, api_key: &str, message_id: &Value) -> Option<(u128, &Record)> {
        if self.by_message.is_none() {
            let mut index = SlotIndex::with_room_for(self.ring.len().max(16));
            let mut count = 0;
            for (at, slot) in self.ring.iter().enumerate() {
                if let Some(hash) = slot.record.message_hash() {
                    count += 1;
                    index.insert(hash, self.first_seq.wrapping_add(at as u32), count);
                }
            }
            self.by_message = Some(index);
            self.with_message = count;
        }
        let text = match message_id {
            Value::String(text) => text.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        let hash = pair_hash(MESSAGE_PAIR, api_key, &text);
        let index = self.by_message.as_ref()?;
        let (first_seq, ring) = (self.first_seq, &self.ring);
        // The newest of several sends with that id (an extension may repeat one).
        let newest = std::cell::Cell::new(None::<usize>);
        index.find(hash, |seq| {
            let at = seq.wrapping_sub(first_seq) as usize;
            let matches = ring
                .get(at)
                .is_some_and(|s| s.record.matches_message(api_key, message_id));
            if matches && newest.get().is_none_or(|n| at > n) {
                newest.set(Some(at));
            }
            None::<()>
        });
        let newest = newest.get();
        let slot = &self.ring[newest?];
        (!self.expired(&slot.record)).then_some((slot.request_id, &slot.record))
    }

    /// A `message-result` for a send whose call has settled without one: an `unknown`
    /// record of `api_key` takes the extension's word. Returns the record it changed.
    pub fn late(
        &mut self,
        request_id: u128,
        api_key: &str,
        answered_by: Arc<Identity>,
        answer: LateAnswer,
    ) -> Option<&Record> {
        let at = self.position(request_id)?;
        let record = &self.ring[at].record;
        if record.state != State::Unknown
            || record.api_key() != Some(api_key)
            || self.expired(record)
        {
            return None;
        }
        self.unindex_message(at);
        let record = &mut self.ring[at].record;
        record.identity = Some(answered_by);
        record.updated = monotonic_ms();
        match answer {
            Ok((answer, timestamp)) => {
                record.state = State::Sent;
                record.ack = Some(Ack::Sent);
                record.answered(&answer);
                record.timestamp = timestamp;
                record.error = None;
            }
            Err(error) => {
                record.state = State::Failed;
                record.error = Some(Box::new(error));
            }
        }
        self.index_message(at);
        self.note(request_id);
        Some(&self.ring[at].record)
    }

    fn push(&mut self, request_id: u128, record: Record) -> usize {
        let seq = self.first_seq.wrapping_add(self.ring.len() as u32);
        let key = record.key_hash();
        let message = self.by_message.as_ref().and_then(|_| record.message_hash());
        self.ring.push_back(Slot { request_id, record });
        let len = self.ring.len();
        self.by_id.insert(by_id_hash(request_id), seq, len);
        if let Some(hash) = key {
            self.keyed += 1;
            self.by_key.insert(hash, seq, self.keyed);
        }
        if let (Some(index), Some(hash)) = (self.by_message.as_mut(), message) {
            self.with_message += 1;
            index.insert(hash, seq, self.with_message);
        }
        len - 1
    }

    fn seq_at(&self, at: usize) -> u32 {
        self.first_seq.wrapping_add(at as u32)
    }

    fn unindex_message(&mut self, at: usize) {
        let seq = self.seq_at(at);
        if let (Some(index), Some(hash)) = (
            self.by_message.as_mut(),
            self.ring[at].record.message_hash(),
        ) {
            index.remove(hash, seq);
            self.with_message -= 1;
        }
    }

    fn index_message(&mut self, at: usize) {
        let seq = self.seq_at(at);
        if let (Some(index), Some(hash)) = (
            self.by_message.as_mut(),
            self.ring[at].record.message_hash(),
        ) {
            self.with_message += 1;
            index.insert(hash, seq, self.with_message);
        }
    }

    /// Takes the oldest record out of the ring and every index.
    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.ring.pop_front()?;
        let seq = self.first_seq;
        self.first_seq = self.first_seq.wrapping_add(1);
        self.by_id.remove(by_id_hash(slot.request_id), seq);
        if let Some(hash) = slot.record.key_hash() {
            // Absent when a later call of the key took its place.
            let before = self.by_key_holds(hash, seq);
            self.by_key.remove(hash, seq);
            if before {
                self.keyed -= 1;
            }
        }
        if let (Some(index), Some(hash)) = (self.by_message.as_mut(), slot.record.message_hash()) {
            index.remove(hash, seq);
            self.with_message -= 1;
        }
        Some(slot)
    }

    fn by_key_holds(&self, hash: u64, seq: u32) -> bool {
        self.by_key
            .find(hash, |s| (s == seq).then_some(()))
            .is_some()
    }

    /// Where `request_id` is in `ring`.
    fn position(&self, request_id: u128) -> Option<usize> {
        let (first_seq, ring) = (self.first_seq, &self.ring);
        self.by_id.find(by_id_hash(request_id), |seq| {
            let at = seq.wrapping_sub(first_seq) as usize;
            ring.get(at)
                .filter(|s| s.request_id == request_id)
                .map(|_| at)
        })
    }

    /// Drops records past the TTL, and the oldest while `room` more would pass the
    /// capacity. A record whose call is still open, or whose caller waits for an ack,
    /// is kept (there are never more of those than sends in flight), moved behind the
    /// others. A record with an `idempotencyKey` dropped for room is counted: its key
    /// is forgotten before its TTL.
    fn forget_old(&mut self, now: u64, room: usize) {
        let mut skipped = 0;
        while let Some(oldest) = self.ring.front() {
            if skipped >= self.ring.len() {
                break;
            }
            let record = &oldest.record;
            let expired = !record.is_open() && now.saturating_sub(record.settled_at) > self.ttl_ms;
            if !expired && self.ring.len() + room <= self.capacity {
                break;
            }
            let keep = record.is_open()
                || (!self.waiters.is_empty() && self.waiters.contains_key(&oldest.request_id));
            let Some(slot) = self.pop_front() else {
                break;
            };
            if keep {
                self.push(slot.request_id, slot.record);
                skipped += 1;
            } else if !expired && slot.record.has_key() {
                metrics::status_evicted();
            }
        }
    }

    /// Keeps the caller of a sent request waiting for a later ack.
    pub fn wait(&mut self, request_id: u128, waiter: Waiter) {
        self.deadlines.insert((waiter.deadline, request_id));
        self.waiters.insert(request_id, waiter);
    }

    /// Applies an ack from a session of `api_key`: only to a send of that key that
    /// succeeded, and only forward.
    pub fn advance(
        &mut self,
        request_id: u128,
        api_key: &str,
        ack: Ack,
        message_id: Value,
    ) -> Option<Advanced<'_>> {
        let at = self.position(request_id)?;
        let record = &self.ring[at].record;
        // A custom command has no delivery to acknowledge.
        if record.api_key() != Some(api_key)
            || record.state != State::Sent
            || record.kind == SendKind::Command
        {
            return None;
        }
        if record.ack.is_some_and(|known| known >= ack) {
            return None;
        }
        let new_id = !message_id.is_null();
        if new_id {
            self.unindex_message(at);
        }
        let record = &mut self.ring[at].record;
        record.ack = Some(ack);
        record.updated = monotonic_ms();
        if new_id {
            record.message_id = MessageId::of(&message_id);
            self.index_message(at);
        }
        let due = self
            .waiters
            .get(&request_id)
            .is_some_and(|w| w.wait_for <= ack);
        let waiter = if due {
            self.waiters.remove(&request_id).inspect(|w| {
                self.deadlines.remove(&(w.deadline, request_id));
            })
        } else {
            None
        };
        self.note(request_id);
        let record = &self.ring[at].record;
        Some(Advanced { record, waiter })
    }

    /// Takes the waiters whose timeout has passed, with their records.
    pub fn expire(&mut self, now: Instant) -> Vec<(u128, Waiter, Option<Ack>, Arc<str>)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, request_id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(waiter) = self.waiters.remove(&request_id) {
                let (ack, session_id) = self.ack_and_session(request_id);
                expired.push((request_id, waiter, ack, session_id));
            }
        }
        expired
    }

    fn ack_and_session(&self, request_id: u128) -> (Option<Ack>, Arc<str>) {
        let record = self.position(request_id).map(|at| &self.ring[at].record);
        let session = record
            .and_then(|r| r.identity.as_ref())
            .map_or_else(|| Arc::from(""), |who| Arc::from(who.session_id()));
        (record.and_then(|r| r.ack), session)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Every waiting caller, for `stop()`.
    pub fn take_waiters(&mut self) -> Vec<(u128, Waiter, Arc<str>)> {
        self.deadlines.clear();
        let waiters = std::mem::take(&mut self.waiters);
        waiters
            .into_iter()
            .map(|(id, w)| (id, w, self.ack_and_session(id).1))
            .collect()
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(api_key: &str) -> Arc<Identity> {
        Arc::new(Identity::for_test(api_key, "s1"))
    }

    fn sent(key: &str) -> Record {
        Record::sent(who(key), SendKind::Message, "+1", &Value::from("m1"), 1.0)
    }

    fn request(key: Option<&str>, text: &str) -> SendRequest {
        let mut r = SendRequest::new(SendKind::Message, "k".into(), "+1".into(), text.into());
        r.idempotency_key = key.map(str::to_string);
        r
    }

    #[test]
    fn eight_consecutive_request_ids_share_one_run_of_the_index() {
        let ids = crate::state::request_ids::RequestIds::default();
        let homes: Vec<u64> = (0..64)
            .map(|_| by_id_hash(ids.next().as_u128()) >> SlotIndex::HOME_SHIFT)
            .collect();
        // The ids start anywhere in a run of 8; every run they fill is one home block.
        let runs: std::collections::BTreeSet<u64> = homes.iter().map(|h| h >> 3).collect();
        assert!(runs.len() <= 9, "{} runs for 64 ids", runs.len());
        for pair in homes.windows(2) {
            if pair[1] & 7 != 0 {
                assert_eq!(pair[1], pair[0] + 1);
            }
        }
        // And ids are still found among many, whichever way they were made.
        let mut records = Records::new(Duration::from_secs(60), 1000);
        let mine: Vec<u128> = (0..600).map(|_| ids.next().as_u128()).collect();
        let others: Vec<u128> = (0..400).map(|_| uuid::Uuid::new_v4().as_u128()).collect();
        for id in mine.iter().chain(&others) {
            records.record(*id, sent("k"));
        }
        for id in mine.iter().chain(&others) {
            assert!(records.get(*id).is_some());
        }
        assert!(records.get(ids.next().as_u128()).is_none());
    }

    #[test]
    fn a_commands_answer_is_kept_only_for_its_idempotency_key() {
        let mut records = Records::default();
        let command = |key: Option<&str>| {
            let mut r = SendRequest::new(
                SendKind::Command,
                "k".into(),
                "check-number".into(),
                "{}".into(),
            );
            r.idempotency_key = key.map(str::to_string);
            r
        };
        records.open(1, Record::opened(&command(Some("i")), "k".into()));
        let answer = json!({ "onWhatsApp": true });
        let sent = || Record::sent(who("k"), SendKind::Command, "check-number", &answer, 1.0);
        records.record(1, sent());
        records.answered(1, &answer);
        let stored = records.get(1).unwrap().stored(1);
        assert_eq!(stored.data, Some(answer.clone()));
        assert_eq!(stored.message_id, Value::Null, "an answer is no message id");
        assert_eq!(stored.ack, None, "a command has no acks");
        let status = stored.status(stored.state);
        assert_eq!(status["command"], "check-number");
        assert_eq!(status["phoneNumber"], Value::Null);
        assert!(records.advance(1, "k", Ack::Read, Value::Null).is_none());

        records.record(2, sent());
        records.answered(2, &answer);
        assert_eq!(
            records.get(2).unwrap().stored(2).data,
            None,
            "a plain call keeps no answer"
        );

        let group = "120363025246125486@g.us";
        let chat = Record::sent(who("k"), SendKind::Message, group, &Value::from("m"), 1.0);
        let stored = chat.stored(3);
        let status = stored.status(stored.state);
        assert_eq!(status["chatId"], group);
        assert_eq!(status["phoneNumber"], Value::Null);
    }

    fn timeout() -> GatewayError {
        GatewayError::new(
            ErrorCode::RequestTimeout,
            "timed out",
            json!({ "sent": true }),
        )
    }

    #[test]
    fn forgets_the_oldest_first_over_capacity() {
        let mut records = Records::new(Duration::from_secs(60), 3);
        for id in 1..=5 {
            records.record(id, sent("k"));
        }
        assert_eq!(records.remembered(), 3);
        assert!(records.get(1).is_none() && records.get(2).is_none());
        assert_eq!(records.get(5).unwrap().state, State::Sent);
    }

    #[test]
    fn changes_not_taken_for_long_hold_each_kept_record_once() {
        let mut records = Records::new(Duration::from_secs(60), 3);
        records.track_changes();
        for round in 0..2000 {
            records.record(round % 5 + 1, sent("k"));
            records.changed(round % 5 + 1);
        }
        assert!(
            records.changed.as_ref().unwrap().len() <= 2 * 1024,
            "bounded while not taken"
        );
        let mut taken: Vec<String> = records
            .take_changed()
            .into_iter()
            .map(|(_, r)| r.request_id)
            .collect();
        taken.sort();
        let kept: Vec<String> = (3..=5)
            .map(|id| uuid::Uuid::from_u128(id).to_string())
            .collect();
        assert_eq!(taken, kept, "the newest three, each once");
    }

    #[tokio::test(start_paused = true)]
    async fn acks_move_forward_only_and_release_their_waiter() {
        let mut records = Records::default();
        records.record(1, sent("k"));
        let deadline = Instant::now() + Duration::from_secs(5);
        records.wait(
            1,
            Waiter {
                call: 9,
                wait_for: Ack::Delivered,
                timeout_ms: 5000,
                deadline,
            },
        );
        assert!(
            records
                .advance(1, "other", Ack::Read, Value::Null)
                .is_none(),
            "another key"
        );
        let server = records.advance(1, "k", Ack::Server, Value::Null).unwrap();
        assert!(server.waiter.is_none());
        assert!(
            records.advance(1, "k", Ack::Server, Value::Null).is_none(),
            "repeated"
        );
        let read = records
            .advance(1, "k", Ack::Read, Value::from("m2"))
            .unwrap();
        assert_eq!(read.waiter.unwrap().call, 9);
        assert_eq!(read.record.message_id(), Value::from("m2"));
        assert!(
            records
                .advance(1, "k", Ack::Delivered, Value::Null)
                .is_none(),
            "late"
        );
        assert_eq!(records.get(1).unwrap().ack, Some(Ack::Read));
        assert!(records.next_deadline().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_expires_with_the_highest_ack_known() {
        let mut records = Records::default();
        records.record(1, sent("k"));
        let failed = GatewayError::new(ErrorCode::ExtensionError, "no", json!({}));
        records.record(
            2,
            Record::rejected(who("k"), SendKind::Message, "+1", &failed),
        );
        assert!(
            records.advance(2, "k", Ack::Server, Value::Null).is_none(),
            "failed sends take no acks"
        );
        let deadline = Instant::now() + Duration::from_millis(100);
        records.wait(
            1,
            Waiter {
                call: 3,
                wait_for: Ack::Read,
                timeout_ms: 100,
                deadline,
            },
        );
        records.advance(1, "k", Ack::Server, Value::Null);
        tokio::time::advance(Duration::from_millis(150)).await;
        let expired = records.expire(Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].2, Some(Ack::Server));
        assert_eq!(records.get(1).unwrap().state, State::Sent);
        assert_eq!(records.waiting(), 0);
    }

    #[test]
    fn keeps_exactly_the_newest_records_through_many_evictions() {
        // Ids both random (as the gateway makes them) and clustered (worst case for
        // linear probing), well past one wrap of the ring.
        let mut records = Records::new(Duration::from_secs(60), 1000);
        let mut rng = fastrand::Rng::with_seed(7);
        let ids: Vec<u128> = (0..5000u128)
            .map(|i| {
                if i % 2 == 0 {
                    rng.u128(..)
                } else {
                    i << 64 | 1
                }
            })
            .collect();
        for (n, id) in ids.iter().enumerate() {
            records.record(*id, sent("k"));
            assert_eq!(records.remembered(), (n + 1).min(1000));
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(records.get(*id).is_some(), n >= 4000, "record {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_whose_caller_waits_outlives_capacity_and_stays_found() {
        let mut records = Records::new(Duration::from_secs(60), 2);
        records.record(1, sent("k"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiter = Waiter {
            call: 1,
            wait_for: Ack::Read,
            timeout_ms: 5000,
            deadline,
        };
        records.wait(1, waiter);
        for id in 2..=10 {
            records.record(id, sent("k"));
        }
        assert_eq!(records.remembered(), 2, "the waiting one and the newest");
        assert!(records.get(2).is_none() && records.get(9).is_none());
        assert!(records.get(1).is_some() && records.get(10).is_some());
        let read = records.advance(1, "k", Ack::Read, Value::Null).unwrap();
        assert_eq!(read.waiter.unwrap().call, 1);
        records.record(11, sent("k"));
        assert!(
            records.get(1).is_none(),
            "no longer waited for: the oldest goes"
        );
        assert!(records.get(10).is_some() && records.get(11).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn forgets_records_past_the_ttl() {
        let mut records = Records::new(Duration::from_secs(60), 100);
        records.record(1, sent("k"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(records.get(1).is_none());
        records.record(2, sent("k"));
        assert_eq!(records.remembered(), 1);
    }

    #[test]
    fn keeps_long_and_non_string_texts_whole() {
        let mut records = Records::default();
        let long_phone = format!("+{}", "9".repeat(40));
        let long_id = format!("false_{}@g.us_{}", "1".repeat(30), "A".repeat(40));
        let id = Value::from(long_id.as_str());
        records.record(
            1,
            Record::sent(who("k"), SendKind::Message, &long_phone, &id, 1.0),
        );
        let other = json!({ "id": 5 });
        records.record(
            2,
            Record::sent(who("k"), SendKind::Message, "+1", &other, 1.0),
        );
        let one = records.advance(1, "k", Ack::Server, Value::Null).unwrap();
        assert_eq!(one.record.phone_number(), long_phone);
        assert_eq!(one.record.message_id(), id);
        let two = records.advance(2, "k", Ack::Server, Value::Null).unwrap();
        assert_eq!(two.record.message_id(), other);
        assert_eq!(two.record.phone_number(), "+1");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotency_key_is_held_while_open_and_answers_by_its_record() {
        let mut records = Records::new(Duration::from_secs(60), 100);
        let first = request(Some("order-1"), "pay");
        let fp = first.fingerprint();
        assert_eq!(records.claim("k", "order-1", fp), Claim::Free);
        records.open(1, Record::opened(&first, "k".into()));
        assert_eq!(records.claim("k", "order-1", fp), Claim::Wait(1));
        assert_eq!(records.claim("other", "order-1", fp), Claim::Free);
        let other = request(Some("order-1"), "pay twice").fingerprint();
        assert_eq!(records.claim("k", "order-1", other), Claim::Reused(1));
        assert!(records
            .wait_for_call(1, (7, request(Some("order-1"), "pay")))
            .is_none());

        // Timed out: unknown, the key kept; its waiting call settles by it.
        records.record(
            1,
            Record::rejected(who("k"), SendKind::Message, "+1", &timeout()),
        );
        let closed = records.close(1, Outcome::Rejected(&timeout())).unwrap();
        assert!(!closed.freed);
        assert_eq!(closed.waiting.len(), 1);
        assert_eq!(records.get(1).unwrap().state, State::Unknown);
        assert_eq!(records.claim("k", "order-1", fp), Claim::Settled(1));
        assert_eq!(records.by_key("k", "order-1").unwrap().0, 1);

        // A late success: sent, findable by its message id.
        let late = records
            .late(1, "k", who("k"), Ok((Value::from("wa-1"), 5.0)))
            .unwrap();
        assert_eq!(late.state, State::Sent);
        assert!(
            records
                .late(1, "k", who("k"), Ok((Value::from("wa-2"), 6.0)))
                .is_none(),
            "only once"
        );
        assert_eq!(records.by_message("k", &Value::from("wa-1")).unwrap().0, 1);
        assert!(records.by_message("other", &Value::from("wa-1")).is_none());
        let status = records.get(1).unwrap().stored(1);
        assert_eq!(status.idempotency_key.as_deref(), Some("order-1"));
        assert_eq!(status.error, None);

        // TTL counts from the settlement.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(records.claim("k", "order-1", fp), Claim::Free);
    }

    #[test]
    fn a_failure_before_writing_frees_the_key_for_the_next_call() {
        let mut records = Records::new(Duration::from_secs(60), 100);
        let first = request(Some("a"), "x");
        records.open(1, Record::opened(&first, "k".into()));
        let no_device =
            GatewayError::new(ErrorCode::NoActiveDevice, "none", json!({ "sent": false }));
        let closed = records.close(1, Outcome::Rejected(&no_device)).unwrap();
        assert!(closed.freed);
        assert_eq!(records.get(1).unwrap().state, State::Failed);
        assert_eq!(records.claim("k", "a", first.fingerprint()), Claim::Free);
        records.open(2, Record::opened(&first, "k".into()));
        assert_eq!(records.claim("k", "a", first.fingerprint()), Claim::Wait(2));
        assert_eq!(records.by_key("k", "a").unwrap().0, 2);
        assert!(records.get(1).is_some(), "the first's record stays");
    }

    #[tokio::test(start_paused = true)]
    async fn the_keys_held_are_the_open_calls_and_those_settled_lately_not_freed_or_replaced() {
        let mut records = Records::new(Duration::from_secs(7200), 100);
        let keyed = |key: &str| request(Some(key), "x");
        records.open(1, Record::opened(&keyed("old"), "k".into()));
        records.close(1, Outcome::Rejected(&timeout()));
        tokio::time::advance(Duration::from_secs(1801)).await;
        records.open(2, Record::opened(&keyed("settled"), "k".into()));
        records.close(2, Outcome::Rejected(&timeout()));
        records.open(3, Record::opened(&keyed("open"), "k".into()));
        records.open(4, Record::opened(&keyed("freed"), "k".into()));
        let no_device =
            GatewayError::new(ErrorCode::NoActiveDevice, "none", json!({ "sent": false }));
        records.close(4, Outcome::Rejected(&no_device));
        // Freed, then taken again by a later call: that call holds it.
        records.open(5, Record::opened(&keyed("freed"), "k".into()));
        records.record(6, sent("k"));
        tokio::time::advance(Duration::from_secs(1800)).await;
        let held = |records: &Records| {
            let mut held: Vec<(u128, u64)> = records
                .held_keys(Duration::from_secs(3600))
                .into_iter()
                .map(|(id, _, left)| (id, left.as_secs()))
                .collect();
            held.sort_unstable();
            held
        };
        // "old" settled 3601 s ago (out of the hour); "settled" 1800 s ago has 5400 s
        // of its TTL left; open calls keep the whole TTL.
        assert_eq!(held(&records), [(2, 5400), (3, 7200), (5, 7200)]);
        records.close(3, Outcome::Rejected(&timeout()));
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert_eq!(held(&records), [(5, 7200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_records_kept_come_a_page_at_a_time_with_the_ttl_they_have_left() {
        let mut records = Records::new(Duration::from_secs(60), 100);
        records.record(1, sent("k"));
        tokio::time::advance(Duration::from_secs(40)).await;
        records.record(2, sent("k"));
        records.open(3, Record::opened(&request(Some("a"), "x"), "k".into()));
        records.record(4, sent("k"));
        records.ring[3].record.for_other = true;
        records.record(5, sent("k"));
        tokio::time::advance(Duration::from_secs(30)).await;
        let all = |records: &Records, max: usize| {
            let (mut seen, mut from, mut pages) = (Vec::new(), None, 0);
            loop {
                let (page, next) = records.kept_from(from, max);
                pages += 1;
                seen.extend(page.into_iter().map(|(id, _, left)| (id, left.as_secs())));
                match next {
                    Some(next) => from = Some(next),
                    None => return (seen, pages),
                }
            }
        };
        // 1 is past its TTL, 4 ran here for another process (whose record is the
        // caller's); an open call keeps its whole TTL.
        assert_eq!(all(&records, 2), (vec![(2, 30), (3, 60), (5, 30)], 3));
        assert_eq!(all(&records, 100), (vec![(2, 30), (3, 60), (5, 30)], 1));

        // A page's start evicted meanwhile: the next starts at the oldest kept.
        let mut records = Records::new(Duration::from_secs(60), 3);
        for id in 1..=3 {
            records.record(id, sent("k"));
        }
        let (page, next) = records.kept_from(None, 1);
        assert_eq!(page.iter().map(|(id, ..)| *id).collect::<Vec<_>>(), [1]);
        for id in 4..=5 {
            records.record(id, sent("k"));
        }
        let (page, next) = records.kept_from(next, 10);
        assert_eq!(
            page.iter().map(|(id, ..)| *id).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(next, None);
    }

    #[test]
    fn open_records_are_never_evicted_and_keyed_evictions_are_counted() {
        let mut records = Records::new(Duration::from_secs(60), 3);
        records.open(1, Record::opened(&request(Some("open"), "x"), "k".into()));
        records.open(2, Record::opened(&request(Some("done"), "x"), "k".into()));
        records.close(
            2,
            Outcome::Resolved {
                identity: who("k"),
                message_id: &Value::from("m"),
                timestamp: 1.0,
                ack: Ack::Sent,
            },
        );
        let before = metrics::snapshot().status_evictions;
        for id in 3..=10 {
            records.record(id, sent("k"));
        }
        assert!(records.get(1).is_some(), "open: kept");
        assert!(records.get(2).is_none(), "settled: evicted");
        assert!(metrics::snapshot().status_evictions > before);
        assert_eq!(
            records.claim("k", "done", request(None, "x").fingerprint()),
            Claim::Free
        );
    }
}
