//! The calling process's sends that another process carries out: each settles once,
//! by its outcome, its deadline, or its holder going quiet for longer than the lease
//! allows (5.3).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::identity::{CallId, Identity};

#[derive(Debug)]
pub struct RemoteCall {
    pub holder: Arc<str>,
    pub deadline: Instant,
    pub timeout_ms: u64,
    pub device: Arc<Identity>,
    pub phone_number: String,
    /// The send's command has reached the holder's inbox.
    pub routed: bool,
}

#[derive(Default)]
pub struct RemoteCalls {
    calls: HashMap<CallId, RemoteCall>,
    /// When each holder of a call in flight was last known to be alive.
    seen: HashMap<Arc<str>, Instant>,
}

impl RemoteCalls {
    pub fn insert(&mut self, call: CallId, remote: RemoteCall, now: Instant) {
        self.seen.entry(remote.holder.clone()).or_insert(now);
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
            .filter(|c| &*c.device.session_id == session_id)
            .count()
    }

    /// The nodes Redis lists as alive right now.
    pub fn seen_alive<'a>(&mut self, nodes: impl Iterator<Item = &'a Arc<str>>, now: Instant) {
        for node in nodes {
            if let Some(seen) = self.seen.get_mut(node) {
                *seen = now;
            }
        }
    }

    /// Calls past their deadline (plus `grace`, which lets the holder's own timeout,
    /// with its request id, arrive first).
    pub fn expired(&mut self, now: Instant, grace: Duration) -> Vec<(CallId, RemoteCall)> {
        self.drain(|c, _| c.deadline + grace <= now)
    }

    /// Calls whose holder has not been seen alive for `limit`.
    pub fn lost(&mut self, now: Instant, limit: Duration) -> Vec<(CallId, RemoteCall)> {
        let seen = std::mem::take(&mut self.seen);
        let lost = self.drain(|c, _| seen.get(&c.holder).is_some_and(|t| *t + limit <= now));
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
    use crate::config::Dialect;
    use serde_json::Value;

    fn call(holder: &str, deadline: Instant) -> RemoteCall {
        RemoteCall {
            holder: holder.into(),
            deadline,
            timeout_ms: 1000,
            device: Arc::new(Identity {
                session_id: "s".into(),
                api_key: "k".into(),
                user_id: Value::Null,
                ip: String::new(),
                extension_version: String::new(),
                browser: String::new(),
                dialect: Dialect::Compat,
            }),
            phone_number: "+1".into(),
            routed: true,
        }
    }

    #[test]
    fn a_call_settles_once_whichever_comes_first() {
        let now = Instant::now();
        let mut calls = RemoteCalls::default();
        calls.insert(1, call("a", now + Duration::from_secs(5)), now);
        calls.insert(2, call("b", now + Duration::from_secs(1)), now);
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
    fn a_holder_not_seen_for_the_limit_loses_its_calls() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut calls = RemoteCalls::default();
        calls.insert(1, call("a", far), now);
        calls.insert(2, call("b", far), now);
        let b: Arc<str> = "b".into();
        calls.seen_alive(std::iter::once(&b), now + Duration::from_secs(2));
        let lost = calls.lost(now + Duration::from_secs(3), Duration::from_secs(3));
        assert_eq!(lost.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
        assert!(calls
            .lost(now + Duration::from_secs(4), Duration::from_secs(3))
            .is_empty());
        assert_eq!(
            calls
                .lost(now + Duration::from_secs(5), Duration::from_secs(3))
                .len(),
            1
        );
    }
}
