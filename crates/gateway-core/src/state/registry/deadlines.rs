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

    pub fn next_deadline(&self) -> Option<Instant> {
        let requests = self.deadlines.first_key_value().map(|((d, _), _)| *d);
        let acks = self.statuses.next_deadline();
        requests.into_iter().chain(acks).min()
    }
}
