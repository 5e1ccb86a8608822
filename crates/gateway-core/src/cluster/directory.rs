//! The cluster as the session tasks see it (`state::directory::Directory`): sessions
//! listed in Redis as they come, change and go, the limit per key checked there, and
//! incoming message ids seen by any process.

use std::sync::Arc;

use super::relay::Outgoing;
use super::{Cluster, INCOMING_WINDOW};
use crate::identity::Identity;
use crate::state::directory::{Admission, Directory};
use crate::state::records::StoredRecord;
use crate::state::registry::SessionInfo;
use crate::state::Lifecycle;

impl Directory for Arc<Cluster> {
    fn admit(&self, who: &Arc<Identity>, info: SessionInfo, max_per_key: usize) -> Admission {
        let cluster = self.clone();
        let who = who.clone();
        let listing = self.listing(&who, info);
        Box::pin(async move {
            if !cluster.usable() {
                // Counted locally; listed once Redis is back.
                cluster.unsynced(&who);
                return true;
            }
            match cluster.redis.admit(&listing, max_per_key).await {
                Ok(true) => true,
                Ok(false) => {
                    // Not listed by the refusal; a republish meanwhile may have listed
                    // it: checked again (it is gone from the registry by then).
                    cluster.unsynced(&who);
                    false
                }
                // Unreachable mid-way: counted locally, like while it is away.
                Err(_) => {
                    cluster.unsynced(&who);
                    true
                }
            }
        })
    }

    fn update(&self, who: &Arc<Identity>, info: SessionInfo) {
        // A draining process has taken its sessions off the registry.
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        self.relay.send(Outgoing::Listings {
            api_key: who.api_key.clone(),
            digest: self.know(&who.api_key),
            changes: vec![(who.session_id().into(), Some(info))],
        });
    }

    fn first_incoming(&self, api_key: &str, message_id: &str) -> Admission {
        let cluster = self.clone();
        let key = self.redis.keys.seen_incoming(api_key, message_id);
        Box::pin(async move {
            if !cluster.usable() {
                return true;
            }
            cluster
                .redis
                .first_sighting(&key, INCOMING_WINDOW)
                .await
                .unwrap_or(true)
        })
    }

    fn record_changed(&self, api_key: &str, record: StoredRecord, freed: bool) {
        self.publish_record(api_key, record, freed);
    }

    fn late_result(&self, api_key: &str, record: StoredRecord) {
        self.send_late(api_key, record);
    }

    fn remove(&self, who: &Arc<Identity>) {
        self.relay.send(Outgoing::Listings {
            api_key: who.api_key.clone(),
            digest: self.know(&who.api_key),
            changes: vec![(who.session_id().into(), None)],
        });
    }
}
