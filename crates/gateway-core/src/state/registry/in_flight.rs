//! The registry's requests in flight: recording one sent to a session, settling it
//! by its result, and what `getMessageStatus` says of it meanwhile.

use std::sync::Arc;

use serde_json::Value;

use super::{Pending, Registry, SessionKey, Settled};
use crate::identity::Identity;
use crate::state::records::{State, StatusKey, StoredRecord};

impl Registry {
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
    pub(super) fn take_unwritten(
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

    /// Takes every request in flight.
    pub(super) fn take_all_pending(&mut self) -> Vec<Settled> {
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

    pub fn pending_count(&self) -> usize {
        self.deadlines.len()
    }
}
