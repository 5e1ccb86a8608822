//! The calling process's sends that another process carries out: each settles once,
//! by its outcome, its deadline, or its holder going quiet for longer than the lease
//! allows (5.3).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::identity::{CallId, Identity};
use crate::protocol::SendKind;

#[derive(Debug)]
pub struct RemoteCall {
    pub holder: Arc<str>,
    pub request_id: String,
    pub deadline: Instant,
    pub timeout_ms: u64,
    pub device: Arc<Identity>,
    pub kind: SendKind,
    /// Who it is for (`protocol::Recipient`), or a custom command's type.
    pub phone_number: String,
    /// The send's command has reached the holder's inbox.
    pub routed: bool,
}

#[derive(Default)]
pub struct RemoteCalls {
    calls: HashMap<CallId, RemoteCall>,
    /// Until when the lease of each holder of a call in flight ran, as last read.
    seen: HashMap<Arc<str>, Instant>,
}

impl RemoteCalls {
    /// `lease_until`: until when the holder's lease runs, as last read.
    pub fn insert(&mut self, call: CallId, remote: RemoteCall, lease_until: Instant) {
        self.seen
            .entry(remote.holder.clone())
            .or_insert(lease_until);
        self.calls.insert(call, remote);
    }

    pub fn take(&mut self, call: CallId) -> Option<RemoteCall> {
        self.calls.remove(&call)
    }

    pub fn get(&self, call: CallId) -> Option<&RemoteCall> {
        self.calls.get(&call)
    }

    pub fn mark_routed(&mut self, call: CallId) {
        if let Some(remote) = self.calls.get_mut(&call) {
            remote.routed = true;
        }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Sends in flight to one device: the load `'least-busy'` sees of a remote device.
    pub fn load_of(&self, session_id: &str) -> usize {
        self.calls
            .values()
            .filter(|c| c.device.session_id() == session_id)
            .count()
    }

    /// The live nodes as Redis lists them, with until when their leases run.
    pub fn seen_alive<'a>(&mut self, nodes: impl Iterator<Item = (&'a Arc<str>, &'a Instant)>) {
        for (node, until) in nodes {
            if let Some(seen) = self.seen.get_mut(node) {
                *seen = (*seen).max(*until);
            }
        }
    }

    /// Calls past their deadline (plus `grace`, which lets the holder's own timeout,
    /// with its request id, arrive first).
    pub fn expired(&mut self, now: Instant, grace: Duration) -> Vec<(CallId, RemoteCall)> {
        self.drain(|c, _| c.deadline + grace <= now)
    }

    /// Calls whose holder's lease ran out more than `grace` ago.
    pub fn lost(&mut self, now: Instant, grace: Duration) -> Vec<(CallId, RemoteCall)> {
        let seen = std::mem::take(&mut self.seen);
        let lost = self.drain(|c, _| seen.get(&c.holder).is_some_and(|t| *t + grace <= now));
        self.seen = seen;
        self.seen
            .retain(|node, _| self.calls.values().any(|c| &c.holder == node));
        lost
    }

    fn drain(&mut self, due: impl Fn(&RemoteCall, CallId) -> bool) -> Vec<(CallId, RemoteCall)> {
        let ids: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(id, c)| due(c, **id))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.calls.remove(&id).map(|c| (id, c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(holder: &str, deadline: Instant) -> RemoteCall {
        RemoteCall {
            holder: holder.into(),
            request_id: String::new(),
            deadline,
            timeout_ms: 1000,
            device: Arc::new(Identity::for_test("k", "s")),
            kind: SendKind::Message,
            phone_number: "+1".into(),
            routed: true,
        }
    }

    #[test]
    fn a_call_settles_once_whichever_comes_first() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut calls = RemoteCalls::default();
        calls.insert(1, call("a", now + Duration::from_secs(5)), far);
        calls.insert(2, call("b", now + Duration::from_secs(1)), far);
        assert!(calls.take(1).is_some());
        assert!(calls.take(1).is_none());
        let expired = calls.expired(now + Duration::from_secs(2), Duration::ZERO);
        assert_eq!(expired.len(), 1);
        assert!(calls
            .expired(now + Duration::from_secs(9), Duration::ZERO)
            .is_empty());
        assert_eq!(calls.len(), 0);
    }

    #[test]
    fn a_holder_whose_lease_ran_out_loses_its_calls_a_second_later() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let second = Duration::from_secs(1);
        let mut calls = RemoteCalls::default();
        calls.insert(1, call("a", far), now + second);
        calls.insert(2, call("b", far), now + second);
        let b: Arc<str> = "b".into();
        let renewed = now + 3 * second;
        calls.seen_alive(std::iter::once((&b, &renewed)));
        let lost = calls.lost(now + 2 * second, second);
        assert_eq!(lost.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
        assert!(calls.lost(now + 3 * second, second).is_empty());
        assert_eq!(calls.lost(now + 4 * second, second).len(), 1);
    }
}
