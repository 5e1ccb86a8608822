//! What the calling process knows of the other processes' devices: listings read
//! from Redis per API key, kept briefly, and the nodes alive at the last lease round.
//! Choosing a device runs here, over the local and the remote devices of a key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Strategy;
use crate::identity::{CallId, Identity};
use crate::media::Media;
use crate::state::registry::least_busy;
use crate::state::requests::SendRequest;

/// How long a key's listing is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct RemoteDevice {
    pub node_id: Arc<str>,
    pub identity: Arc<Identity>,
}

struct Listing {
    devices: Vec<RemoteDevice>,
    read_at: Instant,
}

#[derive(Default)]
pub struct View {
    /// Live nodes and until when their lease runs (as last read).
    live: HashMap<Arc<str>, Instant>,
    /// Every node seen live, until when its lease runs as far as this process knows,
    /// until then: one missing from the last read may have lost it with Redis
    /// (restarted empty) and take it again at its next round.
    known: HashMap<Arc<str>, Instant>,
    listings: HashMap<Arc<str>, Listing>,
    cursors: HashMap<Arc<str>, usize>,
    /// Keys whose listing is being read, with the sends waiting for it in call order.
    reads: HashMap<Arc<str>, Vec<WaitingSend>>,
}

/// A send waiting for its key's listing to be read.
pub struct WaitingSend {
    pub call: CallId,
    pub request: SendRequest,
    pub media: Option<Media>,
}

/// Where a send goes.
#[derive(Debug)]
pub enum Choice {
    Local(Arc<str>),
    Remote(RemoteDevice),
}

impl View {
    pub fn set_live(&mut self, nodes: impl IntoIterator<Item = (Arc<str>, Instant)>) {
        self.live = nodes.into_iter().collect();
        let now = Instant::now();
        self.known.retain(|_, until| *until > now);
        for (node, until) in &self.live {
            let known = self.known.entry(node.clone()).or_insert(*until);
            *known = (*known).max(*until);
        }
    }

    /// Until when `node`'s lease runs as far as this process knows, even if the last
    /// read did not list it.
    pub fn lease_known_until(&self, node: &str) -> Option<Instant> {
        self.known.get(node).copied()
    }

    pub fn live(&self) -> impl Iterator<Item = (&Arc<str>, &Instant)> {
        self.live.iter()
    }

    pub fn lease_until(&self, node: &str) -> Option<Instant> {
        self.live.get(node).copied()
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The other processes' active devices of `api_key`, if read lately.
    pub fn remote_devices(&self, api_key: &str, now: Instant) -> Option<Vec<RemoteDevice>> {
        let listing = self.listings.get(api_key)?;
        if listing.read_at + FRESH_FOR <= now {
            return None;
        }
        Some(
            listing
                .devices
                .iter()
                .filter(|d| self.live.contains_key(&d.node_id))
                .cloned()
                .collect(),
        )
    }

    /// The other processes' active devices of `api_key`, if read lately and no read of
    /// it is under way (sends keep their call order behind a read).
    pub fn fresh_devices(&self, api_key: &str, now: Instant) -> Option<Vec<RemoteDevice>> {
        match self.reads.contains_key(api_key) {
            true => None,
            false => self.remote_devices(api_key, now),
        }
    }

    /// Queues a send for its key's listing, read once for all of them; true for the
    /// first, which starts the read.
    pub fn wait_for_read(&mut self, send: WaitingSend) -> bool {
        if let Some(waiting) = self.reads.get_mut(send.request.api_key.as_str()) {
            waiting.push(send);
            return false;
        }
        self.reads
            .insert(send.request.api_key.as_str().into(), vec![send]);
        true
    }

    /// The sends waiting for the read of `api_key`'s listing. None left ends the read,
    /// keeping `devices` as the listing when given.
    pub fn take_waiting(
        &mut self,
        api_key: &str,
        devices: Option<&[RemoteDevice]>,
        now: Instant,
    ) -> Vec<WaitingSend> {
        let Some(waiting) = self.reads.get_mut(api_key) else {
            return Vec::new();
        };
        let taken = std::mem::take(waiting);
        if taken.is_empty() {
            self.reads.remove(api_key);
            if let Some(devices) = devices {
                self.store(api_key, devices.to_vec(), now);
            }
        }
        taken
    }

    pub fn store(&mut self, api_key: &str, devices: Vec<RemoteDevice>, now: Instant) {
        if self.listings.len() > 10_000 {
            self.listings.retain(|_, l| l.read_at + FRESH_FOR > now);
        }
        self.listings.insert(
            api_key.into(),
            Listing {
                devices,
                read_at: now,
            },
        );
    }

    pub fn forget(&mut self, api_key: &str) {
        self.listings.remove(api_key);
    }

    /// Picks among local devices (with their sends in flight) and remote ones (with
    /// this process's sends in flight to them), locals first in a stable order.
    pub fn choose(
        &mut self,
        api_key: &str,
        strategy: Strategy,
        local: Vec<(Arc<Identity>, usize)>,
        remote: Vec<(RemoteDevice, usize)>,
    ) -> Option<Choice> {
        let total = local.len() + remote.len();
        if total == 0 {
            return None;
        }
        let cursor = match self.cursors.get_mut(api_key) {
            Some(cursor) => cursor,
            None => self.cursors.entry(api_key.into()).or_default(),
        };
        let nth = match strategy {
            Strategy::Random => fastrand::usize(..total),
            Strategy::RoundRobin => {
                *cursor = cursor.wrapping_add(1);
                (*cursor - 1) % total
            }
            Strategy::LeastBusy => {
                let loads = local.iter().map(|l| l.1).chain(remote.iter().map(|r| r.1));
                least_busy(loads, cursor, total)
            }
        };
        if nth < local.len() {
            return Some(Choice::Local(local[nth].0.session_id().into()));
        }
        remote
            .into_iter()
            .nth(nth - local.len())
            .map(|(device, _)| Choice::Remote(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(session_id: &str) -> Arc<Identity> {
        Arc::new(Identity::for_test("k", session_id))
    }

    fn remote(node: &str, session_id: &str) -> RemoteDevice {
        RemoteDevice {
            node_id: node.into(),
            identity: identity(session_id),
        }
    }

    #[test]
    fn round_robin_alternates_between_local_and_remote_devices() {
        let mut view = View::default();
        let picks: Vec<String> = (0..4)
            .map(|_| {
                let local = vec![(identity("l"), 0)];
                let remote = vec![(remote("b", "r"), 0)];
                match view.choose("k", Strategy::RoundRobin, local, remote) {
                    Some(Choice::Local(id)) => id.to_string(),
                    Some(Choice::Remote(d)) => d.identity.session_id().to_string(),
                    None => String::new(),
                }
            })
            .collect();
        assert_eq!(picks, ["l", "r", "l", "r"]);
    }

    #[test]
    fn a_listing_of_a_dead_node_or_too_old_is_not_used() {
        let now = Instant::now();
        let mut view = View::default();
        view.set_live([("a".into(), now + FRESH_FOR)]);
        view.store("k", vec![remote("a", "1"), remote("b", "2")], now);
        let devices = view.remote_devices("k", now).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(&*devices[0].node_id, "a");
        assert!(view.remote_devices("k", now + FRESH_FOR).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_missing_from_a_read_is_known_until_its_lease_ends() {
        let now = Instant::now();
        let mut view = View::default();
        view.set_live([("a".into(), now + FRESH_FOR * 3)]);
        // Redis lost it: the next read does not list it.
        view.set_live([("b".into(), now + FRESH_FOR)]);
        assert!(view.lease_until("a").is_none());
        assert_eq!(view.lease_known_until("a"), Some(now + FRESH_FOR * 3));
        tokio::time::advance(FRESH_FOR * 4).await;
        view.set_live([]);
        assert!(view.lease_known_until("a").is_none());
        assert!(view.lease_known_until("b").is_none());
    }

    fn send(api_key: &str, call: CallId) -> WaitingSend {
        let request = SendRequest::new(
            crate::protocol::SendKind::Message,
            api_key.into(),
            "1".into(),
            String::new(),
        );
        WaitingSend {
            call,
            request,
            media: None,
        }
    }

    #[test]
    fn sends_on_a_cold_key_wait_for_one_read_in_call_order() {
        let now = Instant::now();
        let mut view = View::default();
        assert!(view.fresh_devices("k", now).is_none());
        assert!(view.wait_for_read(send("k", 1)));
        assert!(!view.wait_for_read(send("k", 2)));
        let calls = |sends: Vec<WaitingSend>| sends.iter().map(|s| s.call).collect::<Vec<_>>();
        assert_eq!(calls(view.take_waiting("k", Some(&[]), now)), [1, 2]);
        // A send while the first ones are being routed still queues behind them.
        assert!(view.fresh_devices("k", now).is_none());
        assert!(!view.wait_for_read(send("k", 3)));
        assert_eq!(calls(view.take_waiting("k", Some(&[]), now)), [3]);
        assert!(view.take_waiting("k", Some(&[]), now).is_empty());
        assert!(view.fresh_devices("k", now).is_some());
    }

    #[test]
    fn least_busy_prefers_the_idle_remote_device() {
        let mut view = View::default();
        let choice = view.choose(
            "k",
            Strategy::LeastBusy,
            vec![(identity("l"), 3)],
            vec![(remote("b", "r"), 0)],
        );
        assert!(matches!(choice, Some(Choice::Remote(_))));
    }
}
