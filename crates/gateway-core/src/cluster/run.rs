//! The cluster's tasks while the gateway runs: a round every `SWEEP` (lease renewal
//! at its own pace, republishing after Redis lost this process's state, deadlines),
//! the outbox writer, and the inbox reader.
//!
//! Idle sessions cost Redis nothing here: a listing is written when its session
//! connects, changes status or leaves (and again only if Redis lost it); liveness is
//! the process's lease, one renewal per round whatever the sessions.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::redis_io::Written;
use super::relay::{ListingChange, Outgoing};
use super::{unavailable, Cluster};
use crate::state::link::lock;
use crate::state::requests::{connection_lost, shutdown_error, timeout_error};
use crate::state::Lifecycle;

/// Outcomes whose caller's inbox was gone, each with the end of the caller's lease as
/// last read (if known).
type Gone = Vec<(Option<Instant>, Outgoing)>;

/// How often deadlines and lost holders are checked.
const SWEEP: Duration = Duration::from_millis(100);
/// The longest between two lease rounds (a third of the lease when shorter): how late
/// a Redis flushed without a broken connection is noticed, and how stale
/// `getHealth()`'s cluster counts get. A broken connection brings the round forward.
const BEAT_MAX: Duration = Duration::from_secs(2);
/// Between lease rounds while Redis cannot be reached (the connection's own backoff
/// spaces the attempts to reconnect).
const BEAT_RETRY: Duration = Duration::from_millis(200);
/// A routed send's own deadline passes on the holder first, which reports it with its
/// request id; the caller waits this much longer before it times the call out itself.
const HOLDER_FIRST: Duration = Duration::from_millis(250);
/// Outcomes that could not be written are retried this long.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// A bound on any one Redis round trip of these tasks.
const ROUND_TRIP: Duration = Duration::from_secs(2);
/// How often sends waiting for a device (`waitForDevice`) look for one on another
/// process.
const UNPARK_EVERY: Duration = Duration::from_millis(200);
/// Status records looked at per round when writing them again to a Redis that lost
/// them: with `SWEEP`, up to 10,000 a second, written in the outbox's pipelines,
/// without one burst holding the registry's lock or the outbox for long.
const RESTORE_PAGE: usize = 1000;

impl Cluster {
    /// Runs until `shutdown`, then leaves the cluster.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut outbox) = lock(&self.outbox).take() else {
            return;
        };
        let inbox = tokio::spawn(self.clone().read_inbox(shutdown.clone()));
        let beat = (self.lease / 3).clamp(Duration::from_millis(100), BEAT_MAX);
        let mut sweep = tokio::time::interval(SWEEP);
        let mut next_beat = Instant::now();
        let mut next_unpark = Instant::now();
        // The life of this process's keys (its listings, its inbox) is extended every
        // half lease (each lives 3 leases: see `keys`).
        let mut next_keep = Instant::now();
        let mut retry: Vec<(Instant, Outgoing)> = Vec::new();
        // Outcomes for an inbox that was gone (Redis may have lost it while its process
        // lives): written again after each lease round for as long as that process may
        // still make it again (`AwaitingInbox`).
        let mut awaiting_inbox = AwaitingInbox::new(self.lease, beat + SWEEP);
        // Writing the status records again after Redis lost them: where the next page
        // starts (`Some(None)`: at the oldest), None when there is nothing to write.
        let mut restoring: Option<Option<u32>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.nudge.notified() => next_beat = Instant::now(),
                _ = sweep.tick() => {
                    let now = Instant::now();
                    if now >= next_beat {
                        let keep = now >= next_keep;
                        match self.beat(keep).await {
                            Some(afresh) => {
                                next_beat = now + beat;
                                if keep {
                                    next_keep = now + self.lease / 2;
                                }
                                if afresh {
                                    self.republish();
                                    self.republish_records();
                                    restoring = Some(None);
                                    awaiting_inbox.redis_lost_state(now);
                                }
                                self.resync();
                                let batch = awaiting_inbox.due(now);
                                if !batch.is_empty() {
                                    let (again, gone) = self.write(batch).await;
                                    retry.extend(again.into_iter().map(|o| (now, o)));
                                    awaiting_inbox.extend(gone);
                                }
                            }
                            None => next_beat = now + BEAT_RETRY.min(beat),
                        }
                    }
                    if now >= next_unpark && self.usable() {
                        next_unpark = now + UNPARK_EVERY;
                        self.unpark_elsewhere().await;
                    }
                    self.publish_statuses();
                    if let Some(from) = restoring.filter(|_| self.usable()) {
                        restoring = self.republish_statuses(from).map(Some);
                    }
                    if !retry.is_empty() && self.usable() {
                        retry.retain(|(since, _)| since.elapsed() < RETRY_FOR);
                        let batch = retry.drain(..).map(|(_, o)| o).collect();
                        let (again, gone) = self.write(batch).await;
                        retry.extend(again.into_iter().map(|o| (now, o)));
                        awaiting_inbox.extend(gone);
                    }
                    self.sweep(now);
                }
                Some(first) = outbox.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < 256 {
                        match outbox.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    let (failed, gone) = self.write(batch).await;
                    let now = Instant::now();
                    retry.extend(failed.into_iter().map(|o| (now, o)));
                    awaiting_inbox.extend(gone);
                }
            }
        }
        // Where the reader stopped: what came after is handled by `leave`.
        let mut inbox = inbox;
        let after = match timeout(ROUND_TRIP, &mut inbox).await {
            Ok(Ok(after)) => Some(after),
            _ => {
                inbox.abort();
                None
            }
        };
        self.leave(&mut outbox, after).await;
        *lock(&self.outbox) = Some(outbox);
    }

    /// Writes the records of this process's calls that changed since the last round to
    /// Redis (`keys::status`), so that any process can read them, even after this one
    /// is gone. While Redis is unreachable the changes wait (each record once, as it is
    /// then): a send settled meanwhile is not left in Redis as it was before.
    fn publish_statuses(&self) {
        if !self.usable() {
            return;
        }
        let changed = lock(&self.shared.registry).statuses.take_changed();
        if changed.is_empty() {
            return;
        }
        let ttl = self.shared.config.idempotency_ttl;
        for (_, record) in changed {
            let text = serde_json::to_string(&record).unwrap_or_default();
            self.relay.send(Outgoing::Status {
                request_id: record.request_id,
                record: text,
                ttl,
            });
        }
    }

    /// Redis lost this process's lease (restarted empty, flushed, or the lease ran
    /// out): the status records it answers for (within their TTL, those it would
    /// answer locally) are written again, a page from `from` on per round with the
    /// TTL each has left, so that any process answers for them again, even once this
    /// one is gone. Returns where the next page starts (None: all written). A record
    /// that changes meanwhile is written again by `publish_statuses`, after this.
    fn republish_statuses(&self, from: Option<u32>) -> Option<u32> {
        let (page, next) = {
            let registry = lock(&self.shared.registry);
            let (kept, next) = registry.statuses.kept_from(from, RESTORE_PAGE);
            let page: Vec<Outgoing> = kept
                .into_iter()
                .map(|(request_id, record, ttl)| {
                    let stored = record.stored(request_id);
                    Outgoing::Status {
                        record: serde_json::to_string(&stored).unwrap_or_default(),
                        request_id: stored.request_id,
                        ttl,
                    }
                })
                .collect();
            (page, next)
        };
        for status in page {
            self.relay.send(status);
        }
        next
    }

    /// Renews the lease (`keep`: and the life of this process's keys); returns
    /// whether Redis had lost it (listings must be written again), or None if Redis
    /// could not be reached.
    async fn beat(&self, keep: bool) -> Option<bool> {
        let sessions = lock(&self.shared.registry).session_count();
        let held = self.held_lease.load(Ordering::Acquire);
        let claimed = timeout(
            ROUND_TRIP,
            self.redis.claim(&self.token, sessions, keep, held),
        )
        .await;
        match claimed {
            Ok(Ok((claim, nodes))) => {
                self.set_connected(true, None);
                if claim == -1 {
                    if !self.duplicate.swap(true, Ordering::AcqRel) {
                        let mut error = self.duplicate_error();
                        error
                            .message
                            .push_str(": this process serves its own devices only");
                        self.shared.report(error);
                    }
                    return Some(false);
                }
                self.held_lease.store(true, Ordering::Release);
                self.seen_nodes(nodes);
                Some(claim == 0 && !self.duplicate.load(Ordering::Acquire))
            }
            Ok(Err(failure)) => {
                self.trouble(&failure);
                self.set_connected(false, Some(&failure));
                None
            }
            Err(_) => {
                let failure = super::Failure {
                    cause: None,
                    detail: "no reply from Redis in time".into(),
                };
                self.set_connected(false, Some(&failure));
                None
            }
        }
    }

    /// Queues every local session's listing, one write per API key (Redis lost this
    /// process's lease, and maybe everything: restarted empty, flushed, or the lease
    /// ran out and the other processes removed what it listed). Queued under the
    /// registry's lock: a session that leaves meanwhile queues its unlisting after its
    /// listing, never before (which would leave a listing of a gone session behind).
    fn republish(&self) {
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        let registry = lock(&self.shared.registry);
        let mut by_key: HashMap<Arc<str>, Vec<ListingChange>> = HashMap::new();
        for (api_key, info) in registry.all_sessions() {
            by_key
                .entry(api_key)
                .or_default()
                .push((info.session_id.clone(), Some(info)));
        }
        for (api_key, changes) in by_key {
            self.relay.send(Outgoing::Listings {
                digest: self.know(&api_key),
                api_key,
                changes,
            });
        }
    }

    /// Writes again the listings that a failed write or an absent Redis left wrong:
    /// the session's as it is now, or its removal if it left.
    fn resync(&self) {
        if !self.usable() || lock(&self.unsynced).is_empty() {
            return;
        }
        let unsynced = std::mem::take(&mut *lock(&self.unsynced));
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        let mut by_key: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
        for (session_id, api_key) in unsynced {
            by_key.entry(api_key).or_default().push(session_id);
        }
        // Under the registry's lock, like `republish`.
        let registry = lock(&self.shared.registry);
        for (api_key, sessions) in by_key {
            let mut now_listed = registry.sessions_of(&api_key);
            let changes = sessions
                .into_iter()
                .map(|session_id| {
                    let at = now_listed.iter().position(|s| s.session_id == session_id);
                    (session_id, at.map(|at| now_listed.swap_remove(at)))
                })
                .collect();
            self.relay.send(Outgoing::Listings {
                digest: self.know(&api_key),
                api_key,
                changes,
            });
        }
    }

    /// Writes a batch; returns the outcomes to retry, and those for an inbox that is
    /// gone (with the end of its process's lease as last read, if known). A send that
    /// cannot be routed fails `CLUSTER_UNAVAILABLE` on its caller at once.
    async fn write(self: &Arc<Self>, batch: Vec<Outgoing>) -> (Vec<Outgoing>, Gone) {
        if batch.is_empty() {
            return (batch, Vec::new());
        }
        let reached = match timeout(ROUND_TRIP, self.redis.write(&batch)).await {
            Ok(Ok(reached)) => Some(reached),
            Ok(Err(failure)) => {
                self.trouble(&failure);
                None
            }
            Err(_) => None,
        };
        let written = reached.is_some();
        let mut reached = reached.unwrap_or_default().into_iter();
        let mut retry = Vec::new();
        let mut gone = Vec::new();
        for item in batch {
            let fate = reached.next().unwrap_or(Written::Refused);
            match item {
                // Its holder's inbox is gone (so is the holder): chosen again, once.
                Outgoing::Envelope {
                    call: Some(call),
                    envelope: super::envelope::Envelope::Send(command),
                    ..
                } if fate == Written::Gone => self.holder_gone(call, *command),
                Outgoing::Envelope {
                    call: Some(call), ..
                } => {
                    if fate == Written::Done {
                        lock(&self.calls).mark_routed(call);
                        continue;
                    }
                    let remote = lock(&self.calls).take(call);
                    if let Some(remote) = remote {
                        let mut error = unavailable(&remote.device.api_key);
                        error.details["sent"] = false.into();
                        error.details["requestId"] = remote.request_id.as_str().into();
                        self.fail_remote(call, &remote, error);
                    }
                }
                // An outcome for a caller whose inbox is gone: kept while the caller
                // may make it again (`AwaitingInbox`), then dropped.
                Outgoing::Envelope {
                    call: None, ref to, ..
                } if fate == Written::Gone => {
                    let until = lock(&self.view).lease_known_until(to);
                    gone.push((until, item));
                }
                // One refused is retried. So is a key's record.
                outcome @ (Outgoing::Envelope { call: None, .. }
                | Outgoing::Record { .. }
                | Outgoing::Restore { .. })
                    if fate == Written::Refused =>
                {
                    retry.push(outcome)
                }
                // Written again once Redis takes them (`resync`).
                Outgoing::Listings {
                    api_key, changes, ..
                } if fate != Written::Done => {
                    let mut unsynced = lock(&self.unsynced);
                    for (session_id, _) in changes {
                        unsynced.insert(session_id, api_key.clone());
                    }
                }
                // A record refused is written again as it is by then, at the next round.
                Outgoing::Status { request_id, .. } if fate == Written::Refused => {
                    if let Ok(id) = uuid::Uuid::try_parse(&request_id) {
                        lock(&self.shared.registry).statuses.changed(id.as_u128());
                    }
                }
                // Listings are written again at the next refresh.
                _ => {}
            }
        }
        if !written {
            self.set_connected(false, None);
        }
        (retry, gone)
    }

    /// Times out routed sends, and fails those whose holder has been unreachable for
    /// longer than the lease plus a second.
    fn sweep(&self, now: Instant) {
        let (expired, lost) = {
            let mut calls = lock(&self.calls);
            let expired = calls.expired(now, HOLDER_FIRST);
            let lost = calls.lost(now, Duration::from_secs(1));
            (expired, lost)
        };
        for (call, remote) in expired {
            let error =
                timeout_error(remote.timeout_ms)(&remote.request_id, remote.device.session_id());
            self.fail_remote(call, &remote, error);
        }
        for (call, remote) in lost {
            let mut error = connection_lost(&remote.request_id, remote.device.session_id());
            error.message = format!(
                "The gateway process holding the device ({}) could not be reached for longer than its lease",
                remote.holder
            );
            error.details["sent"] = remote.routed.into();
            error.details["nodeId"] = (*remote.holder).into();
            self.fail_remote(call, &remote, error);
        }
    }

    /// Reads this process's inbox: sends routed here and outcomes of sends routed away.
    /// Returns, once `shutdown` comes, the id of the last entry it handled.
    async fn read_inbox(self: Arc<Self>, shutdown: CancellationToken) -> String {
        // From the start: entries written before this process read (its own node id
        // restarted) are filtered by their expiry.
        let mut after = "0-0".to_string();
        let mut trimmed_at = Instant::now();
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return after,
                read = self.redis.read_inbox(&after) => read,
            };
            match read {
                Ok(entries) => {
                    let Some((last, _)) = entries.last() else {
                        continue;
                    };
                    after = last.clone();
                    // The outcomes of one read reach the host in one hand-over.
                    self.shared.host.hold_deliveries();
                    // The entry that makes an inbox (see `keys`) carries nothing.
                    for (_, payload) in entries.iter().filter(|(_, p)| !p.is_empty()) {
                        self.on_envelope(payload);
                    }
                    self.shared.host.release_deliveries();
                    // One write per session for everything the read brought.
                    self.shared.wake_corked();
                    if trimmed_at.elapsed() > Duration::from_millis(500) {
                        trimmed_at = Instant::now();
                        let _ = self.redis.trim_inbox(&after).await;
                    }
                }
                Err(failure) => {
                    self.trouble(&failure);
                    // Redis may have restarted (empty): the lease round finds out now.
                    self.nudge.notify_one();
                    let pause = (self.lease / 4).min(Duration::from_millis(500));
                    tokio::select! {
                        _ = shutdown.cancelled() => return after,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Writes what is queued (last unlistings, outcomes), gives up the lease and fails
    /// the sends still out on other processes.
    /// Its inbox goes with the lease, in one step that returns what came after `after`
    /// (the reader's last entry): sends routed here meanwhile go back to their callers,
    /// and a caller writing later finds no inbox (it chooses again).
    async fn leave(
        self: &Arc<Self>,
        outbox: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
        after: Option<String>,
    ) {
        let drain = |outbox: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>| {
            let mut batch = Vec::new();
            while let Ok(item) = outbox.try_recv() {
                batch.push(item);
            }
            batch
        };
        self.publish_statuses();
        let _ = self.write(drain(outbox)).await;
        let released = timeout(
            ROUND_TRIP,
            self.redis.release(&self.token, after.as_deref()),
        )
        .await;
        if let Ok(Ok(rest)) = released {
            self.shared.host.hold_deliveries();
            for (_, payload) in &rest {
                self.on_envelope(payload);
            }
            self.shared.host.release_deliveries();
            self.publish_statuses();
            let _ = self.write(drain(outbox)).await;
        }
        self.connected.store(false, Ordering::Release);
        let calls: Vec<_> = {
            let mut calls = lock(&self.calls);
            calls.expired(
                Instant::now() + Duration::from_secs(86_400 * 365),
                Duration::ZERO,
            )
        };
        for (call, remote) in calls {
            let error = shutdown_error(&remote.request_id, remote.device.session_id());
            self.fail_remote(call, &remote, error);
        }
    }

    /// `stop()` drains: every local session leaves the cluster's registry first, so no
    /// process routes a new send here.
    pub fn unlist_all(&self) {
        self.relay.send(Outgoing::UnlistAll);
    }
}

/// Outcomes whose caller's inbox was gone when written, each with until when it is
/// written again (after each lease round of this process). A caller that left has no
/// lease beyond the one last read, so what is for it goes at the next round. But when
/// Redis lost the cluster's state (restarted empty, flushed), a live caller makes its
/// inbox again only at its own first lease round once Redis is back, however long
/// Redis was away (its lease as last read may have run out meanwhile): what is for a
/// caller then waits a lease from when this process found Redis so (its next round
/// finds out, so every outcome waits for it).
struct AwaitingInbox {
    items: Vec<(Instant, Outgoing)>,
    /// When this process last found that Redis had lost its lease.
    lost_at: Option<Instant>,
    lease: Duration,
    /// Longer than from any moment to this process's next lease round.
    round: Duration,
}

impl AwaitingInbox {
    fn new(lease: Duration, round: Duration) -> Self {
        Self {
            items: Vec::new(),
            lost_at: None,
            lease,
            round,
        }
    }

    fn redis_lost_state(&mut self, now: Instant) {
        self.lost_at = Some(now);
        for (until, _) in &mut self.items {
            *until = (*until).max(now + self.lease);
        }
    }

    fn extend(&mut self, gone: Gone) {
        let now = Instant::now();
        let floor = match self.lost_at {
            Some(at) => (at + self.lease).max(now + self.round),
            None => now + self.round,
        };
        self.items.extend(
            gone.into_iter()
                .map(|(lease_end, item)| (lease_end.map_or(floor, |end| end.max(floor)), item)),
        );
    }

    /// Those to write again now; those whose time is over are dropped.
    fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        self.items.retain(|(until, _)| *until > now);
        self.items.drain(..).map(|(_, item)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);
    const ROUND: Duration = Duration::from_millis(1100);

    #[tokio::test(start_paused = true)]
    async fn an_outcome_for_a_caller_that_left_goes_at_the_next_round() {
        let mut awaiting = AwaitingInbox::new(LEASE, ROUND);
        let lease_end = Instant::now() - Duration::from_millis(10);
        awaiting.extend(vec![
            (Some(lease_end), Outgoing::UnlistAll),
            (None, Outgoing::UnlistAll),
        ]);
        tokio::time::advance(ROUND).await;
        assert!(awaiting.due(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_for_a_live_caller_waits_while_its_lease_as_last_read_runs() {
        let mut awaiting = AwaitingInbox::new(LEASE, ROUND);
        awaiting.extend(vec![(Some(Instant::now() + LEASE), Outgoing::UnlistAll)]);
        tokio::time::advance(ROUND).await;
        let due = awaiting.due(Instant::now());
        assert_eq!(due.len(), 1);
        awaiting.extend(due.into_iter().map(|o| (Some(Instant::now()), o)).collect());
        tokio::time::advance(LEASE).await;
        assert!(awaiting.due(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn when_redis_lost_the_state_an_outcome_waits_a_lease_from_then() {
        let mut awaiting = AwaitingInbox::new(LEASE, ROUND);
        // Written before this process's round found Redis empty: the caller's lease as
        // last read ran out while Redis was away.
        let lease_end = Instant::now() - Duration::from_secs(1);
        awaiting.extend(vec![(Some(lease_end), Outgoing::UnlistAll)]);
        tokio::time::advance(Duration::from_millis(500)).await;
        let found_at = Instant::now();
        awaiting.redis_lost_state(found_at);
        // Rounds keep writing it (gone again: the caller has not made its inbox yet).
        for _ in 0..2 {
            tokio::time::advance(ROUND).await;
            let due = awaiting.due(Instant::now());
            assert_eq!(due.len(), 1);
            awaiting.extend(due.into_iter().map(|o| (Some(lease_end), o)).collect());
        }
        // A lease after Redis was found empty, a caller that made no inbox is gone.
        tokio::time::advance(LEASE).await;
        assert!(awaiting.due(Instant::now()).is_empty());
        // One found gone after then waits for the next round only.
        awaiting.extend(vec![(Some(lease_end), Outgoing::UnlistAll)]);
        tokio::time::advance(ROUND).await;
        assert!(awaiting.due(Instant::now()).is_empty());
    }
}
