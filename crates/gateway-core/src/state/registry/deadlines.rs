//! The registry's deadlines: the requests whose time is up, and when the next one is.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::time::Instant;

use super::{Expired, Registry, Session, SessionKey};
use crate::state::own_keys::OwnKeys;

/// The deadlines of the requests in flight.
///
/// Nearly every request has the gateway's one timeout, so deadlines are mostly set in
/// the order they fall due: those join the back of a queue, and only one set before the
/// last (a shorter timeout) goes to a B-tree. A settled request's entry in the queue is
/// not looked for: it goes when it reaches the front, or when settled entries are most
/// of the queue. A B-tree of every deadline, whose entry each settled request removed,
/// was 3.6% of the JavaScript thread at 1024 sends in flight (docs/performance.md).
#[derive(Default)]
pub(super) struct Deadlines {
    in_order: VecDeque<Due>,
    /// How many of `in_order` belong to requests still in flight: exact, since every
    /// request in flight has one deadline, set when it is recorded and removed when it
    /// leaves.
    live_in_order: usize,
    out_of_order: BTreeMap<(Instant, u128), SessionKey>,
}

/// A request's deadline, and the session it was sent to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Due {
    pub deadline: Instant,
    pub request_id: u128,
    pub key: SessionKey,
}

/// Settled entries the queue may hold beyond as many as are live before it is swept.
const SETTLED_SLACK: usize = 1024;

impl Deadlines {
    /// Adds a request's deadline. `still_due` tells whether an entry's request is
    /// still in flight with that deadline: settled ones at the front go first.
    pub fn insert(&mut self, due: Due, still_due: impl Fn(&Due) -> bool) {
        while self.in_order.front().is_some_and(|d| !still_due(d)) {
            self.in_order.pop_front();
        }
        // One request that never answers keeps every entry behind it: swept once
        // settled ones outnumber live ones (each sweep follows as many inserts as the
        // entries it keeps, so it costs O(1) per request).
        if self.in_order.len() > 2 * self.live_in_order + SETTLED_SLACK {
            self.in_order.retain(|d| still_due(d));
        }
        if self
            .in_order
            .back()
            .is_none_or(|last| due.deadline >= last.deadline)
        {
            self.in_order.push_back(due);
            self.live_in_order += 1;
        } else {
            self.out_of_order
                .insert((due.deadline, due.request_id), due.key);
        }
    }

    /// The request left (settled, failed, moved): its deadline is no longer due.
    pub fn remove(&mut self, deadline: Instant, request_id: u128) {
        if self.out_of_order.remove(&(deadline, request_id)).is_none() {
            debug_assert!(self.live_in_order > 0, "a deadline removed twice");
            self.live_in_order = self.live_in_order.saturating_sub(1);
            if self.live_in_order == 0 {
                self.in_order.clear();
            }
        }
    }

    /// The earliest entry, settled or not, if it is due by `now`.
    fn first_due(&self, now: Instant) -> Option<(Due, bool)> {
        let queued = self.in_order.front().map(|d| (*d, true));
        let sorted = self
            .out_of_order
            .first_key_value()
            .map(|(&(deadline, request_id), &key)| {
                let due = Due {
                    deadline,
                    request_id,
                    key,
                };
                (due, false)
            });
        let first = match (queued, sorted) {
            (Some(q), Some(s)) => Some(if s.0.deadline < q.0.deadline { s } else { q }),
            (q, s) => q.or(s),
        };
        first.filter(|(due, _)| due.deadline <= now)
    }

    pub fn next(&self) -> Option<Instant> {
        let queued = self.in_order.front().map(|d| d.deadline);
        let sorted = self.out_of_order.first_key_value().map(|((d, _), _)| *d);
        queued.into_iter().chain(sorted).min()
    }

    pub fn len(&self) -> usize {
        self.live_in_order + self.out_of_order.len()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Whether `due`'s request is still in flight on its session with that deadline.
pub(super) fn still_due(sessions: &HashMap<SessionKey, Session, OwnKeys>, due: &Due) -> bool {
    sessions
        .get(&due.key)
        .and_then(|s| s.pending.get(&due.request_id))
        .is_some_and(|p| p.deadline == due.deadline)
}

impl Registry {
    /// Takes every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut expired = Vec::new();
        while let Some((due, queued)) = self.deadlines.first_due(now) {
            if queued {
                // Taken off first: taking the request below may empty the queue.
                self.deadlines.in_order.pop_front();
                if !still_due(&self.sessions, &due) {
                    continue;
                }
            }
            if let Some((settled, room_wait)) = self.take_unwritten(due.key, due.request_id) {
                expired.push(Expired { settled, room_wait });
            }
            if !queued {
                // Taking it removed it; this only guards against looping on an entry
                // that nothing took.
                self.deadlines
                    .out_of_order
                    .remove(&(due.deadline, due.request_id));
            }
        }
        expired
    }

    /// Whether a new `deadline` comes before the deadline timer wakes: every deadline is
    /// then at or after its wake-up, so none is missed, and later ones wait for it.
    pub(super) fn wakes_timer(&self, deadline: Instant) -> bool {
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
        let requests = self.deadlines.next();
        let acks = self.statuses.next_deadline();
        requests.into_iter().chain(acks).min()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    /// Deadlines with the set of requests still in flight that `still_due` consults.
    struct Harness {
        deadlines: Deadlines,
        live: RefCell<HashSet<u128>>,
        start: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                deadlines: Deadlines::default(),
                live: RefCell::default(),
                start: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.start + Duration::from_millis(ms)
        }

        fn insert(&mut self, request_id: u128, ms: u64) {
            let due = Due {
                deadline: self.at(ms),
                request_id,
                key: 1,
            };
            let live = &self.live;
            self.deadlines
                .insert(due, |d| live.borrow().contains(&d.request_id));
            live.borrow_mut().insert(request_id);
        }

        fn settle(&mut self, request_id: u128, ms: u64) {
            self.live.borrow_mut().remove(&request_id);
            self.deadlines.remove(self.at(ms), request_id);
        }

        fn queued(&self) -> Vec<u128> {
            self.deadlines
                .in_order
                .iter()
                .map(|d| d.request_id)
                .collect()
        }
    }

    #[test]
    fn settled_requests_leave_the_front_of_the_queue_at_the_next_insert() {
        let mut h = Harness::new();
        for id in 1..=3 {
            h.insert(id, 100 + id as u64);
        }
        h.settle(1, 101);
        h.settle(2, 102);
        assert_eq!(h.deadlines.len(), 1);
        h.insert(4, 104);
        assert_eq!(h.queued(), [3, 4]);
        assert_eq!(h.deadlines.next(), Some(h.at(103)));
    }

    #[test]
    fn an_earlier_deadline_than_the_last_is_sorted_and_comes_due_first() {
        let mut h = Harness::new();
        h.insert(1, 200);
        h.insert(2, 100);
        h.insert(3, 300);
        assert_eq!(h.queued(), [1, 3]);
        assert_eq!(h.deadlines.next(), Some(h.at(100)));
        let (due, queued) = h.deadlines.first_due(h.at(250)).unwrap();
        assert_eq!((due.request_id, queued), (2, false));
        assert_eq!(h.deadlines.first_due(h.at(99)), None);
        h.settle(2, 100);
        assert_eq!(h.deadlines.first_due(h.at(250)).unwrap().0.request_id, 1);
        assert_eq!(h.deadlines.len(), 2);
    }

    #[test]
    fn the_queue_empties_when_nothing_in_it_is_in_flight() {
        let mut h = Harness::new();
        h.insert(1, 100);
        h.insert(2, 100);
        h.settle(2, 100);
        h.settle(1, 100);
        assert!(h.queued().is_empty());
        assert_eq!(h.deadlines.next(), None);
    }

    /// One device that never answers, while another answers each send at once: the
    /// settled entries behind the stuck one are swept, and it still comes due.
    #[test]
    fn a_request_that_never_settles_does_not_keep_the_settled_ones_behind_it() {
        let mut h = Harness::new();
        h.insert(0, 1_000);
        for id in 1..=20_000 {
            h.insert(id, 1_000 + id as u64);
            h.settle(id, 1_000 + id as u64);
            assert!(h.deadlines.in_order.len() <= 2 + SETTLED_SLACK + 1);
        }
        assert_eq!(h.deadlines.len(), 1);
        let (due, _) = h.deadlines.first_due(h.at(1_000)).unwrap();
        assert_eq!(due.request_id, 0);
    }
}
