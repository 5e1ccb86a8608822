//! The cluster's tasks while the gateway runs: a round every `SWEEP` (lease renewal
//! at its own pace, republishing, deadlines), the outbox writer, and the inbox reader.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::redis_io::Written;
use super::relay::Outgoing;
use super::{unavailable, Cluster};
use crate::state::link::lock;
use crate::state::requests::{connection_lost, shutdown_error, timeout_error};
use crate::state::Lifecycle;

/// How often deadlines and lost holders are checked.
const SWEEP: Duration = Duration::from_millis(100);
/// How often every local listing is written again (keeps `lastHeartbeat` fresh).
const REFRESH: Duration = Duration::from_secs(5);
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

impl Cluster {
    /// Runs until `shutdown`, then leaves the cluster.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut outbox) = lock(&self.outbox).take() else {
            return;
        };
        let inbox = tokio::spawn(self.clone().read_inbox(shutdown.clone()));
        let beat = (self.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(SWEEP);
        let mut next_beat = Instant::now();
        let mut next_refresh = Instant::now() + REFRESH;
        let mut next_unpark = Instant::now();
        // The life of the keys listing this process's sessions is extended every half
        // lease (each key lives 3 leases: see `keys`).
        let mut next_keep = Instant::now();
        let mut retry: Vec<(Instant, Outgoing)> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    let now = Instant::now();
                    if now >= next_beat {
                        next_beat = now + beat;
                        let keep = now >= next_keep;
                        if let Some(afresh) = self.beat(keep).await {
                            if keep {
                                next_keep = now + self.lease / 2;
                            }
                            if afresh {
                                next_refresh = now;
                            }
                        }
                    }
                    if now >= next_unpark && self.usable() {
                        next_unpark = now + UNPARK_EVERY;
                        self.unpark_elsewhere().await;
                    }
                    if now >= next_refresh && self.usable() {
                        next_refresh = now + REFRESH;
                        self.republish();
                    }
                    if !retry.is_empty() && self.usable() {
                        retry.retain(|(since, _)| since.elapsed() < RETRY_FOR);
                        let batch = retry.drain(..).map(|(_, o)| o).collect();
                        let again = self.write(batch).await;
                        retry.extend(again.into_iter().map(|o| (now, o)));
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
                    let failed = self.write(batch).await;
                    let now = Instant::now();
                    retry.extend(failed.into_iter().map(|o| (now, o)));
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

    /// Renews the lease (`keep`: and the life of this process's keys); returns
    /// whether Redis had lost it (listings must be written again), or None if Redis
    /// could not be reached.
    async fn beat(&self, keep: bool) -> Option<bool> {
        let sessions = lock(&self.shared.registry).session_count();
        let claimed = timeout(ROUND_TRIP, self.redis.claim(&self.token, sessions, keep)).await;
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

    /// Queues every local session's listing. Queued under the registry's lock: a
    /// session that leaves meanwhile queues its unlisting after its listing, never
    /// before (which would leave a listing of a gone session behind).
    fn republish(&self) {
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        let registry = lock(&self.shared.registry);
        for (api_key, info) in registry.all_sessions() {
            let session_id = info.session_id.clone();
            let listing = super::Listing {
                node_id: self.node_id.to_string(),
                api_key_digest: self.know(&api_key),
                info,
            };
            self.relay.send(Outgoing::List {
                session_id,
                listing: Box::new(listing),
            });
        }
    }

    /// Writes a batch; returns the outcomes to retry. A send that cannot be routed
    /// fails `CLUSTER_UNAVAILABLE` on its caller at once.
    async fn write(self: &Arc<Self>, batch: Vec<Outgoing>) -> Vec<Outgoing> {
        if batch.is_empty() {
            return batch;
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
                // An outcome for a caller that is gone is dropped; one refused, retried. So
                // is a key's record.
                outcome @ (Outgoing::Envelope { call: None, .. } | Outgoing::Record { .. })
                    if fate == Written::Refused =>
                {
                    retry.push(outcome)
                }
                // Listings are written again at the next refresh.
                _ => {}
            }
        }
        if !written {
            self.set_connected(false, None);
        }
        retry
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
                timeout_error(remote.timeout_ms)(&remote.request_id, &remote.device.session_id);
            self.fail_remote(call, &remote, error);
        }
        for (call, remote) in lost {
            let mut error = connection_lost(&remote.request_id, &remote.device.session_id);
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
            let error = shutdown_error(&remote.request_id, &remote.device.session_id);
            self.fail_remote(call, &remote, error);
        }
    }

    /// `stop()` drains: every local session leaves the cluster's registry first, so no
    /// process routes a new send here.
    pub fn unlist_all(&self) {
        let all = lock(&self.shared.registry).all_sessions();
        for (api_key, info) in all {
            self.relay.send(Outgoing::Unlist {
                api_key,
                session_id: info.session_id,
            });
        }
    }
}
