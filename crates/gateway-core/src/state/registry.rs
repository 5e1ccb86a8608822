//! Sessions by API key and by id, the requests in flight on each, and their
//! deadlines. Plain synchronous data behind one mutex; nothing awaits under it.
//! Requests cost O(log n) (the deadline index); choosing a device, admitting and
//! removing a session cost O(sessions of that key); only listing and shutting down
//! visit every session.
//!
//! The types live here; `impl Registry` is split by concern: `sessions` (admitting,
//! status, choosing a device, listing), `in_flight` (requests sent and settled, their
//! status), `deadlines`, `paced` (pacing queues) and `waiting` (sends waiting for a device).

mod deadlines;
mod in_flight;
mod paced;
mod sessions;
mod waiting;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::journal::Journal;
use super::link::SessionLink;
use super::own_keys::OwnKeys;
use super::parking::{Parked, Parking};
use super::records::Records;
use crate::config::Pacing;
use crate::identity::{CallId, Identity};
use crate::protocol::delivery::Ack;
use crate::protocol::{Frame, SendKind, StatusFrame};
use paced::PacingQueue;

/// Internal handle of a session; the public `sessionId` is a UUID string.
pub type SessionKey = u64;

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: Arc<str>,
    pub status: String,
    pub ready: bool,
    pub whatsapp_logged_in: bool,
    pub device_active: bool,
    pub connected_at: u64,
    pub last_heartbeat: u64,
    pub last_status_update: Option<u64>,
    pub extension_version: String,
    pub browser: String,
    pub ip: String,
    pub user_id: Value,
    /// The custom command types it handles (listed at auth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

pub struct Session {
    pub identity: Arc<Identity>,
    pub link: Arc<SessionLink>,
    connected_at: u64,
    status: Option<Status>,
    last_status_update: Option<NonZeroU64>,
    pending: InFlight,
    /// Commands waiting for their turn under 5.2 pacing.
    queue: PacingQueue,
}

impl Session {
    /// Takes request `request_id` off this session and out of `deadlines` (its place
    /// in the pacing queue, if any, is the caller's to clear).
    fn take_request(
        &mut self,
        request_id: u128,
        deadlines: &mut BTreeMap<(Instant, u128), SessionKey>,
    ) -> Option<Settled> {
        let pending = self.pending.remove(&request_id)?;
        deadlines.remove(&(pending.deadline, request_id));
        Some(Settled {
            identity: self.identity.clone(),
            request_id,
            pending,
        })
    }

    fn device_active(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.ready && s.whatsapp_logged_in)
    }

    /// An active device that has not been asked to close: a send may go to it.
    fn takes_sends(&self) -> bool {
        self.device_active() && !self.link.closing()
    }

    fn info(&self) -> SessionInfo {
        let (ready, logged_in) = self
            .status
            .as_ref()
            .map_or((false, false), |s| (s.ready, s.whatsapp_logged_in));
        let status = match self.status.as_ref().and_then(|s| s.text.as_deref()) {
            Some(text) => text.clone(),
            None if ready => "WhatsApp Web logged in".to_string(),
            None => "Not ready".to_string(),
        };
        let id = &self.identity;
        SessionInfo {
            session_id: id.session_id().into(),
            status,
            ready,
            whatsapp_logged_in: logged_in,
            device_active: self.device_active(),
            connected_at: self.connected_at,
            last_heartbeat: self.link.last_seen_wall_ms(),
            last_status_update: self.last_status_update.map(NonZeroU64::get),
            extension_version: id.extension_version().to_string(),
            browser: id.browser().to_string(),
            ip: id.ip().to_string(),
            user_id: id.user_id.clone(),
            commands: id.commands.list().to_vec(),
        }
    }
}

/// The last status frame of a session, as its registry entry keeps it: its text (which
/// few extensions send) behind one pointer rather than a `String`'s three words (see
/// `InFlight`).
#[allow(clippy::box_collection)]
struct Status {
    text: Option<Box<String>>,
    ready: bool,
    whatsapp_logged_in: bool,
}

impl From<StatusFrame> for Status {
    fn from(frame: StatusFrame) -> Self {
        Self {
            text: frame.text.map(Box::new),
            ready: frame.ready,
            whatsapp_logged_in: frame.whatsapp_logged_in,
        }
    }
}

/// A session's requests waiting for their results, by request id. Boxed from the
/// session's first send on (and kept, like the map's own table, for the next):
/// every session's registry entry sits in a table sized ahead, and an idle one then
/// carries a pointer there rather than the map's four words.
#[derive(Default)]
#[allow(clippy::box_collection)]
struct InFlight(Option<Box<HashMap<u128, Pending, OwnKeys>>>);

impl InFlight {
    fn get(&self, request_id: &u128) -> Option<&Pending> {
        self.0.as_ref()?.get(request_id)
    }

    fn get_mut(&mut self, request_id: &u128) -> Option<&mut Pending> {
        self.0.as_mut()?.get_mut(request_id)
    }

    fn insert(&mut self, request_id: u128, pending: Pending) {
        self.0
            .get_or_insert_with(Box::default)
            .insert(request_id, pending);
    }

    fn remove(&mut self, request_id: &u128) -> Option<Pending> {
        self.0.as_mut()?.remove(request_id)
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    #[cfg(test)]
    fn contains_key(&self, request_id: &u128) -> bool {
        self.get(request_id).is_some()
    }

    fn drain(&mut self) -> impl Iterator<Item = (u128, Pending)> + '_ {
        self.0.iter_mut().flat_map(|map| map.drain())
    }

    fn into_iter(self) -> impl Iterator<Item = (u128, Pending)> {
        self.0.into_iter().flat_map(|map| *map)
    }
}

/// A send waiting for its extension's result.
#[derive(Debug)]
pub struct Pending {
    pub call: CallId,
    pub kind: SendKind,
    /// Who it is for (`protocol::Recipient`), or a custom command's type.
    pub phone_number: String,
    pub timeout_ms: u64,
    pub deadline: Instant,
    /// The ack the caller waits for (5.2 `waitFor`).
    pub wait_for: Ack,
    /// Its command waits in the device's pacing queue: not written yet.
    pub queued: bool,
    /// Until when it may wait for a device if its own leaves before it is written.
    pub park_until: Option<Instant>,
    /// Durable mode: the store keeps its send while it waits (`QueuedSend`).
    pub stored: bool,
    /// Pacing spaces it (`SendRequest::paced`).
    pub paced: bool,
    /// It may go to its session only (`target`).
    pub pinned: bool,
}

impl Pending {
    pub fn new(call: CallId, phone_number: String, timeout: std::time::Duration) -> Self {
        Self {
            call,
            kind: SendKind::Message,
            phone_number,
            timeout_ms: timeout.as_millis() as u64,
            deadline: Instant::now() + timeout,
            wait_for: Ack::Sent,
            queued: false,
            park_until: None,
            stored: false,
            paced: true,
            pinned: false,
        }
    }

    /// The type of a custom command.
    pub fn command(&self) -> Option<&str> {
        (self.kind == SendKind::Command).then_some(self.phone_number.as_str())
    }
}

/// A request whose deadline passed (`Registry::expire`).
pub struct Expired {
    pub settled: Settled,
    /// Its command waited for room on its session (`maxQueuedBytes`) until now, with
    /// these bytes ahead of it: `BACKPRESSURE` rather than `REQUEST_TIMEOUT`.
    pub room_wait: Option<usize>,
}

/// A pending request taken out of the registry, with the session it was sent to.
pub struct Settled {
    pub identity: Arc<Identity>,
    pub request_id: u128,
    pub pending: Pending,
}

#[derive(Default)]
struct KeyGroup {
    members: Members,
    cursor: usize,
}

/// A key's sessions, in order of arrival. Most keys have one: it is kept inline
/// rather than in an allocation of its own that every such session would pay for.
enum Members {
    One(SessionKey),
    Many(Vec<SessionKey>),
}

impl Default for Members {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl std::ops::Deref for Members {
    type Target = [SessionKey];

    fn deref(&self) -> &[SessionKey] {
        match self {
            Self::One(key) => std::slice::from_ref(key),
            Self::Many(keys) => keys,
        }
    }
}

impl Members {
    fn push(&mut self, key: SessionKey) {
        match self {
            Self::Many(keys) if keys.is_empty() => *self = Self::One(key),
            Self::Many(keys) => keys.push(key),
            Self::One(first) => *self = Self::Many(vec![*first, key]),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&SessionKey) -> bool) {
        match self {
            Self::One(key) if !keep(key) => *self = Self::default(),
            Self::One(_) => {}
            Self::Many(keys) => keys.retain(keep),
        }
    }
}

/// Why no device could be chosen for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The key has no session at all.
    NoSessions,
    /// It has sessions, but none is logged in and ready (or all are closing).
    NoneReady,
    /// The send's `target` is not a connected, active session of the key.
    Target,
    /// Active devices of the key are there, but none handles the custom command.
    Unsupported,
}

/// Why a session was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key already has this many sessions.
    Full(usize),
    /// The gateway is stopping.
    Closing,
}

#[derive(Default)]
pub struct Registry {
    /// Set by `shut_down()`: no session is admitted until `reopen()`.
    closing: bool,
    sessions: HashMap<SessionKey, Session, OwnKeys>,
    by_api_key: HashMap<Arc<str>, KeyGroup>,
    deadlines: BTreeMap<(Instant, u128), SessionKey>,
    /// When the deadline timer (`timers/deadlines.rs`) wakes next. Only a deadline
    /// before it wakes the timer early: with one send at a time, waking the runtime for
    /// each send's deadline cost a thread hand-off per call.
    timer_wakes_at: Option<Instant>,
    next_key: SessionKey,
    /// The record of every send, and the callers waiting for acks (`records.rs`).
    pub statuses: Records,
    /// 5.2 delivery: `None` lets commands leave at once.
    pub pacing: Option<Pacing>,
    /// `maxQueuedSends`.
    pub max_queued: usize,
    /// `maxQueuedBytes`, for the commands paced or waiting sends write.
    pub max_queued_bytes: usize,
    /// Sends waiting for a device (`waitForDevice`).
    pub parking: Parking<Pending>,
    /// Whether sends may wait for a device: only while the gateway runs.
    parking_open: bool,
    /// Wakes the delivery timer: a paced command was queued, or a send parked, or a
    /// key with parked sends got an active device.
    pub wake_delivery: Arc<Notify>,
    /// Durable mode's store: commands leave through it (`state::journal`).
    pub journal: Option<Arc<dyn Journal>>,
}

/// Why `place` could not record a request; the request and command come back.
pub enum NotPlaced {
    Gone(Pending, Frame),
    /// The device has this many sends waiting (`maxQueuedSends`): paced, or for room.
    QueueFull(Pending, Frame, usize),
}

/// What the delivery timer found to do besides letting commands leave.
#[derive(Default)]
pub struct Unparked {
    /// Sends that found a device whose queue was full: (device, request id, request, queued).
    pub queue_full: Vec<(Arc<Identity>, u128, Pending, usize)>,
    /// Custom commands that found active devices, none of which handles them.
    pub unsupported: Vec<(Arc<str>, Parked<Pending>)>,
    /// Whether a placed request now has the earliest deadline.
    pub earliest: bool,
}

/// The position, among `active` candidates with these loads, of the least busy one;
/// ties go to the first at or after the cursor, which then moves past it.
pub fn least_busy(loads: impl Iterator<Item = usize>, cursor: &mut usize, active: usize) -> usize {
    let start = *cursor % active;
    let loads: Vec<usize> = loads.collect();
    let best = (0..active)
        .map(|i| (start + i) % active)
        .min_by_key(|&i| loads.get(i).copied().unwrap_or(usize::MAX))
        .unwrap_or(0);
    *cursor = best + 1;
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::state::link::CloseRequest;
    use crate::state::send_request::Wants;

    #[test]
    fn a_keys_members_keep_their_order_from_one_to_many_and_back() {
        let mut members = Members::default();
        assert!(members.is_empty());
        members.push(1);
        assert_eq!(&*members, &[1]);
        members.push(2);
        members.push(3);
        assert_eq!(&*members, &[1, 2, 3]);
        members.retain(|k| *k != 2);
        assert_eq!(&*members, &[1, 3]);
        let mut one = Members::default();
        one.push(7);
        one.retain(|k| *k != 8);
        assert_eq!(&*one, &[7]);
        one.retain(|k| *k != 7);
        assert!(one.is_empty());
        one.push(9);
        assert_eq!(&*one, &[9]);
    }

    use std::time::Duration;

    fn identity(api_key: &str, n: u32) -> Identity {
        Identity::for_test(api_key, &format!("s{n}"))
    }

    fn ready() -> StatusFrame {
        StatusFrame {
            text: None,
            ready: true,
            whatsapp_logged_in: true,
        }
    }

    fn add_active(reg: &mut Registry, api_key: &str, n: u32) -> SessionKey {
        let (key, _) = reg.add(identity(api_key, n), Arc::default(), 10).unwrap();
        reg.set_status(key, ready());
        key
    }

    #[test]
    fn a_target_is_used_alone_and_a_command_only_where_it_is_handled() {
        let mut reg = Registry::default();
        let plain = add_active(&mut reg, "k", 1);
        let mut lister = identity("k", 2);
        lister.commands = crate::identity::Commands::new(vec!["check-number".into()]);
        let (handling, _) = reg.add(lister, Arc::default(), 10).unwrap();
        reg.set_status(handling, ready());
        reg.add(identity("k", 3), Arc::default(), 10).unwrap();

        let check = Wants {
            session: None,
            command: Some("check-number"),
        };
        for strategy in [Strategy::RoundRobin, Strategy::Random, Strategy::LeastBusy] {
            for _ in 0..4 {
                assert_eq!(reg.select("k", strategy, check).unwrap().0, handling);
            }
        }
        let react = Wants {
            command: Some("react"),
            ..check
        };
        let rr = Strategy::RoundRobin;
        assert_eq!(
            reg.select("k", rr, react).err(),
            Some(Unavailable::Unsupported)
        );
        assert_eq!(
            reg.select("none", rr, react).err(),
            Some(Unavailable::NoSessions)
        );

        let to = |session| Wants {
            session: Some(session),
            command: None,
        };
        for _ in 0..3 {
            assert_eq!(reg.select("k", rr, to("s1")).unwrap().0, plain);
        }
        // Not active, not there, another key's.
        assert_eq!(
            reg.select("k", rr, to("s3")).err(),
            Some(Unavailable::Target)
        );
        assert_eq!(
            reg.select("k", rr, to("s9")).err(),
            Some(Unavailable::Target)
        );
        assert_eq!(
            reg.select("other", rr, to("s1")).err(),
            Some(Unavailable::Target)
        );
        let pinned_check = Wants {
            session: Some("s1"),
            command: Some("check-number"),
        };
        assert_eq!(
            reg.select("k", rr, pinned_check).err(),
            Some(Unavailable::Unsupported)
        );
        // A routed send's preferred session gives way to one that handles its command.
        assert_eq!(
            reg.select_session("k", "s1", rr, check).unwrap().0,
            handling
        );
        assert!(reg.has_session("k", "s3") && !reg.has_device_for("k", to("s3")));
        assert!(!reg.has_device_for("k", react) && reg.has_device_for("k", check));
    }

    #[test]
    fn enforces_the_per_key_limit() {
        let mut reg = Registry::default();
        reg.add(identity("k", 1), Arc::default(), 2).unwrap();
        reg.add(identity("k", 2), Arc::default(), 2).unwrap();
        assert_eq!(
            reg.add(identity("k", 3), Arc::default(), 2).err(),
            Some(Refusal::Full(2))
        );
        reg.add(identity("other", 4), Arc::default(), 2).unwrap();
        assert_eq!(reg.session_count(), 3);
    }

    #[test]
    fn selects_only_active_devices_in_turn() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        let (idle, _) = reg.add(identity("k", 2), Arc::default(), 10).unwrap();
        let b = add_active(&mut reg, "k", 3);
        let picks: Vec<_> = (0..4)
            .map(|_| {
                reg.select("k", Strategy::RoundRobin, Wants::default())
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(picks, [a, b, a, b]);
        assert!(!picks.contains(&idle));
        for _ in 0..20 {
            assert_ne!(
                reg.select("k", Strategy::Random, Wants::default())
                    .unwrap()
                    .0,
                idle
            );
        }
        assert_eq!(
            reg.select("nobody", Strategy::RoundRobin, Wants::default())
                .err(),
            Some(Unavailable::NoSessions)
        );
        reg.set_status(
            a,
            StatusFrame {
                text: None,
                ready: false,
                whatsapp_logged_in: true,
            },
        );
        reg.set_status(
            b,
            StatusFrame {
                text: None,
                ready: true,
                whatsapp_logged_in: false,
            },
        );
        assert_eq!(
            reg.select("k", Strategy::RoundRobin, Wants::default())
                .err(),
            Some(Unavailable::NoneReady)
        );
    }

    #[test]
    fn a_session_asked_to_close_is_never_chosen() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        let b = add_active(&mut reg, "k", 2);
        reg.sessions[&a].link.request_close(CloseRequest::Stalled);
        for strategy in [Strategy::RoundRobin, Strategy::Random] {
            for _ in 0..10 {
                assert_eq!(reg.select("k", strategy, Wants::default()).unwrap().0, b);
            }
        }
        reg.sessions[&b]
            .link
            .request_close(CloseRequest::HeartbeatTimeout);
        assert_eq!(
            reg.select("k", Strategy::RoundRobin, Wants::default())
                .err(),
            Some(Unavailable::NoneReady)
        );
    }

    #[test]
    fn a_result_settles_only_on_the_session_it_was_sent_to() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        let b = add_active(&mut reg, "k", 2);
        reg.insert_pending(a, 7, Pending::new(1, "+1".into(), Duration::from_secs(5)))
            .unwrap();
        assert!(reg.settle(b, 7).is_none());
        assert!(reg.settle(a, 8).is_none());
        assert_eq!(reg.settle(a, 7).unwrap().pending.call, 1);
        assert!(reg.settle(a, 7).is_none(), "settles exactly once");
        assert_eq!(reg.pending_count(), 0);
    }

    #[test]
    fn removal_hands_back_what_the_session_owed() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        for id in 0..3 {
            reg.insert_pending(
                a,
                id,
                Pending::new(id as u64, "+1".into(), Duration::from_secs(5)),
            );
        }
        let (_, owed) = reg.remove(a).unwrap();
        assert_eq!(owed.len(), 3);
        assert_eq!(reg.pending_count(), 0);
        assert!(reg.sessions_of("k").is_empty());
        assert!(reg
            .insert_pending(a, 9, Pending::new(9, "+1".into(), Duration::from_secs(5)))
            .is_none());
    }

    fn big(n: usize) -> Frame {
        Frame::Text("x".repeat(n).into())
    }

    #[test]
    fn a_request_whose_command_waits_for_room_is_withdrawn_when_it_settles() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        let link = reg.sessions[&a].link.clone();
        for id in 1..=3 {
            reg.insert_pending(
                a,
                id,
                Pending::new(id as u64, "+1".into(), Duration::from_secs(5)),
            );
            link.enqueue_command(id, big(100), 150, 10).unwrap();
        }
        assert_eq!(reg.message_status(1).unwrap()["state"], "in-flight");
        assert_eq!(reg.message_status(2).unwrap()["state"], "queued");
        let (settled, room_wait) = reg.take_unwritten(a, 2).unwrap();
        assert!(settled.pending.queued, "never written");
        assert_eq!(room_wait, Some(102));
        assert!(!link.is_waiting(2) && link.is_waiting(3));
        let (written, room_wait) = reg.take_unwritten(a, 1).unwrap();
        assert!(!written.pending.queued && room_wait.is_none());
        // Shutting down: what still waits is known never written.
        let owed = reg.shut_down();
        assert_eq!(owed.len(), 1);
        assert!(owed[0].pending.queued);
        assert_eq!(link.waiting_count(), 0);
    }

    #[test]
    fn commands_waiting_for_room_go_to_another_device_when_theirs_leaves() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        let b = add_active(&mut reg, "k", 2);
        let link = reg.sessions[&a].link.clone();
        for id in 1..=2 {
            reg.insert_pending(
                a,
                id,
                Pending::new(id as u64, "+1".into(), Duration::from_secs(5)),
            );
            link.enqueue_command(id, big(100), 150, 10).unwrap();
        }
        let (_, owed) = reg.remove(a).unwrap();
        let owed: Vec<u128> = owed.iter().map(|s| s.request_id).collect();
        assert_eq!(owed, [1], "only the written one is owed");
        assert!(
            reg.sessions[&b].pending.contains_key(&2),
            "the other went to b"
        );
        assert_eq!(reg.sessions[&b].link.take().0.len(), 1);
    }

    #[test]
    fn shutting_down_closes_sessions_and_refuses_new_ones() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        reg.insert_pending(a, 7, Pending::new(1, "+1".into(), Duration::from_secs(5)));
        assert_eq!(reg.shut_down().len(), 1);
        assert_eq!(
            reg.add(identity("k", 2), Arc::default(), 10).err(),
            Some(Refusal::Closing)
        );
        reg.reopen();
        assert!(reg.add(identity("k", 3), Arc::default(), 10).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn expires_in_deadline_order() {
        let mut reg = Registry::default();
        let a = add_active(&mut reg, "k", 1);
        assert_eq!(
            reg.insert_pending(
                a,
                1,
                Pending::new(1, "+1".into(), Duration::from_millis(200))
            ),
            Some(true)
        );
        // The timer now wakes at the 200 ms deadline: only an earlier one wakes it sooner.
        let wakes_at = reg.arm_timer(Instant::now());
        assert_eq!(wakes_at, Instant::now() + Duration::from_millis(200));
        assert_eq!(
            reg.insert_pending(
                a,
                2,
                Pending::new(2, "+1".into(), Duration::from_millis(100))
            ),
            Some(true)
        );
        assert_eq!(
            reg.insert_pending(
                a,
                3,
                Pending::new(3, "+1".into(), Duration::from_millis(300))
            ),
            Some(false)
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        let expired: Vec<_> = reg
            .expire(Instant::now())
            .iter()
            .map(|e| e.settled.request_id)
            .collect();
        assert_eq!(expired, [2, 1]);
        assert_eq!(reg.pending_count(), 1);
        assert!(reg.next_deadline().is_some());
    }

    /// Where request `id` is in flight now, if anywhere.
    fn holder_of(reg: &Registry, id: u128) -> Option<(SessionKey, Instant)> {
        reg.sessions
            .iter()
            .find_map(|(key, s)| s.pending.get(&id).map(|p| (*key, p.deadline)))
    }

    /// Random sends, results (from the session written to, from another of the key, and
    /// for ids never issued), sessions leaving and time passing, against a plain model of
    /// what is in flight: every request expires once, at its deadline and not before,
    /// unless it settled or left first; the count and the next deadline agree throughout.
    #[tokio::test(start_paused = true)]
    async fn deadlines_agree_with_a_model_through_random_sends_results_and_departures() {
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut reg = Registry {
                max_queued: 10_000,
                // Odd seeds: a few bytes fill a socket, and the rest wait for room (a
                // device that leaves hands those to another).
                max_queued_bytes: if seed % 2 == 0 { 1 << 20 } else { 16 },
                ..Registry::default()
            };
            let mut live: Vec<SessionKey> = Vec::new();
            let mut model: HashMap<u128, Instant> = HashMap::new();
            let mut next_session = 0;
            let mut next_id = 0u128;
            for step in 0..400 {
                let at = format!("seed {seed}, step {step}");
                match rng.u8(0..100) {
                    0..=7 if live.len() < 6 => {
                        next_session += 1;
                        live.push(add_active(&mut reg, "k", next_session));
                    }
                    0..=44 if !live.is_empty() => {
                        let key = live[rng.usize(..live.len())];
                        next_id += 1;
                        // Mostly the one timeout (deadlines in the order they fall due).
                        let ms = [100, 100, 100, 100, 100, 37, 250][rng.usize(..7)];
                        let pending = Pending::new(1, "+1".into(), Duration::from_millis(ms));
                        let deadline = pending.deadline;
                        if rng.bool() {
                            assert!(reg.insert_pending(key, next_id, pending).is_some(), "{at}");
                        } else {
                            let frame = Frame::Text("{}".into());
                            assert!(reg.place(key, next_id, pending, frame).is_ok(), "{at}");
                        }
                        model.insert(next_id, deadline);
                    }
                    45..=74 if !model.is_empty() => {
                        let ids: Vec<u128> = model.keys().copied().collect();
                        let id = ids[rng.usize(..ids.len())];
                        let (holder, _) = holder_of(&reg, id).expect(&at);
                        let settled = if rng.u8(0..4) == 0 {
                            // From another session of the key: only a written command
                            // settles that way.
                            live.iter()
                                .copied()
                                .find(|k| *k != holder)
                                .and_then(|other| reg.settle_from(other, id))
                                .map(|(s, _)| s)
                        } else {
                            reg.settle(holder, id)
                        };
                        if let Some(settled) = settled {
                            assert_eq!(settled.request_id, id, "{at}");
                            model.remove(&id);
                        }
                        assert!(reg.settle(holder, next_id + 1).is_none(), "{at}");
                    }
                    75..=82 if !live.is_empty() => {
                        let key = live.swap_remove(rng.usize(..live.len()));
                        let (_, owed) = reg.remove(key).expect(&at);
                        for settled in owed {
                            assert!(model.remove(&settled.request_id).is_some(), "{at}");
                        }
                        // Unwritten ones went to another device, with their deadline, or
                        // to wait for one.
                        model.retain(|id, deadline| match holder_of(&reg, *id) {
                            Some((_, now)) => {
                                assert_eq!(now, *deadline, "{at}");
                                true
                            }
                            None => false,
                        });
                    }
                    _ => {
                        tokio::time::advance(Duration::from_millis(rng.u64(0..60))).await;
                        let now = Instant::now();
                        let expired = reg.expire(now);
                        let mut due: Vec<u128> = model
                            .iter()
                            .filter(|(_, d)| **d <= now)
                            .map(|(id, _)| *id)
                            .collect();
                        let mut got: Vec<u128> =
                            expired.iter().map(|e| e.settled.request_id).collect();
                        let deadlines: Vec<Instant> = got.iter().map(|id| model[id]).collect();
                        assert!(
                            deadlines.windows(2).all(|w| w[0] <= w[1]),
                            "{at}: out of order"
                        );
                        due.sort_unstable();
                        got.sort_unstable();
                        assert_eq!(got, due, "{at}: expired");
                        model.retain(|_, d| *d > now);
                    }
                }
                assert_eq!(reg.pending_count(), model.len(), "{at}: count");
                let earliest = model.values().min().copied();
                let next = reg.next_deadline();
                assert_eq!(next.is_some(), earliest.is_some(), "{at}: next deadline");
                assert!(
                    next <= earliest,
                    "{at}: the timer would wake after a deadline"
                );
                for (id, deadline) in &model {
                    assert_eq!(holder_of(&reg, *id).map(|h| h.1), Some(*deadline), "{at}");
                }
            }
        }
    }

    /// The sessions' table holds every session's entry inline, in a table of a power
    /// of two of them (16,384 at 10,000 sessions): each word of an entry is 128 KB of
    /// resident memory there. 72 bytes with its key; it was 120.
    #[test]
    fn a_registry_entry_stays_within_72_bytes() {
        let size = std::mem::size_of::<(SessionKey, Session)>();
        assert!(size <= 72, "a registry entry grew to {size} bytes");
    }

    #[test]
    fn session_info_reports_status_text_or_a_default() {
        let mut reg = Registry::default();
        let (a, _) = reg.add(identity("k", 1), Arc::default(), 10).unwrap();
        assert_eq!(reg.sessions_of("k")[0].status, "Not ready");
        reg.set_status(a, ready());
        assert_eq!(reg.sessions_of("k")[0].status, "WhatsApp Web logged in");
        reg.set_status(
            a,
            StatusFrame {
                text: Some("busy".into()),
                ready: true,
                whatsapp_logged_in: true,
            },
        );
        let info = &reg.sessions_of("k")[0];
        assert_eq!(info.status, "busy");
        assert!(info.device_active);
    }
}
