//! What became of recent sends (`getMessageStatus`), and the sends whose caller waits
//! for an acknowledgement beyond the extension's result (`waitFor`). Lives inside the
//! registry, so that recording a settled send takes no lock of its own.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::clock::{monotonic_ms, now_ms};
use crate::identity::{CallId, Identity};
use crate::protocol::delivery::Ack;

/// At most this many settled sends are remembered; the oldest go first.
pub const MAX_REMEMBERED: usize = 100_000;

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

/// A settled send.
#[derive(Debug)]
pub struct Record {
    /// The session it was sent to.
    pub identity: Arc<Identity>,
    pub phone_number: String,
    /// The extension's, from its result.
    pub message_id: Value,
    /// The result's timestamp (ms since the epoch).
    pub timestamp: f64,
    pub state: State,
    /// `None` unless the extension reported success.
    pub ack: Option<Ack>,
    pub updated_at: u64,
    settled_at: u64,
}

impl Record {
    pub fn sent(
        identity: Arc<Identity>,
        phone_number: String,
        message_id: Value,
        timestamp: f64,
    ) -> Self {
        Self::new(
            identity,
            phone_number,
            message_id,
            timestamp,
            State::Sent,
            Some(Ack::Sent),
        )
    }

    pub fn failed(identity: Arc<Identity>, phone_number: String) -> Self {
        Self::new(
            identity,
            phone_number,
            Value::Null,
            0.0,
            State::Failed,
            None,
        )
    }

    fn new(
        identity: Arc<Identity>,
        phone_number: String,
        message_id: Value,
        timestamp: f64,
        state: State,
        ack: Option<Ack>,
    ) -> Self {
        Self {
            identity,
            phone_number,
            message_id,
            timestamp,
            state,
            ack,
            updated_at: now_ms(),
            settled_at: monotonic_ms(),
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
    records: HashMap<u128, Record>,
    /// Request ids in the order they settled.
    order: VecDeque<u128>,
    waiters: HashMap<u128, Waiter>,
    deadlines: BTreeSet<(Instant, u128)>,
    ttl_ms: u64,
    capacity: usize,
}

impl Default for MessageStatuses {
    fn default() -> Self {
        Self::new(Duration::from_secs(86_400), MAX_REMEMBERED)
    }
}

impl MessageStatuses {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            records: HashMap::new(),
            order: VecDeque::new(),
            waiters: HashMap::new(),
            deadlines: BTreeSet::new(),
            ttl_ms: ttl.as_millis() as u64,
            capacity: capacity.max(1),
        }
    }

    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl_ms = ttl.as_millis() as u64;
    }

    pub fn record(&mut self, request_id: u128, record: Record) {
        if self.records.insert(request_id, record).is_none() {
            self.order.push_back(request_id);
        }
        self.forget_old();
    }

    /// Drops records past the TTL or over capacity, oldest first; a record whose
    /// caller still waits for an ack is kept (there are never more of those than
    /// sends in flight).
    fn forget_old(&mut self) {
        let now = monotonic_ms();
        let mut skipped = 0;
        while let Some(&oldest) = self.order.front() {
            if skipped >= self.order.len() {
                break;
            }
            let expired = self
                .records
                .get(&oldest)
                .is_none_or(|r| now.saturating_sub(r.settled_at) > self.ttl_ms);
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            if self.waiters.contains_key(&oldest) {
                self.order.push_back(oldest);
                skipped += 1;
            } else {
                self.records.remove(&oldest);
            }
        }
    }

    pub fn get(&self, request_id: u128) -> Option<MessageStatus> {
        let record = self.records.get(&request_id)?;
        if monotonic_ms().saturating_sub(record.settled_at) > self.ttl_ms {
            return None;
        }
        Some(MessageStatus {
            request_id,
            state: record.state,
            ack: record.ack,
            session_id: record.identity.session_id.clone(),
            updated_at: record.updated_at,
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
        let record = self.records.get_mut(&request_id)?;
        if *record.identity.api_key != *api_key || record.state != State::Sent {
            return None;
        }
        if record.ack.is_some_and(|known| known >= ack) {
            return None;
        }
        record.ack = Some(ack);
        record.updated_at = now_ms();
        if !message_id.is_null() {
            record.message_id = message_id;
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
        let record = self.records.get(&request_id)?;
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
                    .records
                    .get(&request_id)
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
        let records = &self.records;
        self.waiters
            .drain()
            .map(|(id, w)| {
                let session = records
                    .get(&id)
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
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dialect;

    fn who(api_key: &str) -> Arc<Identity> {
        Arc::new(Identity {
            session_id: "s1".into(),
            api_key: api_key.into(),
            user_id: Value::Null,
            ip: "127.0.0.1".into(),
            extension_version: "1".into(),
            browser: "test".into(),
            dialect: Dialect::Compat,
        })
    }

    fn sent(key: &str) -> Record {
        Record::sent(who(key), "+1".into(), Value::from("m1"), 1.0)
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
        assert_eq!(read.record.message_id, Value::from("m2"));
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
        statuses.record(2, Record::failed(who("k"), "+1".into()));
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
}
