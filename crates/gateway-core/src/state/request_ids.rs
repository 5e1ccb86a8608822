//! The request ids this process gives its sends: UUIDs (version 4 layout) that share one
//! random prefix per gateway and count up in their last 48 bits from a random start.
//!
//! Why consecutive: every settled send is kept as a record found by its request id
//! (`records`), at up to `maxMessageStatuses` of them. With random ids each send touched
//! the index of those records at a random place twice (once recorded, once forgotten), a
//! cache miss each at 200,000 records; with consecutive ids, sends settled and forgotten
//! close together in time touch the same few cache lines (see `records::by_id_hash`).
//!
//! Unique, not secret: the prefix is random per gateway, so ids of other processes and
//! of earlier runs (cluster mode, a durable store) do not collide, but one id tells the
//! next. Knowing it grants nothing: an extension settles or acknowledges only the sends
//! of its own API key, and only the backend looks statuses up.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// The bits that count; the rest is the gateway's random prefix (with the UUID version
/// and variant bits, which lie above them).
const COUNTER_BITS: u32 = 48;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

pub struct RequestIds {
    prefix: u128,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let first = Uuid::new_v4().as_u128();
        Self {
            prefix: first & !u128::from(COUNTER_MASK),
            next: AtomicU64::new(first as u64 & COUNTER_MASK),
        }
    }
}

impl RequestIds {
    /// A new request id, never given before by this gateway (the counter would need
    /// 2^48 sends to come round).
    pub fn next(&self) -> Uuid {
        let counter = self.next.fetch_add(1, Ordering::Relaxed) & COUNTER_MASK;
        Uuid::from_u128(self.prefix | u128::from(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids_that_count_up_under_a_prefix_of_their_own() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        for id in [a, b] {
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert_eq!(
            b.as_u128().wrapping_sub(a.as_u128()) & u128::from(COUNTER_MASK),
            1
        );
        assert_eq!(a.as_u128() >> COUNTER_BITS, b.as_u128() >> COUNTER_BITS);
        let other = RequestIds::default().next();
        assert_ne!(other.as_u128() >> COUNTER_BITS, a.as_u128() >> COUNTER_BITS);
    }

    #[test]
    fn the_counter_wraps_within_the_prefix() {
        let ids = RequestIds {
            prefix: 0xabcd << 64,
            next: AtomicU64::new(COUNTER_MASK),
        };
        assert_eq!(
            ids.next().as_u128(),
            (0xabcd << 64) | u128::from(COUNTER_MASK)
        );
        assert_eq!(ids.next().as_u128(), 0xabcd << 64);
    }
}
