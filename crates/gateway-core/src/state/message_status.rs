//! What became of recent sends (`getMessageStatus`), and the sends whose caller waits
//! for an acknowledgement beyond the extension's result (`waitFor`). Lives inside the
//! registry, so that recording a settled send takes no lock of its own.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::clock::{monotonic_ms, wall_ms_at};
use crate::identity::{CallId, Identity};
use crate::protocol::delivery::Ack;

/// At most this many settled sends are remembered; the oldest go first.
pub const MAX_REMEMBERED: usize = 20_000;

/// Request ids are random UUIDs the gateway made itself (an extension can only look
/// one up, never add one): mixing their halves is hash enough, and much cheaper on
/// the send path than SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = ((n as u64) ^ ((n >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ById<V> = HashMap<u128, V, BuildHasherDefault<IdHasher>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Queued,
    InFlight,
    Sent,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InFlight => "in-flight",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

/// A settled send. Written on every send, read only by `getMessageStatus` and acks:
/// its texts are kept inline when short (no allocation to make now and free cold
/// 20 000 sends later).
#[derive(Debug)]
pub struct Record {
    /// The session it was sent to.
    pub identity: Arc<Identity>,
    /// E.164 numbers have at most 16 bytes.
    phone_number: ShortText<22>,
    /// The extension's, from its result.
    message_id: MessageId,
    /// The result's timestamp (ms since the epoch).
    pub timestamp: f64,
    pub state: State,
    /// `None` unless the extension reported success.
    pub ack: Option<Ack>,
    /// `monotonic_ms()` of the last change; shown as wall-clock time.
    updated: u64,
    settled_at: u64,
}

impl Record {
    pub fn sent(
        identity: Arc<Identity>,
        phone_number: &str,
        message_id: &Value,
        timestamp: f64,
    ) -> Self {
        Self::new(
            identity,
            phone_number,
            MessageId::of(message_id),
            timestamp,
            State::Sent,
            Some(Ack::Sent),
        )
    }

    pub fn failed(identity: Arc<Identity>, phone_number: &str) -> Self {
        Self::new(
            identity,
            phone_number,
            MessageId::Null,
            0.0,
            State::Failed,
            None,
        )
    }

    fn new(
        identity: Arc<Identity>,
        phone_number: &str,
        message_id: MessageId,
        timestamp: f64,
        state: State,
        ack: Option<Ack>,
    ) -> Self {
        // One clock reading per send.
        let now = monotonic_ms();
        Self {
            identity,
            phone_number: ShortText::new(phone_number),
            message_id,
            timestamp,
            state,
            ack,
            updated: now,
            settled_at: now,
        }
    }

    pub fn phone_number(&self) -> &str {
        self.phone_number.as_str()
    }

    pub fn message_id(&self) -> Value {
        match &self.message_id {
            MessageId::Null => Value::Null,
            MessageId::Text(text) => Value::from(text.as_str()),
            MessageId::Other(value) => (**value).clone(),
        }
    }
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

/// What `getMessageStatus` answers.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageStatus {
    pub request_id: u128,
    pub state: State,
    pub ack: Option<Ack>,
    pub session_id: Arc<str>,
    pub updated_at: u64,
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

pub struct MessageStatuses {
    /// Settled sends in the order they settled, oldest first: the next record goes
    /// where the oldest one was, so recording touches memory in sequence.
    ring: VecDeque<Slot>,
    /// The sequence number of `ring[0]`; each record gets the next one.
    first_seq: u32,
    index: SlotIndex,
    waiters: ById<Waiter>,
    deadlines: BTreeSet<(Instant, u128)>,
    ttl_ms: u64,
    capacity: usize,
}

#[derive(Debug)]
struct Slot {
    request_id: u128,
    record: Record,
}

impl Default for MessageStatuses {
    fn default() -> Self {
        Self::new(Duration::from_secs(86_400), MAX_REMEMBERED)
    }
}

impl MessageStatuses {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: VecDeque::new(),
            first_seq: 0,
            index: SlotIndex::with_room_for(capacity.min(MAX_REMEMBERED)),
            waiters: ById::default(),
            deadlines: BTreeSet::new(),
            ttl_ms: ttl.as_millis() as u64,
            capacity,
        }
    }

    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl_ms = ttl.as_millis() as u64;
    }

    pub fn record(&mut self, request_id: u128, record: Record) {
        let settled_at = record.settled_at;
        if let Some(at) = self.position(request_id) {
            self.ring[at].record = record;
        } else {
            self.forget_old(settled_at, 1);
            self.push(request_id, record);
        }
    }

    fn push(&mut self, request_id: u128, record: Record) {
        let seq = self.first_seq.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(Slot { request_id, record });
        self.index.insert(request_id, seq, self.ring.len());
    }

    /// Where `request_id` is in `ring`.
    fn position(&self, request_id: u128) -> Option<usize> {
        let (first_seq, ring) = (self.first_seq, &self.ring);
        self.index
            .find(request_id, |seq| {
                let at = seq.wrapping_sub(first_seq) as usize;
                ring.get(at)
                    .filter(|s| s.request_id == request_id)
                    .map(|_| at)
            })
            .map(|(_, at)| at)
    }

    fn record_of(&self, request_id: u128) -> Option<&Record> {
        self.position(request_id).map(|at| &self.ring[at].record)
    }

    /// Drops records past the TTL, and the oldest while `room` more would pass the
    /// capacity; a record whose caller still waits for an ack is kept (there are never
    /// more of those than sends in flight), moved behind the others.
    fn forget_old(&mut self, now: u64, room: usize) {
        let mut skipped = 0;
        while let Some(oldest) = self.ring.front() {
            if skipped >= self.ring.len() {
                break;
            }
            let expired = now.saturating_sub(oldest.record.settled_at) > self.ttl_ms;
            if !expired && self.ring.len() + room <= self.capacity {
                break;
            }
            let request_id = oldest.request_id;
            self.index.remove(request_id, self.first_seq);
            let Some(slot) = self.ring.pop_front() else {
                break;
            };
            self.first_seq = self.first_seq.wrapping_add(1);
            if !self.waiters.is_empty() && self.waiters.contains_key(&request_id) {
                self.push(request_id, slot.record);
                skipped += 1;
            }
        }
    }

    pub fn get(&self, request_id: u128) -> Option<MessageStatus> {
        let record = self.record_of(request_id)?;
        if monotonic_ms().saturating_sub(record.settled_at) > self.ttl_ms {
            return None;
        }
        Some(MessageStatus {
            request_id,
            state: record.state,
            ack: record.ack,
            session_id: record.identity.session_id.clone(),
            updated_at: wall_ms_at(record.updated),
        })
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
        let record = &mut self.ring[at].record;
        if *record.identity.api_key != *api_key || record.state != State::Sent {
            return None;
        }
        if record.ack.is_some_and(|known| known >= ack) {
            return None;
        }
        record.ack = Some(ack);
        record.updated = monotonic_ms();
        if !message_id.is_null() {
            record.message_id = MessageId::of(&message_id);
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
                let (ack, session_id) = self
                    .record_of(request_id)
                    .map_or((None, Arc::from("")), |r| {
                        (r.ack, r.identity.session_id.clone())
                    });
                expired.push((request_id, waiter, ack, session_id));
            }
        }
        expired
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
            .map(|(id, w)| {
                let session = self
                    .record_of(id)
                    .map_or(Arc::from(""), |r| r.identity.session_id.clone());
                (id, w, session)
            })
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

/// Request id -> sequence number of its slot in the ring: open addressing with
/// linear probing over `u64` entries (31 bits of the id's hash, 32 of the sequence
/// number), a quarter of a megabyte at 20 000 records. Entries keep their hash so
/// that removing one (every send, once full) never reads the ring.
struct SlotIndex {
    entries: Vec<u64>,
    mask: usize,
}

const EMPTY: u64 = u64::MAX;

impl SlotIndex {
    fn with_room_for(records: usize) -> Self {
        let size = (records * 2).next_power_of_two().max(16);
        Self {
            entries: vec![EMPTY; size],
            mask: size - 1,
        }
    }

    /// Request ids are random UUIDs the gateway made (an extension can only look one
    /// up, never add one); the multiply also spreads ids that are not.
    fn hash(request_id: u128) -> u64 {
        let mixed = (request_id as u64) ^ ((request_id >> 64) as u64);
        mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33
    }

    fn entry(hash: u64, seq: u32) -> u64 {
        (hash << 32) | u64::from(seq)
    }

    fn home(&self, entry: u64) -> usize {
        (entry >> 32) as usize & self.mask
    }

    /// The bucket and `found(seq)` of the entry for `request_id`, where `found`
    /// confirms that the slot with that sequence number holds it.
    fn find<T>(&self, request_id: u128, found: impl Fn(u32) -> Option<T>) -> Option<(usize, T)> {
        let hash = Self::hash(request_id);
        let mut at = hash as usize & self.mask;
        loop {
            let entry = self.entries[at];
            if entry == EMPTY {
                return None;
            }
            if entry >> 32 == hash {
                if let Some(value) = found(entry as u32) {
                    return Some((at, value));
                }
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds an id that is not there; `len` entries there will be with it.
    fn insert(&mut self, request_id: u128, seq: u32, len: usize) {
        if len * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let entry = Self::entry(Self::hash(request_id), seq);
        let mut at = self.home(entry);
        while self.entries[at] != EMPTY {
            at = (at + 1) & self.mask;
        }
        self.entries[at] = entry;
    }

    /// Removes the entry of `request_id` whose slot has sequence number `seq`.
    fn remove(&mut self, request_id: u128, seq: u32) {
        let wanted = Self::entry(Self::hash(request_id), seq);
        let Some((mut hole, ())) = self.find(request_id, |s| (s == seq).then_some(())) else {
            return;
        };
        debug_assert_eq!(self.entries[hole], wanted);
        // Backward shift: entries after the hole that may sit in it move up, so that
        // every entry stays reachable from its home without tombstones.
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let entry = self.entries[next];
            if entry == EMPTY {
                break;
            }
            let home = self.home(entry);
            if next.wrapping_sub(home) & self.mask >= next.wrapping_sub(hole) & self.mask {
                self.entries[hole] = entry;
                hole = next;
            }
        }
        self.entries[hole] = EMPTY;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; (self.mask + 1) * 2]);
        self.mask = self.entries.len() - 1;
        for entry in old.into_iter().filter(|e| *e != EMPTY) {
            let mut at = self.home(entry);
            while self.entries[at] != EMPTY {
                at = (at + 1) & self.mask;
            }
            self.entries[at] = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(api_key: &str) -> Arc<Identity> {
        Arc::new(Identity::for_test(api_key, "s1"))
    }

    fn sent(key: &str) -> Record {
        Record::sent(who(key), "+1", &Value::from("m1"), 1.0)
    }

    #[test]
    fn forgets_the_oldest_first_over_capacity() {
        let mut statuses = MessageStatuses::new(Duration::from_secs(60), 3);
        for id in 1..=5 {
            statuses.record(id, sent("k"));
        }
        assert_eq!(statuses.remembered(), 3);
        assert!(statuses.get(1).is_none() && statuses.get(2).is_none());
        assert_eq!(statuses.get(5).unwrap().state, State::Sent);
    }

    #[tokio::test(start_paused = true)]
    async fn acks_move_forward_only_and_release_their_waiter() {
        let mut statuses = MessageStatuses::default();
        statuses.record(1, sent("k"));
        let deadline = Instant::now() + Duration::from_secs(5);
        statuses.wait(
            1,
            Waiter {
                call: 9,
                wait_for: Ack::Delivered,
                timeout_ms: 5000,
                deadline,
            },
        );
        assert!(
            statuses
                .advance(1, "other", Ack::Read, Value::Null)
                .is_none(),
            "another key"
        );
        let server = statuses.advance(1, "k", Ack::Server, Value::Null).unwrap();
        assert!(server.waiter.is_none());
        assert!(
            statuses.advance(1, "k", Ack::Server, Value::Null).is_none(),
            "repeated"
        );
        let read = statuses
            .advance(1, "k", Ack::Read, Value::from("m2"))
            .unwrap();
        assert_eq!(read.waiter.unwrap().call, 9);
        assert_eq!(read.record.message_id(), Value::from("m2"));
        assert!(
            statuses
                .advance(1, "k", Ack::Delivered, Value::Null)
                .is_none(),
            "late"
        );
        assert_eq!(statuses.get(1).unwrap().ack, Some(Ack::Read));
        assert!(statuses.next_deadline().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_expires_with_the_highest_ack_known() {
        let mut statuses = MessageStatuses::default();
        statuses.record(1, sent("k"));
        statuses.record(2, Record::failed(who("k"), "+1"));
        assert!(
            statuses.advance(2, "k", Ack::Server, Value::Null).is_none(),
            "failed sends take no acks"
        );
        let deadline = Instant::now() + Duration::from_millis(100);
        statuses.wait(
            1,
            Waiter {
                call: 3,
                wait_for: Ack::Read,
                timeout_ms: 100,
                deadline,
            },
        );
        statuses.advance(1, "k", Ack::Server, Value::Null);
        tokio::time::advance(Duration::from_millis(150)).await;
        let expired = statuses.expire(Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].2, Some(Ack::Server));
        assert_eq!(statuses.get(1).unwrap().state, State::Sent);
        assert_eq!(statuses.waiting(), 0);
    }

    #[test]
    fn keeps_exactly_the_newest_records_through_many_evictions() {
        // Ids both random (as the gateway makes them) and clustered (worst case for
        // linear probing), well past one wrap of the ring.
        let mut statuses = MessageStatuses::new(Duration::from_secs(60), 1000);
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
            statuses.record(*id, sent("k"));
            assert_eq!(statuses.remembered(), (n + 1).min(1000));
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(statuses.get(*id).is_some(), n >= 4000, "record {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_whose_caller_waits_outlives_capacity_and_stays_found() {
        let mut statuses = MessageStatuses::new(Duration::from_secs(60), 2);
        statuses.record(1, sent("k"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiter = Waiter {
            call: 1,
            wait_for: Ack::Read,
            timeout_ms: 5000,
            deadline,
        };
        statuses.wait(1, waiter);
        for id in 2..=10 {
            statuses.record(id, sent("k"));
        }
        assert_eq!(statuses.remembered(), 2, "the waiting one and the newest");
        assert!(statuses.get(2).is_none() && statuses.get(9).is_none());
        assert!(statuses.get(1).is_some() && statuses.get(10).is_some());
        let read = statuses.advance(1, "k", Ack::Read, Value::Null).unwrap();
        assert_eq!(read.waiter.unwrap().call, 1);
        statuses.record(11, sent("k"));
        assert!(
            statuses.get(1).is_none(),
            "no longer waited for: the oldest goes"
        );
        assert!(statuses.get(10).is_some() && statuses.get(11).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn forgets_records_past_the_ttl() {
        let mut statuses = MessageStatuses::new(Duration::from_secs(60), 100);
        statuses.record(1, sent("k"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(statuses.get(1).is_none());
        statuses.record(2, sent("k"));
        assert_eq!(statuses.remembered(), 1);
    }

    #[test]
    fn keeps_long_and_non_string_texts_whole() {
        let mut statuses = MessageStatuses::default();
        let long_phone = format!("+{}", "9".repeat(40));
        let long_id = format!("false_{}@g.us_{}", "1".repeat(30), "A".repeat(40));
        statuses.record(
            1,
            Record::sent(who("k"), &long_phone, &Value::from(long_id.as_str()), 1.0),
        );
        statuses.record(
            2,
            Record::sent(who("k"), "+1", &serde_json::json!({ "id": 5 }), 1.0),
        );
        let one = statuses.advance(1, "k", Ack::Server, Value::Null).unwrap();
        assert_eq!(one.record.phone_number(), long_phone);
        assert_eq!(one.record.message_id(), Value::from(long_id.as_str()));
        let two = statuses.advance(2, "k", Ack::Server, Value::Null).unwrap();
        assert_eq!(two.record.message_id(), serde_json::json!({ "id": 5 }));
        assert_eq!(two.record.phone_number(), "+1");
    }
}
