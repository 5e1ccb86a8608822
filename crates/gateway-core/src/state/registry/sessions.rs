//! The registry's sessions: admitting and removing them, their status, choosing a
//! device among a key's active sessions, and listing them.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::{
    least_busy, InFlight, PacingQueue, Refusal, Registry, Session, SessionInfo, SessionKey,
    Settled, Unavailable,
};
use crate::clock::now_ms;
use crate::config::Strategy;
use crate::identity::Identity;
use crate::protocol::StatusFrame;
use crate::state::link::{CloseRequest, SessionLink};
use crate::state::send_request::Wants;

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
            pending: InFlight::default(),
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
        session.status = Some(status.into());
        // Wall-clock ms: never 0.
        session.last_status_update = NonZeroU64::new(now_ms());
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
        let usable = |s: &&Session| s.takes_sends() && wants.handled_by(&s.identity);
        let is_active = |k: &SessionKey| sessions.get(k).is_some_and(|s| usable(&s));
        let members = &group.members;
        let count_active = || members.iter().filter(|k| is_active(k)).count();
        let nth_active = |nth: usize| {
            let key = *members.iter().filter(|k| is_active(k)).nth(nth)?;
            Some((key, sessions.get(&key)?))
        };
        let chosen = match strategy {
            // The first active member from the cursor on: one look-up when all are
            // active, rather than counting them all on every send.
            Strategy::RoundRobin => {
                let next = (0..members.len()).find_map(|step| {
                    let at = group.cursor.wrapping_add(step) % members.len();
                    Some((at, sessions.get(&members[at]).filter(usable)?))
                });
                next.map(|(at, session)| {
                    group.cursor = at.wrapping_add(1);
                    (members[at], session)
                })
            }
            Strategy::Random => match count_active() {
                0 => None,
                active => nth_active(fastrand::usize(..active)),
            },
            Strategy::LeastBusy => match count_active() {
                0 => None,
                active => {
                    let busy = members
                        .iter()
                        .filter(|k| is_active(k))
                        .map(|k| sessions.get(k).map_or(usize::MAX, |s| s.pending.len()));
                    nth_active(least_busy(busy, &mut group.cursor, active))
                }
            },
        };
        if let Some((key, session)) = chosen {
            return Ok((key, session.identity.clone(), session.link.clone()));
        }
        let any_active = wants.command.is_some()
            && members
                .iter()
                .any(|k| sessions.get(k).is_some_and(Session::takes_sends));
        Err(match any_active {
            true => Unavailable::Unsupported,
            false => Unavailable::NoneReady,
        })
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
                (s.identity.session_id() == session_id).then_some((*k, s))
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
            .filter(|s| s.takes_sends())
            .map(|s| (s.identity.clone(), s.pending.len()))
            .collect()
    }

    /// Whether `session_id` is a session of `api_key` here, active or not.
    pub fn has_session(&self, api_key: &str, session_id: &str) -> bool {
        self.by_api_key.get(api_key).is_some_and(|group| {
            group.members.iter().any(|k| {
                self.sessions
                    .get(k)
                    .is_some_and(|s| s.identity.session_id() == session_id)
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
                self.sessions
                    .get(k)
                    .is_some_and(|s| s.takes_sends() && wants.accepts(&s.identity))
            })
        })
    }

    /// What `getActiveSessions` lists for one session.
    pub fn info_of(&self, key: SessionKey) -> Option<SessionInfo> {
        self.sessions.get(&key).map(Session::info)
    }

    /// The API key of a session, for acks accepted from any session of that key.
    pub fn api_key_of(&self, key: SessionKey) -> Option<Arc<str>> {
        self.sessions.get(&key).map(|s| s.identity.api_key.clone())
    }

    pub fn identity_of(&self, key: SessionKey) -> Option<Arc<Identity>> {
        self.sessions.get(&key).map(|s| s.identity.clone())
    }

    /// Why no device of `api_key` can take a send.
    pub fn why_no_device(&self, api_key: &str) -> Unavailable {
        if self.by_api_key.contains_key(api_key) {
            Unavailable::NoneReady
        } else {
            Unavailable::NoSessions
        }
    }

    /// Stops admitting sessions, asks every session to close, and takes every request
    /// in flight.
    pub fn shut_down(&mut self) -> Vec<Settled> {
        self.closing = true;
        self.parking_open = false;
        self.close_all(CloseRequest::Shutdown);
        self.take_all_pending()
    }

    pub fn reopen(&mut self) {
        self.closing = false;
        self.parking_open = true;
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
}
