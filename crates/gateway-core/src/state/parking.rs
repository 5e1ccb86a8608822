//! 5.2 `waitForDevice`: sends of an API key that has no active device wait here, in
//! order, until one becomes active or their time is up. So do unwritten sends whose
//! device left. Bounded per key by `maxQueuedSends`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::Strategy;
use crate::identity::Identity;
use crate::protocol::Frame;

/// A send waiting for a device, its command already built; `P` is the registry's
/// record of a request.
pub struct Parked<P> {
    pub request_id: u128,
    pub frame: Frame,
    pub pending: P,
    pub strategy: Strategy,
    /// Until when it may wait: the call's `waitForDevice` or `timeout`, whichever ends first.
    pub until: Instant,
    /// The device it had been queued on, if it left before the command was written.
    pub origin: Option<Arc<Identity>>,
    /// The caller's `target`: it waits for that session only.
    pub target: Option<Arc<str>>,
}

pub struct Parking<P> {
    by_key: HashMap<Arc<str>, VecDeque<Parked<P>>>,
    deadlines: BTreeSet<(Instant, u128)>,
    key_of: HashMap<u128, Arc<str>>,
}

impl<P> Default for Parking<P> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            deadlines: BTreeSet::new(),
            key_of: HashMap::new(),
        }
    }
}

impl<P> Parking<P> {
    /// Sends waiting, of every key.
    pub fn len(&self) -> usize {
        self.key_of.len()
    }

    pub fn count(&self, api_key: &str) -> usize {
        self.by_key.get(api_key).map_or(0, VecDeque::len)
    }

    pub fn park(&mut self, api_key: Arc<str>, parked: Parked<P>) {
        self.deadlines.insert((parked.until, parked.request_id));
        self.key_of.insert(parked.request_id, api_key.clone());
        self.by_key.entry(api_key).or_default().push_back(parked);
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_key.keys()
    }

    pub fn has(&self, api_key: &str) -> bool {
        self.by_key.contains_key(api_key)
    }

    /// Every send waiting for a device of `api_key`, in order.
    pub fn take(&mut self, api_key: &str) -> VecDeque<Parked<P>> {
        let taken = self.by_key.remove(api_key).unwrap_or_default();
        for parked in &taken {
            self.deadlines.remove(&(parked.until, parked.request_id));
            self.key_of.remove(&parked.request_id);
        }
        taken
    }

    /// Puts back, in front, the sends `take` returned that found no place.
    pub fn restore(&mut self, api_key: Arc<str>, mut parked: VecDeque<Parked<P>>) {
        if parked.is_empty() {
            return;
        }
        for p in &parked {
            self.deadlines.insert((p.until, p.request_id));
            self.key_of.insert(p.request_id, api_key.clone());
        }
        if let Some(later) = self.by_key.remove(&api_key) {
            parked.extend(later);
        }
        self.by_key.insert(api_key, parked);
    }

    /// Takes the sends whose time to wait is up.
    pub fn expire(&mut self, now: Instant) -> Vec<(Arc<str>, Parked<P>)> {
        let mut expired = Vec::new();
        while let Some(&(until, request_id)) = self.deadlines.first() {
            if until > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(api_key) = self.key_of.remove(&request_id) else {
                continue;
            };
            if let Some(queue) = self.by_key.get_mut(&api_key) {
                if let Some(at) = queue.iter().position(|p| p.request_id == request_id) {
                    if let Some(parked) = queue.remove(at) {
                        expired.push((api_key.clone(), parked));
                    }
                }
                if queue.is_empty() {
                    self.by_key.remove(&api_key);
                }
            }
        }
        expired
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    pub fn find(&self, request_id: u128) -> Option<&Parked<P>> {
        let api_key = self.key_of.get(&request_id)?;
        self.by_key
            .get(api_key)?
            .iter()
            .find(|p| p.request_id == request_id)
    }

    /// Everything, for `stop()`.
    pub fn take_all(&mut self) -> Vec<Parked<P>> {
        self.deadlines.clear();
        self.key_of.clear();
        self.by_key.drain().flat_map(|(_, q)| q).collect()
    }
}
