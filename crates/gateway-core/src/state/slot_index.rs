//! An index from a key's hash to the sequence number of a record in the records' ring
//! (`records.rs`): open addressing with linear probing over `u64` entries (a set bit, 31
//! bits of the hash, 32 of the sequence number), no allocation per entry. Entries keep
//! their hash so that removing one (every send, once the ring is full) never reads the
//! ring; whoever finds an entry confirms with the ring that the record is the one
//! wanted, so colliding hashes only cost a probe. An empty entry is 0, so a table is
//! zeroed memory: sized for every record up front, it costs only the pages written.

pub struct SlotIndex {
    entries: Vec<u64>,
    mask: usize,
}

const EMPTY: u64 = 0;
/// Set in every entry, so that none is `EMPTY`.
const TAG: u64 = 1 << 31;

impl SlotIndex {
    /// Sized for `records` entries at first; it grows as they come.
    pub fn with_room_for(records: usize) -> Self {
        let size = (records * 2).next_power_of_two().max(16);
        Self {
            entries: vec![EMPTY; size],
            mask: size - 1,
        }
    }

    /// Where a hash's home bits start: a hash's bits from here up pick its home.
    pub const HOME_SHIFT: u32 = 33;

    /// The part of a 64-bit hash an entry keeps, tagged.
    pub fn short(hash: u64) -> u64 {
        (hash >> Self::HOME_SHIFT) | TAG
    }

    fn entry(short: u64, seq: u32) -> u64 {
        (short << 32) | u64::from(seq)
    }

    fn home(&self, entry: u64) -> usize {
        (entry >> 32) as usize & self.mask
    }

    /// The first entry with this hash for which `found(seq)` confirms the record.
    pub fn find<T>(&self, hash: u64, found: impl Fn(u32) -> Option<T>) -> Option<T> {
        let short = Self::short(hash);
        let mut at = short as usize & self.mask;
        loop {
            let entry = self.entries[at];
            if entry == EMPTY {
                return None;
            }
            if entry >> 32 == short {
                if let Some(value) = found(entry as u32) {
                    return Some(value);
                }
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds an entry; `len` entries there will be with it.
    pub fn insert(&mut self, hash: u64, seq: u32, len: usize) {
        if len * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let entry = Self::entry(Self::short(hash), seq);
        let mut at = self.home(entry);
        while self.entries[at] != EMPTY {
            at = (at + 1) & self.mask;
        }
        self.entries[at] = entry;
    }

    /// Removes the entry of this hash and sequence number, if there is one.
    pub fn remove(&mut self, hash: u64, seq: u32) {
        let wanted = Self::entry(Self::short(hash), seq);
        let mut hole = self.home(wanted);
        loop {
            let entry = self.entries[hole];
            if entry == EMPTY {
                return;
            }
            if entry == wanted {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        // Backward shift: entries after the hole that may sit in it move up, so that
        // every entry stays reachable from its home without tombstones.
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let entry = self.entries[next];
            if entry == EMPTY {
                break;
            }
            let home = self.home(entry);
            if next.wrapping_sub(home) & self.mask >= next.wrapping_sub(hole) & self.mask {
                self.entries[hole] = entry;
                hole = next;
            }
        }
        self.entries[hole] = EMPTY;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; (self.mask + 1) * 2]);
        self.mask = self.entries.len() - 1;
        for entry in old.into_iter().filter(|e| *e != EMPTY) {
            let mut at = self.home(entry);
            while self.entries[at] != EMPTY {
                at = (at + 1) & self.mask;
            }
            self.entries[at] = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_keeps_through_collisions_growth_and_removals() {
        let mut index = SlotIndex::with_room_for(4);
        // Every hash collides on its short form: the worst case for probing.
        let same = 7u64 << 33;
        for seq in 0..100u32 {
            index.insert(same | u64::from(seq), seq, seq as usize + 1);
        }
        for seq in (0..100u32).step_by(3) {
            index.remove(same, seq);
        }
        for seq in 0..100u32 {
            let found = index.find(same, |s| (s == seq).then_some(s));
            assert_eq!(found.is_some(), seq % 3 != 0, "seq {seq}");
        }
        index.remove(same, 1000);
        assert!(index.find(1 << 40, |_| Some(())).is_none());
    }
}
