//! The registry's pacing (README "Delivery"): a request placed on a device leaves
//! now or waits its turn in the device's queue, which the delivery timer releases.

use tokio::time::Instant;

use super::{NotPlaced, Pending, Registry, SessionKey, Settled};
use crate::config::Pacing;
use crate::protocol::{frame_len, Frame};
use crate::state::link::{CommandQueued, TooManyWaiting};
use crate::state::pacing::DeviceQueue;

/// A device's pacing state, allocated once pacing first holds a command back or
/// records a departure. Inline, it made every entry of `sessions` 80 bytes larger,
/// idle sessions and gateways without pacing included.
#[derive(Default)]
pub(super) struct PacingQueue(Option<Box<DeviceQueue>>);

impl PacingQueue {
    pub(super) fn state(&mut self) -> &mut DeviceQueue {
        self.0.get_or_insert_with(Box::default)
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub(super) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes())
    }

    pub(super) fn front_id(&self) -> Option<u128> {
        self.0.as_ref()?.front_id()
    }

    pub(super) fn ready_at(&self, pacing: &Pacing) -> Option<Instant> {
        self.0.as_ref()?.ready_at(pacing)
    }

    /// `None` when nothing waits, or too far off to tell (see `DeviceQueue`).
    pub(super) fn earliest_departure(
        &self,
        ahead: usize,
        now: Instant,
        pacing: &Pacing,
    ) -> Option<Instant> {
        self.0.as_ref()?.earliest_departure(ahead, now, pacing)
    }

    /// Without any state yet, nothing has left and anything may.
    pub(super) fn may_leave(&mut self, now: Instant, pacing: &Pacing) -> bool {
        self.0.as_mut().is_none_or(|q| q.may_leave(now, pacing))
    }

    pub(super) fn departed(&mut self, now: Instant, pacing: &Pacing) {
        self.state().departed(now, pacing);
    }

    pub(super) fn push(&mut self, request_id: u128, frame: Frame, room: Option<usize>) {
        self.state().push(request_id, frame, room);
    }

    pub(super) fn pop(&mut self) -> Option<(u128, Frame)> {
        self.0.as_mut()?.pop()
    }

    pub(super) fn remove(&mut self, request_id: u128) -> Option<Option<usize>> {
        self.0.as_mut()?.remove(request_id)
    }

    pub(super) fn drain(&mut self) -> Vec<(u128, Frame)> {
        self.0
            .as_mut()
            .map_or_else(Vec::new, |q| q.drain().collect())
    }
}

impl Registry {
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

    /// Sends in pacing queues or waiting for a device (`wa_gateway_queued_sends`).
    pub fn queued_count(&self) -> usize {
        let paced: usize = self.sessions.values().map(|s| s.queue.len()).sum();
        paced + self.parking.len()
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
}
