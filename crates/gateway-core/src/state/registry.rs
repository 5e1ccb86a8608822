//! Sessions by API key and by id, the requests in flight on each, and their
//! deadlines. Plain synchronous data behind one mutex; nothing awaits under it.
//! Requests cost O(log n) (the deadline index); choosing a device, admitting and
//! removing a session cost O(sessions of that key); only listing and shutting down
//! visit every session.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::journal::Journal;
use super::link::{CloseRequest, CommandQueued, SessionLink, TooManyWaiting};
use super::own_keys::OwnKeys;
use super::pacing::DeviceQueue;
use super::parking::{Parked, Parking};
use super::records::{Records, State, StatusKey, StoredRecord};
use super::send_request::Wants;
use crate::clock::now_ms;
use crate::config::{Pacing, Strategy};
use crate::identity::{CallId, Identity};
use crate::protocol::delivery::Ack;
use crate::protocol::{frame_len, Frame, SendKind, StatusFrame};

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
    status: Option<StatusFrame>,
    last_status_update: Option<u64>,
    pending: HashMap<u128, Pending, OwnKeys>,
    /// Commands waiting for their turn under 5.2 pacing.
    queue: PacingQueue,
}

/// A device's pacing state, allocated once pacing first holds a command back or
/// records a departure. Inline, it made every entry of `sessions` 80 bytes larger,
/// idle sessions and gateways without pacing included.
#[derive(Default)]
struct PacingQueue(Option<Box<DeviceQueue>>);

impl PacingQueue {
    fn state(&mut self) -> &mut DeviceQueue {
        self.0.get_or_insert_with(Box::default)
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes())
    }

    fn front_id(&self) -> Option<u128> {
        self.0.as_ref()?.front_id()
    }

    fn ready_at(&self, pacing: &Pacing) -> Option<Instant> {
        self.0.as_ref()?.ready_at(pacing)
    }

    /// `None` when nothing waits, or too far off to tell (see `DeviceQueue`).
    fn earliest_departure(&self, ahead: usize, now: Instant, pacing: &Pacing) -> Option<Instant> {
        self.0.as_ref()?.earliest_departure(ahead, now, pacing)
    }

    /// Without any state yet, nothing has left and anything may.
    fn may_leave(&mut self, now: Instant, pacing: &Pacing) -> bool {
        self.0.as_mut().is_none_or(|q| q.may_leave(now, pacing))
    }

    fn departed(&mut self, now: Instant, pacing: &Pacing) {
        self.state().departed(now, pacing);
    }

    fn push(&mut self, request_id: u128, frame: Frame, room: Option<usize>) {
        self.state().push(request_id, frame, room);
    }

    fn pop(&mut self) -> Option<(u128, Frame)> {
        self.0.as_mut()?.pop()
    }

    fn remove(&mut self, request_id: u128) -> Option<Option<usize>> {
        self.0.as_mut()?.remove(request_id)
    }

    fn drain(&mut self) -> Vec<(u128, Frame)> {
        self.0
            .as_mut()
            .map_or_else(Vec::new, |q| q.drain().collect())
    }
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

    fn info(&self) -> SessionInfo {
        let (ready, logged_in) = self
            .status
            .as_ref()
            .map_or((false, false), |s| (s.ready, s.whatsapp_logged_in));
        let status = match self.status.as_ref().and_then(|s| s.text.clone()) {
            Some(text) => text,
            None if ready => "WhatsApp Web logged in".to_string(),
            None => "Not ready".to_string(),
        };
        let id = &self.identity;
        SessionInfo {
            session_id: id.session_id.clone(),
            status,
            ready,
            whatsapp_logged_in: logged_in,
            device_active: self.device_active(),
            connected_at: self.connected_at,
            last_heartbeat: self.link.last_seen_wall_ms(),
            last_status_update: self.last_status_update,
            extension_version: id.extension_version.clone(),
            browser: id.browser.clone(),
            ip: id.ip.clone(),
            user_id: id.user_id.clone(),
            commands: id.commands.list().to_vec(),
        }
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

impl Registry {
    /// Adds an authenticated session, or returns the limit it would exceed.
    pub fn add(
        &mut self,
        identity: Identity,
        link: Arc<SessionLink>,
        max_per_key: usize,
    ) -> Result<(SessionKey, Arc<Identity>), Refusal> {
        if self.closing {
            return Err(Refusal::Closing);
        }
        let group = self.by_api_key.entry(identity.api_key.clone()).or_default();
        if group.members.len() >= max_per_key {
            if group.members.is_empty() {
                self.by_api_key.remove(&identity.api_key);
            }
            return Err(Refusal::Full(max_per_key));
        }
        self.next_key += 1;
        let key = self.next_key;
        group.members.push(key);
        let identity = Arc::new(identity);
        if let Some(journal) = &self.journal {
            // Durable mode: its commands go to its socket once the store has them as
            // leaving (`SessionLink::cleared`).
            let (journal, who, me) = (journal.clone(), identity.clone(), Arc::downgrade(&link));
            link.set_clearance(Box::new(move |request_ids| {
                if let Some(link) = me.upgrade() {
                    journal.clear(link, who.clone(), request_ids);
                }
            }));
        }
        let session = Session {
            identity: identity.clone(),
            link,
            connected_at: now_ms(),
            status: None,
            last_status_update: None,
            pending: HashMap::default(),
            queue: PacingQueue::default(),
        };
        self.sessions.insert(key, session);
        Ok((key, identity))
    }

    /// Removes a session and hands back the requests it still owed.
    pub fn remove(&mut self, key: SessionKey) -> Option<(Arc<Identity>, Vec<Settled>)> {
        let mut session = self.sessions.remove(&key)?;
        let api_key = &session.identity.api_key;
        if let Some(group) = self.by_api_key.get_mut(api_key) {
            group.members.retain(|k| *k != key);
            if group.members.is_empty() {
                self.by_api_key.remove(api_key);
            }
        }
        // 5.2: commands never written go back to selection, in their order: those that
        // waited for room on the socket first (they left the pacing queue earlier).
        let mut unplaced = Vec::new();
        let mut unwritten = session.link.take_waiting();
        unwritten.extend(session.queue.drain());
        for (request_id, frame) in unwritten {
            let Some(pending) = session.pending.remove(&request_id) else {
                continue;
            };
            self.deadlines.remove(&(pending.deadline, request_id));
            if let Some(pending) = self.reselect(&session.identity, request_id, pending, frame) {
                unplaced.push(Settled {
                    identity: session.identity.clone(),
                    request_id,
                    pending,
                });
            }
        }
        let mut owed: Vec<Settled> = session
            .pending
            .into_iter()
            .map(|(request_id, pending)| {
                self.deadlines.remove(&(pending.deadline, request_id));
                Settled {
                    identity: session.identity.clone(),
                    request_id,
                    pending,
                }
            })
            .collect();
        owed.extend(unplaced);
        Some((session.identity, owed))
    }

    pub fn set_status(&mut self, key: SessionKey, status: StatusFrame) -> Option<Arc<Identity>> {
        let session = self.sessions.get_mut(&key)?;
        session.status = Some(status);
        session.last_status_update = Some(now_ms());
        if session.device_active() && self.parking.has(&session.identity.api_key) {
            self.wake_delivery.notify_one();
        }
        Some(session.identity.clone())
    }

    /// Picks an active device of `api_key` that has not been asked to close, and is
    /// what the send `wants` (its target, a device that handles its command).
    pub fn select(
        &mut self,
        api_key: &str,
        strategy: Strategy,
        wants: Wants,
    ) -> Result<(SessionKey, Arc<Identity>, Arc<SessionLink>), Unavailable> {
        if let Some(session_id) = wants.session {
            return self.select_pinned(api_key, session_id, wants);
        }
        let group = self
            .by_api_key
            .get_mut(api_key)
            .ok_or(Unavailable::NoSessions)?;
        let sessions = &self.sessions;
        let is_active = |k: &SessionKey| {
            sessions.get(k).is_some_and(|s| {
                s.device_active() && !s.link.closing() && wants.handled_by(&s.identity)
            })
        };
        let active = group.members.iter().filter(|k| is_active(k)).count();
        if active == 0 {
            let any_active = wants.command.is_some()
                && group.members.iter().any(|k| {
                    sessions
                        .get(k)
                        .is_some_and(|s| s.device_active() && !s.link.closing())
                });
            return Err(match any_active {
                true => Unavailable::Unsupported,
                false => Unavailable::NoneReady,
            });
        }
        let nth = match strategy {
            Strategy::Random => fastrand::usize(..active),
            Strategy::RoundRobin => {
                group.cursor = group.cursor.wrapping_add(1);
                (group.cursor - 1) % active
            }
            Strategy::LeastBusy => {
                let busy = group
                    .members
                    .iter()
                    .filter(|k| is_active(k))
                    .map(|k| sessions.get(k).map_or(usize::MAX, |s| s.pending.len()));
                least_busy(busy, &mut group.cursor, active)
            }
        };
        let key = group
            .members
            .iter()
            .filter(|k| is_active(k))
            .nth(nth)
            .copied()
            .ok_or(Unavailable::NoneReady)?;
        let session = sessions.get(&key).ok_or(Unavailable::NoneReady)?;
        Ok((key, session.identity.clone(), session.link.clone()))
    }

    /// The session `session_id` of `api_key`, if it is an active device that handles
    /// the send's command (5.3: a send another process routed to it); else any
    /// active device of the key that does.
    pub fn select_session(
        &mut self,
        api_key: &str,
        session_id: &str,
        strategy: Strategy,
        wants: Wants,
    ) -> Result<(SessionKey, Arc<Identity>, Arc<SessionLink>), Unavailable> {
        let pinned = Wants {
            session: Some(session_id),
            ..wants
        };
        match self.select_pinned(api_key, session_id, pinned) {
            Ok(found) => Ok(found),
            Err(_) => self.select(api_key, strategy, wants),
        }
    }

    /// The session `session_id` of `api_key`, only: `Target` if it is not an active
    /// device, `Unsupported` if it does not handle the send's command.
    fn select_pinned(
        &self,
        api_key: &str,
        session_id: &str,
        wants: Wants,
    ) -> Result<(SessionKey, Arc<Identity>, Arc<SessionLink>), Unavailable> {
        let group = self.by_api_key.get(api_key).ok_or(Unavailable::Target)?;
        let (key, session) = group
            .members
            .iter()
            .find_map(|k| {
                let s = self.sessions.get(k)?;
                (*s.identity.session_id == *session_id).then_some((*k, s))
            })
            .ok_or(Unavailable::Target)?;
        if !session.device_active() || session.link.closing() {
            return Err(Unavailable::Target);
        }
        if !wants.handled_by(&session.identity) {
            return Err(Unavailable::Unsupported);
        }
        Ok((key, session.identity.clone(), session.link.clone()))
    }

    /// The active devices of `api_key` with their sends in flight (5.3: the calling
    /// process chooses among these and the other processes' devices).
    pub fn active_devices(&self, api_key: &str) -> Vec<(Arc<Identity>, usize)> {
        let Some(group) = self.by_api_key.get(api_key) else {
            return Vec::new();
        };
        group
            .members
            .iter()
            .filter_map(|k| self.sessions.get(k))
            .filter(|s| s.device_active() && !s.link.closing())
            .map(|s| (s.identity.clone(), s.pending.len()))
            .collect()
    }

    /// 5.3 draining: every send still waiting unwritten in a pacing queue, taken out
    /// with its command, to be chosen again elsewhere.
    pub fn take_queued(&mut self) -> Vec<(Settled, Frame)> {
        let mut taken = Vec::new();
        for session in self.sessions.values_mut() {
            let mut unwritten = session.link.take_waiting();
            unwritten.extend(session.queue.drain());
            for (request_id, frame) in unwritten {
                if let Some(settled) = session.take_request(request_id, &mut self.deadlines) {
                    taken.push((settled, frame));
                }
            }
        }
        taken
    }

    /// Whether `session_id` is a session of `api_key` here, active or not.
    pub fn has_session(&self, api_key: &str, session_id: &str) -> bool {
        self.by_api_key.get(api_key).is_some_and(|group| {
            group.members.iter().any(|k| {
                self.sessions
                    .get(k)
                    .is_some_and(|s| *s.identity.session_id == *session_id)
            })
        })
    }

    /// Whether `api_key` has a device a send could go to now.
    pub fn has_active_device(&self, api_key: &str) -> bool {
        self.has_device_for(api_key, Wants::default())
    }

    /// Whether `api_key` has a device now that a send with these `wants` could go to.
    pub fn has_device_for(&self, api_key: &str, wants: Wants) -> bool {
        self.by_api_key.get(api_key).is_some_and(|group| {
            group.members.iter().any(|k| {
                self.sessions.get(k).is_some_and(|s| {
                    s.device_active() && !s.link.closing() && wants.accepts(&s.identity)
                })
            })
        })
    }

    /// What `getActiveSessions` lists for one session.
    pub fn info_of(&self, key: SessionKey) -> Option<SessionInfo> {
        self.sessions.get(&key).map(Session::info)
    }

    /// Records a request sent to `key`; false if that session has gone meanwhile.
    /// Returns whether its deadline must wake the deadline timer (`wakes_timer`).
    pub fn insert_pending(
        &mut self,
        key: SessionKey,
        request_id: u128,
        pending: Pending,
    ) -> Option<bool> {
        let earliest = self.wakes_timer(pending.deadline);
        let session = self.sessions.get_mut(&key)?;
        self.deadlines.insert((pending.deadline, request_id), key);
        session.pending.insert(request_id, pending);
        Some(earliest)
    }

    /// Takes the request `request_id` if it was sent to `key`; results from any
    /// other session, or for unknown ids, settle nothing.
    pub fn settle(&mut self, key: SessionKey, request_id: u128) -> Option<Settled> {
        self.take_unwritten(key, request_id)
            .map(|(settled, _)| settled)
    }

    /// `settle`, and whether its command still waited for room (the bytes ahead of it).
    /// A command taken off before it was written never will be: `queued` says so.
    fn take_unwritten(
        &mut self,
        key: SessionKey,
        request_id: u128,
    ) -> Option<(Settled, Option<usize>)> {
        let session = self.sessions.get_mut(&key)?;
        let mut settled = session.take_request(request_id, &mut self.deadlines)?;
        let mut room_wait = None;
        if settled.pending.queued {
            room_wait = session.queue.remove(request_id).flatten();
        } else if let Some(withdrawn) = session.link.withdraw(request_id) {
            settled.pending.queued = true;
            room_wait = Some(withdrawn.queued);
        }
        Some((settled, room_wait))
    }

    /// Takes the request `request_id` for a result from session `key`: sent to it, or
    /// written to another session of the same API key (an extension that reconnected
    /// answers on its new session). Returns the answering session's identity too.
    pub fn settle_from(
        &mut self,
        key: SessionKey,
        request_id: u128,
    ) -> Option<(Settled, Arc<Identity>)> {
        let answering = self.sessions.get(&key)?.identity.clone();
        if let Some(settled) = self.settle(key, request_id) {
            return Some((settled, answering));
        }
        let group = self.by_api_key.get(&answering.api_key)?;
        // Only a command that was written there: one still queued (paced, or waiting
        // for room) has had no answer.
        let holder = group.members.iter().copied().find(|k| {
            *k != key
                && self.sessions.get(k).is_some_and(|s| {
                    s.pending.get(&request_id).is_some_and(|p| !p.queued)
                        && !s.link.is_waiting(request_id)
                })
        })?;
        let settled = self.settle(holder, request_id)?;
        Some((settled, answering))
    }

    /// Takes every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut expired = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            let (deadline, request_id) = *entry.key();
            if deadline > now {
                break;
            }
            let key = entry.remove();
            if let Some((settled, room_wait)) = self.take_unwritten(key, request_id) {
                expired.push(Expired { settled, room_wait });
            }
        }
        expired
    }

    /// Whether a new `deadline` comes before the deadline timer wakes: every deadline is
    /// then at or after its wake-up, so none is missed, and later ones wait for it.
    fn wakes_timer(&self, deadline: Instant) -> bool {
        self.timer_wakes_at.is_none_or(|at| deadline < at)
    }

    /// When the deadline timer is to wake next, from `now`: the next deadline, or an
    /// hour on without one. Taken as the timer's wake-up (`wakes_timer`).
    pub fn arm_timer(&mut self, now: Instant) -> Instant {
        let at = self
            .next_deadline()
            .unwrap_or(now + std::time::Duration::from_secs(3600));
        self.timer_wakes_at = Some(at);
        at
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let requests = self.deadlines.first_key_value().map(|((d, _), _)| *d);
        let acks = self.statuses.next_deadline();
        requests.into_iter().chain(acks).min()
    }

    /// `getMessageStatus`: the send's record, with the state of a call still pending
    /// as it is now (its record, if it has one from the start, says only `queued`).
    pub fn message_status(&self, request_id: u128) -> Option<Value> {
        let live = self.pending_status(request_id);
        if let Some(record) = self.statuses.get(request_id) {
            let stored = record.stored(request_id);
            let state = match &live {
                Some(pending) if record.is_open() => pending.state,
                _ => stored.state,
            };
            return Some(stored.status(state));
        }
        live.map(|pending| pending.status(pending.state))
    }

    /// Whether this process ran `request_id` for another process of its cluster (that
    /// process's record is the full one: its metadata, its key).
    pub fn ran_for_other(&self, request_id: u128) -> bool {
        self.statuses.get(request_id).is_some_and(|r| r.for_other)
    }

    /// `getMessageStatus({ apiKey, idempotencyKey | messageId })`.
    pub fn message_status_by(&mut self, api_key: &str, by: &StatusKey) -> Option<Value> {
        let request_id = match by {
            StatusKey::Idempotency(key) => self.statuses.by_key(api_key, key)?.0,
            StatusKey::Message(id) => self.statuses.by_message(api_key, id)?.0,
        };
        self.message_status(request_id)
    }

    /// A send still waiting for a device or its extension's result, as its record
    /// would show it.
    fn pending_status(&self, request_id: u128) -> Option<StoredRecord> {
        if let Some(parked) = self.parking.find(request_id) {
            let p = &parked.pending;
            return Some(StoredRecord::pending(
                request_id,
                p.kind,
                &p.phone_number,
                None,
                State::Queued,
            ));
        }
        self.sessions.values().find_map(|s| {
            let p = s.pending.get(&request_id)?;
            // Waiting in its pace, or for room on the connection: not handed over yet.
            let state = if p.queued || s.link.is_waiting(request_id) {
                State::Queued
            } else {
                State::InFlight
            };
            Some(StoredRecord::pending(
                request_id,
                p.kind,
                &p.phone_number,
                Some(&s.identity),
                state,
            ))
        })
    }

    /// The API key of a session, for acks accepted from any session of that key.
    pub fn api_key_of(&self, key: SessionKey) -> Option<Arc<str>> {
        self.sessions.get(&key).map(|s| s.identity.api_key.clone())
    }

    pub fn identity_of(&self, key: SessionKey) -> Option<Arc<Identity>> {
        self.sessions.get(&key).map(|s| s.identity.clone())
    }

    /// Sends in pacing queues or waiting for a device (`wa_gateway_queued_sends`).
    pub fn queued_count(&self) -> usize {
        let paced: usize = self.sessions.values().map(|s| s.queue.len()).sum();
        paced + self.parking.len()
    }

    pub fn parking_open(&self) -> bool {
        self.parking_open
    }

    /// Why no device of `api_key` can take a send.
    pub fn why_no_device(&self, api_key: &str) -> Unavailable {
        if self.by_api_key.contains_key(api_key) {
            Unavailable::NoneReady
        } else {
            Unavailable::NoSessions
        }
    }

    /// Records a request sent to `key` (paced, or sent where it waited for a device)
    /// and lets its command leave now, or queues it behind the device's pacing.
    /// `Ok` says whether its deadline must wake the deadline timer (`wakes_timer`).
    pub fn place(
        &mut self,
        key: SessionKey,
        request_id: u128,
        mut pending: Pending,
        frame: Frame,
    ) -> Result<bool, NotPlaced> {
        let pacing = self.pacing.filter(|_| pending.paced);
        let max_queued = self.max_queued;
        let Some(session) = self.sessions.get_mut(&key) else {
            pending.queued = true;
            return Err(NotPlaced::Gone(pending, frame));
        };
        let now = Instant::now();
        let leave_now = match &pacing {
            None => true,
            Some(p) => session.queue.is_empty() && session.queue.may_leave(now, p),
        };
        // `maxQueuedSends` counts the sends waiting on this device, paced or for room on
        // its socket.
        if !leave_now {
            let waiting = session.queue.len() + session.link.waiting_count();
            if waiting >= max_queued {
                pending.queued = true;
                return Err(NotPlaced::QueueFull(pending, frame, waiting));
            }
        }
        if leave_now {
            // Its bytes wait for room on the socket if they must (`maxQueuedBytes`).
            let queued =
                session
                    .link
                    .enqueue_command(request_id, frame, self.max_queued_bytes, max_queued);
            match queued {
                Ok(CommandQueued::First) => session.link.wake(),
                Ok(_) => {}
                Err(TooManyWaiting { waiting, frame }) => {
                    pending.queued = true;
                    return Err(NotPlaced::QueueFull(pending, frame, waiting));
                }
            }
            if let Some(p) = &pacing {
                session.queue.departed(now, p);
            }
        } else {
            // `maxQueuedBytes` counts the pacing queue: with more ahead than it takes, the
            // command waits for room as well as for its turn.
            let ahead = session.link.queued_bytes() + session.queue.bytes();
            let over = ahead > 0 && ahead.saturating_add(frame_len(&frame)) > self.max_queued_bytes;
            session.queue.push(request_id, frame, over.then_some(ahead));
            self.wake_delivery.notify_one();
        }
        pending.queued = !leave_now;
        let deadline = pending.deadline;
        session.pending.insert(request_id, pending);
        let earliest = self.wakes_timer(deadline);
        self.deadlines.insert((deadline, request_id), key);
        Ok(earliest)
    }

    /// For a command `place` has just queued behind `key`'s pace (the last in its
    /// queue): whether its queue wait alone passes its deadline, as (the wait at least,
    /// its timeout in ms). It would then fail `REQUEST_TIMEOUT` without being sent.
    pub fn queue_outlasts_timeout(
        &self,
        key: SessionKey,
        request_id: u128,
        now: Instant,
    ) -> Option<(std::time::Duration, u64)> {
        let pacing = self.pacing.as_ref()?;
        let session = self.sessions.get(&key)?;
        let pending = session.pending.get(&request_id).filter(|p| p.queued)?;
        let ahead = session.queue.len().checked_sub(1)?;
        let departure = session.queue.earliest_departure(ahead, now, pacing);
        let late = departure.is_none_or(|at| at > pending.deadline);
        let wait = departure.map_or(std::time::Duration::MAX, |at| at - now);
        late.then_some((wait, pending.timeout_ms))
    }

    /// Lets every paced command that is due leave (to wait for room on its socket if
    /// it must); returns when the next one is due.
    pub fn release_due(&mut self, now: Instant) -> Option<Instant> {
        let pacing = self.pacing?;
        let max_bytes = self.max_queued_bytes;
        let mut next: Option<Instant> = None;
        for session in self.sessions.values_mut() {
            while let Some(request_id) = session.queue.front_id() {
                let live = session.pending.get(&request_id).is_some_and(|p| p.queued);
                if !live {
                    session.queue.pop();
                    continue;
                }
                if !session.queue.may_leave(now, &pacing) {
                    let at = session.queue.ready_at(&pacing);
                    next = next.into_iter().chain(at).min();
                    break;
                }
                let Some((_, frame)) = session.queue.pop() else {
                    break;
                };
                session.queue.departed(now, &pacing);
                // It was counted among the device's waiting sends already: from the pacing
                // queue it may always go on to wait for room (no limit, so never refused).
                let queued = session
                    .link
                    .enqueue_command(request_id, frame, max_bytes, usize::MAX);
                if matches!(queued, Ok(CommandQueued::First)) {
                    session.link.wake();
                }
                if let Some(pending) = session.pending.get_mut(&request_id) {
                    pending.queued = false;
                }
            }
        }
        next
    }

    /// An unwritten command whose device left: to another active device of the key,
    /// else to wait for one while its `waitForDevice` lasts. Returns the request if
    /// neither is possible.
    fn reselect(
        &mut self,
        origin: &Arc<Identity>,
        request_id: u128,
        pending: Pending,
        frame: Frame,
    ) -> Option<Pending> {
        // Its target has left, for good: a session never comes back under its id.
        if pending.pinned {
            return Some(pending);
        }
        let wants = Wants {
            session: None,
            command: pending.command(),
        };
        let selected = self
            .select(&origin.api_key, Strategy::LeastBusy, wants)
            .map(|(key, _, _)| key);
        let (mut pending, frame) = match selected {
            Ok(key) => match self.place(key, request_id, pending, frame) {
                Ok(_) => return None,
                Err(NotPlaced::Gone(p, f)) | Err(NotPlaced::QueueFull(p, f, _)) => (p, f),
            },
            Err(_) => (pending, frame),
        };
        pending.queued = true;
        let until = match pending.park_until {
            Some(until) if self.parking_open && until > Instant::now() => until,
            _ => return Some(pending),
        };
        let parked = Parked {
            request_id,
            frame,
            pending,
            strategy: Strategy::LeastBusy,
            until,
            origin: Some(origin.clone()),
            target: None,
        };
        self.parking.park(origin.api_key.clone(), parked);
        self.wake_delivery.notify_one();
        None
    }

    /// Sends waiting for a device go to the keys' active devices, in order.
    pub fn unpark(&mut self) -> Unparked {
        let mut out = Unparked::default();
        let sessions = &self.sessions;
        let ready: Vec<Arc<str>> = self
            .parking
            .keys()
            .filter(|k| {
                self.by_api_key.get(&***k).is_some_and(|g| {
                    g.members
                        .iter()
                        .any(|m| sessions.get(m).is_some_and(Session::device_active))
                })
            })
            .cloned()
            .collect();
        for api_key in ready {
            let mut parked = self.parking.take(&api_key);
            let mut stuck = std::collections::VecDeque::new();
            while let Some(p) = parked.pop_front() {
                let wants = Wants {
                    session: p.target.as_deref(),
                    command: p.pending.command(),
                };
                let (key, identity) = match self.select(&api_key, p.strategy, wants) {
                    Ok((key, identity, _)) => (key, identity),
                    Err(Unavailable::Unsupported) => {
                        out.unsupported.push((api_key.clone(), p));
                        continue;
                    }
                    // Its session may still become active; those behind it go on.
                    Err(Unavailable::Target) => {
                        stuck.push_back(p);
                        continue;
                    }
                    Err(_) => {
                        stuck.push_back(p);
                        break;
                    }
                };
                let Parked {
                    request_id,
                    frame,
                    pending,
                    strategy,
                    until,
                    origin,
                    target,
                } = p;
                match self.place(key, request_id, pending, frame) {
                    Ok(earliest) => out.earliest |= earliest,
                    Err(NotPlaced::QueueFull(pending, _, queued)) => {
                        out.queue_full.push((identity, request_id, pending, queued));
                    }
                    Err(NotPlaced::Gone(pending, frame)) => stuck.push_back(Parked {
                        request_id,
                        frame,
                        pending,
                        strategy,
                        until,
                        origin,
                        target,
                    }),
                }
            }
            stuck.extend(parked);
            self.parking.restore(api_key, stuck);
        }
        out
    }

    /// Stops admitting sessions, asks every session to close, and takes every request
    /// in flight.
    pub fn shut_down(&mut self) -> Vec<Settled> {
        self.closing = true;
        self.parking_open = false;
        self.close_all(CloseRequest::Shutdown);
        self.take_all_pending()
    }

    /// Durable mode's `stop()`: takes every send still waiting unwritten (pacing
    /// queues, waiting for a device) out of memory; the store keeps them for the next
    /// start. Returns their calls by request id.
    pub fn keep_waiting(&mut self) -> Vec<(u128, CallId)> {
        let mut kept: Vec<(u128, CallId)> = self
            .parking
            .take_all()
            .into_iter()
            .map(|p| (p.request_id, p.pending.call))
            .collect();
        for session in self.sessions.values_mut() {
            let mut ids: Vec<u128> = session
                .queue
                .drain()
                .into_iter()
                .map(|(request_id, _)| request_id)
                // Entries of requests that left already are stale here.
                .filter(|id| session.pending.get(id).is_some_and(|p| p.queued))
                .collect();
            // Waiting for room, the store not yet asked to mark them leaving.
            let pending = &session.pending;
            ids.extend(
                session
                    .link
                    .withdraw_unasked(|id| pending.get(&id).is_some_and(|p| p.stored)),
            );
            for request_id in ids {
                if let Some(settled) = session.take_request(request_id, &mut self.deadlines) {
                    kept.push((request_id, settled.pending.call));
                }
            }
        }
        kept
    }

    pub fn reopen(&mut self) {
        self.closing = false;
        self.parking_open = true;
    }

    /// Takes every request in flight.
    fn take_all_pending(&mut self) -> Vec<Settled> {
        self.deadlines.clear();
        for session in self.sessions.values_mut() {
            // Never written, and now never will be.
            for (request_id, _) in session.link.take_waiting() {
                if let Some(pending) = session.pending.get_mut(&request_id) {
                    pending.queued = true;
                }
            }
        }
        self.sessions
            .values_mut()
            .flat_map(|s| {
                let identity = s.identity.clone();
                s.pending.drain().map(move |(request_id, pending)| Settled {
                    identity: identity.clone(),
                    request_id,
                    pending,
                })
            })
            .collect()
    }

    pub fn sessions_of(&self, api_key: &str) -> Vec<SessionInfo> {
        self.by_api_key
            .get(api_key)
            .map(|g| {
                g.members
                    .iter()
                    .filter_map(|k| self.sessions.get(k))
                    .map(Session::info)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every session of every key, with its key (`getAllSessions`).
    pub fn all_sessions(&self) -> Vec<(Arc<str>, SessionInfo)> {
        self.sessions
            .values()
            .map(|s| (s.identity.api_key.clone(), s.info()))
            .collect()
    }

    pub fn links(&self) -> impl Iterator<Item = &Arc<SessionLink>> {
        self.sessions.values().map(|s| &s.link)
    }

    /// Asks every session to close.
    pub fn close_all(&self, why: CloseRequest) {
        for link in self.links() {
            link.request_close(why);
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn pending_count(&self) -> usize {
        self.deadlines.len()
    }
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
