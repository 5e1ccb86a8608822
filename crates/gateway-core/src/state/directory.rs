//! What the session tasks tell a cluster-wide directory of sessions (README "Cluster mode"), when
//! the gateway runs in cluster mode. The `cluster` module implements it; `net` only
//! sees this trait, so that neither depends on the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::records::StoredRecord;
use super::registry::SessionInfo;
use crate::identity::Identity;

pub type Admission = Pin<Box<dyn Future<Output = bool> + Send>>;

pub trait Directory: Send + Sync + 'static {
    /// Whether a session the local registry has admitted also fits the cluster-wide
    /// `maxSessionsPerKey`; it is listed if so.
    fn admit(&self, who: &Arc<Identity>, info: SessionInfo, max_per_key: usize) -> Admission;
    /// A listed session's status changed.
    fn update(&self, who: &Arc<Identity>, info: SessionInfo);
    /// A session left this process.
    fn remove(&self, who: &Arc<Identity>);
    /// Whether no process has seen this incoming message id of the key lately (an
    /// extension that reconnected may retry on another process); true when unsure.
    fn first_incoming(&self, api_key: &str, message_id: &str) -> Admission;
    /// The record of a call with an `idempotencyKey`, owned by this process, changed
    /// (settled, or later truth); `freed`: the call failed before writing and its key
    /// is free again.
    fn record_changed(&self, _api_key: &str, _record: StoredRecord, _freed: bool) {}
    /// A late result for a send run here for another process, whose record is the
    /// caller's: to the caller.
    fn late_result(&self, _api_key: &str, _record: StoredRecord) {}
}
