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
        let listing = self.listing(who, info);
        Box::pin(async move {
            if !cluster.usable() {
                // Counted locally; listed when Redis is back (republish).
                return true;
            }
            // Unreachable mid-way: counted locally, like while it is away.
            cluster
                .redis
                .admit(&listing, max_per_key)
                .await
                .unwrap_or(true)
        })
    }

    fn update(&self, who: &Arc<Identity>, info: SessionInfo) {
        // A draining process has taken its sessions off the registry.
        if self.shared.lifecycle() != Lifecycle::Running {
            return;
        }
        self.relay.send(Outgoing::List {
            session_id: who.session_id.clone(),
            listing: Box::new(self.listing(who, info)),
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
        self.relay.send(Outgoing::Unlist {
            api_key: who.api_key.clone(),
            session_id: who.session_id.clone(),
        });
    }
}
