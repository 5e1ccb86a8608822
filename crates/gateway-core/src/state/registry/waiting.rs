//! The registry's sends waiting for a device (`waitForDevice`): parked when none can
//! take them, placed when one becomes active.

use std::sync::Arc;

use tokio::time::Instant;

use super::{NotPlaced, Pending, Registry, Session, Unavailable, Unparked};
use crate::config::Strategy;
use crate::identity::{CallId, Identity};
use crate::protocol::Frame;
use crate::state::parking::Parked;
use crate::state::send_request::Wants;

impl Registry {
    pub fn parking_open(&self) -> bool {
        self.parking_open
    }

    /// An unwritten command whose device left: to another active device of the key,
    /// else to wait for one while its `waitForDevice` lasts. Returns the request if
    /// neither is possible.
    pub(super) fn reselect(
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
                let request_id = p.request_id;
                match self.place(key, request_id, p.pending, p.frame) {
                    Ok(earliest) => out.earliest |= earliest,
                    Err(NotPlaced::QueueFull(pending, _, queued)) => {
                        out.queue_full.push((identity, request_id, pending, queued));
                    }
                    // Its device left meanwhile: it waits again as it was.
                    Err(NotPlaced::Gone(pending, frame)) => stuck.push_back(Parked {
                        pending,
                        frame,
                        ..p
                    }),
                }
            }
            stuck.extend(parked);
            self.parking.restore(api_key, stuck);
        }
        out
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
}
