//! The registry's deadlines: the requests whose time is up, and when the next one is.

use tokio::time::Instant;

use super::{Expired, Registry};

impl Registry {
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
        let requests = self.deadlines.first_key_value().map(|((d, _), _)| *d);
        let acks = self.statuses.next_deadline();
        requests.into_iter().chain(acks).min()
    }
}
