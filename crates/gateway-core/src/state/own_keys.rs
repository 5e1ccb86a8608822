//! Hashing for keys the gateway makes itself: sequential session keys, and request ids
//! that are its own UUIDs (random per gateway, counting up: `request_ids`). A peer
//! inserts none of them (an extension can only
//! look one up), so a keyed hash (and its per-map keys, 16 bytes in every session's
//! entry) buys nothing, and SipHash showed in the profile of every send: selection looks
//! each of a key's devices up, and each send is recorded and found by its request id.

use std::hash::{BuildHasherDefault, Hasher};

/// 2^64 / φ: Fibonacci hashing spreads sequential keys over the high bits hashbrown
/// tags by.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Default, Clone, Copy)]
pub struct OwnKeyHasher(u64);

/// `HashMap<K, V, OwnKeys>` for keys the gateway made.
pub type OwnKeys = BuildHasherDefault<OwnKeyHasher>;

impl Hasher for OwnKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FIBONACCI);
    }

    /// A request id: its halves mixed are hash enough, the counting part spread by the
    /// multiplication (`request_id_hash` when the id is the whole key).
    fn write_u128(&mut self, n: u128) {
        self.write_u64((n as u64) ^ ((n >> 64) as u64));
    }
}

/// What `OwnKeyHasher` makes of a request id alone; for indexes that keep the hash.
pub fn request_id_hash(request_id: u128) -> u64 {
    let mut hasher = OwnKeyHasher::default();
    hasher.write_u128(request_id);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_request_id_hashes_alike_as_a_map_key_and_for_an_index() {
        let id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(OwnKeys::default().hash_one(id), request_id_hash(id));
        assert_ne!(request_id_hash(id), request_id_hash(id + 1));
    }

    #[test]
    fn sequential_session_keys_differ_in_their_high_bits() {
        let tags: std::collections::HashSet<u64> = (0u64..128)
            .map(|k| OwnKeys::default().hash_one(k) >> 57)
            .collect();
        assert!(
            tags.len() > 64,
            "{} distinct 7-bit tags of 128 keys",
            tags.len()
        );
    }
}
