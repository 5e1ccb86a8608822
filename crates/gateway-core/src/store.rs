//! Durable mode (README "Durable mode"): the records of sends, the sends not yet
//! written and the incoming ids seen, kept in an SQLite file so that a restart takes
//! them up again. One thread owns the file: what the gateway tells it (commands about
//! to leave, sends that wait, deliveries to the host) is queued, and each batch it
//! takes is one transaction; only after its commit do the batch's commands reach
//! their sockets and its deliveries the host. So a command is in the store as leaving
//! before its bytes are written, and an outcome before its promise settles.

mod db;
mod recover;

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::json;

use crate::clock::now_ms;
use crate::config::StoreConfig;
use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::host::{Delivery, Host, Stage, Validation};
use crate::identity::{Identity, RECOVERED_CALL};
use crate::state::incoming::DEDUP_WINDOW_MS;
use crate::state::journal::{Journal, QueuedSend};
use crate::state::link::{lock, SessionLink};
use crate::state::Shared;

pub use db::Contents;
pub use recover::recover;

/// How long the writer sleeps with nothing queued before it looks for record changes
/// that came without an item (an ack, a late result).
const IDLE: Duration = Duration::from_millis(200);
/// How often settled records past their TTL or the capacity are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

enum Item {
    Deliver(Delivery),
    /// Commands of a room queue to mark as leaving, then let go (`SessionLink::cleared`).
    Clear(Arc<SessionLink>, Arc<Identity>, Vec<u128>),
    Queued(QueuedSend),
    Incoming(String, String, u64),
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    /// The writer runs: items go to it; else deliveries pass straight to the host.
    open: bool,
    /// The writer was woken for the items queued since it last took them.
    woken: bool,
}

pub struct Store {
    config: StoreConfig,
    inner: Arc<dyn Host>,
    shared: OnceLock<Weak<Shared>>,
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Store {
    pub fn new(config: StoreConfig, inner: Arc<dyn Host>) -> Arc<Self> {
        Arc::new(Self {
            config,
            inner,
            shared: OnceLock::new(),
            queue: Mutex::default(),
            ready: Condvar::new(),
        })
    }

    pub fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.get()?.upgrade()
    }

    /// Opens the file (`STORE_LOCKED` if another gateway has it) and starts the writer;
    /// returns what the file holds, for `recover`.
    pub fn open(self: &Arc<Self>) -> Result<db::Contents, GatewayError> {
        let shared = self.shared().ok_or_else(|| {
            GatewayError::new(
                crate::error::ErrorCode::ServerError,
                "gateway gone",
                json!({}),
            )
        })?;
        let mut file = db::Db::open(&self.config)?;
        let (ttl, capacity) = (
            shared.config.idempotency_ttl.as_millis() as u64,
            shared.config.max_message_statuses,
        );
        let now = now_ms();
        file.prune(now, ttl, capacity, DEDUP_WINDOW_MS)?;
        let contents = file.contents(now, ttl, DEDUP_WINDOW_MS)?;
        lock(&self.queue).open = true;
        let store = self.clone();
        std::thread::Builder::new()
            .name("wa-gateway-store".into())
            .spawn(move || store.run(file, ttl, capacity))
            .map_err(|e| file_error(&self.config, e))?;
        Ok(contents)
    }

    /// Queues `item` for the writer; gives it back when the store is not open. Without
    /// `wake` it waits for the next item that wakes the writer (or its idle round).
    fn push(&self, item: Item, wake: bool) -> Option<Item> {
        let mut queue = lock(&self.queue);
        if !queue.open {
            return Some(item);
        }
        queue.items.push(item);
        let first = wake && !queue.woken;
        queue.woken |= wake;
        drop(queue);
        if first {
            self.ready.notify_one();
        }
        None
    }

    /// The writer: one transaction per batch of items, then the batch's effects.
    fn run(self: Arc<Self>, mut file: db::Db, ttl: u64, capacity: usize) {
        let mut pruned = std::time::Instant::now();
        let mut failing = false;
        loop {
            let items = {
                let mut queue = lock(&self.queue);
                if queue.items.is_empty() {
                    queue = self
                        .ready
                        .wait_timeout(queue, IDLE)
                        .map(|(q, _)| q)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                queue.woken = false;
                std::mem::take(&mut queue.items)
            };
            let shared = self.shared();
            let mut batch = db::Batch::default();
            // What is only written moves into the batch (no copy); the rest has effects.
            let items: Vec<Item> = items
                .into_iter()
                .filter_map(|item| match item {
                    Item::Queued(send) => {
                        batch.queued.push(send);
                        None
                    }
                    Item::Incoming(key, id, at) => {
                        batch.incoming.push((key, id, at));
                        None
                    }
                    other => Some(other),
                })
                .collect();
            // After taking the items: every change they follow is in.
            if let Some(shared) = &shared {
                let mut registry = lock(&shared.registry);
                for item in &items {
                    if let Item::Clear(_, identity, request_ids) = item {
                        for &request_id in request_ids {
                            registry.statuses.leaving(request_id, identity);
                        }
                    }
                }
                batch.records = registry.statuses.take_changed();
            }
            if !batch.is_empty() {
                match file.write(&batch) {
                    Ok(()) => failing = false,
                    // The file refuses writes (disk full, removed): the host hears of it
                    // once until a write succeeds again; sends go on, without the
                    // guarantee, rather than stop.
                    Err(error) if !failing => {
                        failing = true;
                        self.inner.deliver(Delivery::Error(error));
                    }
                    Err(_) => {}
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                if let Err(error) = file.prune(now_ms(), ttl, capacity, DEDUP_WINDOW_MS) {
                    self.inner.deliver(Delivery::Error(error));
                }
            }
            let stopping = items
                .iter()
                .any(|i| matches!(i, Item::Deliver(Delivery::Stopped)));
            if stopping {
                // Closed before the host hears `Stopped`: a `start()` right after it
                // opens the file again.
                lock(&self.queue).open = false;
                let rest = std::mem::take(&mut lock(&self.queue).items);
                drop(file);
                self.effects(items.into_iter().chain(rest), shared.as_deref());
                return;
            }
            self.effects(items.into_iter(), shared.as_deref());
            if shared.is_none() {
                return;
            }
        }
    }

    /// What a committed batch lets happen: its commands go to their sockets, then its
    /// deliveries reach the host, in order. Commands are let go per session, all of
    /// the batch at once: one write to each socket rather than one per command (a
    /// write per command was half of this thread's time at 64 sends in flight). The
    /// host is woken once for the batch's deliveries.
    fn effects(&self, items: impl Iterator<Item = Item>, shared: Option<&Shared>) {
        let mut cleared: Vec<(Arc<SessionLink>, Vec<u128>)> = Vec::new();
        let mut by_link: HashMap<*const SessionLink, usize> = HashMap::new();
        let mut deliveries = Vec::new();
        for item in items {
            match item {
                Item::Deliver(delivery) => deliveries.push(delivery),
                Item::Clear(link, _, request_ids) => match by_link.entry(Arc::as_ptr(&link)) {
                    Entry::Occupied(at) => cleared[*at.get()].1.extend(request_ids),
                    Entry::Vacant(at) => {
                        at.insert(cleared.len());
                        cleared.push((link, request_ids));
                    }
                },
                Item::Queued(_) | Item::Incoming(..) => {}
            }
        }
        for (link, request_ids) in &cleared {
            let_go(link, request_ids);
        }
        if deliveries.is_empty() {
            return;
        }
        self.inner.hold_deliveries();
        for delivery in deliveries {
            self.deliver_now(delivery, shared);
        }
        self.inner.release_deliveries();
    }

    /// A delivery after its commit: the host's, or for a recovered call (whose caller
    /// is gone, or is the same gateway started again) its event made here.
    fn deliver_now(&self, delivery: Delivery, shared: Option<&Shared>) {
        let call = match &delivery {
            Delivery::Resolved(r) => r.id,
            Delivery::Rejected { call, .. } => *call,
            _ => return self.inner.deliver(delivery),
        };
        if call & RECOVERED_CALL == 0 {
            return self.inner.deliver(delivery);
        }
        let Some(shared) = shared else { return };
        let host_call = call & u64::from(u32::MAX);
        match delivery {
            Delivery::Resolved(r) => {
                if r.stage == Stage::Ack {
                    return;
                }
                let request_id = uuid::Uuid::from_u128(r.request_id).to_string();
                let event = {
                    let registry = lock(&shared.registry);
                    registry.statuses.get(r.request_id).map(|record| {
                        LogEvent::sent_recovered(
                            record.kind,
                            &r.session,
                            record.phone_number(),
                            &request_id,
                            r.message_id.clone(),
                        )
                        .with_metadata(record.metadata())
                    })
                };
                if let Some(event) = event.filter(|_| shared.config.log_events) {
                    self.inner.deliver(Delivery::Log(event));
                }
                if host_call != 0 {
                    let result = json!({
                        "success": true,
                        "requestId": request_id,
                        "messageId": r.message_id,
                        "timestamp": r.timestamp,
                        "deviceInfo": {
                            "sessionId": r.session.session_id(),
                            "extensionVersion": r.session.extension_version(),
                            "browser": r.session.browser(),
                        },
                        "ack": r.ack.as_str(),
                        "recovered": true,
                    });
                    self.inner.deliver(Delivery::Duplicate {
                        call: host_call,
                        result,
                    });
                }
            }
            Delivery::Rejected { error, .. } => {
                let event = {
                    let registry = lock(&shared.registry);
                    let request_id = error.details.get("requestId").and_then(|v| v.as_str());
                    let found = request_id
                        .and_then(|id| uuid::Uuid::try_parse(id).ok())
                        .and_then(|id| registry.statuses.get(id.as_u128()).map(|r| (id, r)));
                    found.map(|(id, record)| {
                        let id = id.to_string();
                        let event = match &record.identity {
                            Some(who) => {
                                LogEvent::send_failed(who, record.recipient(), &id, &error)
                            }
                            None => LogEvent::send_failed_unplaced(
                                record.api_key().unwrap_or(""),
                                record.recipient(),
                                &id,
                                &error,
                            ),
                        };
                        event.with_metadata(record.metadata()).recovered()
                    })
                };
                if let Some(event) = event.filter(|_| shared.config.log_events) {
                    self.inner.deliver(Delivery::Log(event));
                }
                if host_call != 0 {
                    let mut error = error;
                    if error.details.is_object() {
                        error.details["recovered"] = true.into();
                    }
                    self.inner.deliver(Delivery::Rejected {
                        call: host_call,
                        error,
                    });
                }
            }
            _ => {}
        }
    }
}

/// Lets commands whose records are committed as leaving go to their socket.
fn let_go(link: &SessionLink, request_ids: &[u128]) {
    if link.cleared(request_ids) {
        link.write_through();
    }
}

fn file_error(config: &StoreConfig, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        crate::error::ErrorCode::ServerError,
        format!("Cannot use the store {}: {error}", config.path.display()),
        json!({}),
    )
}

impl Host for Store {
    fn deliver(&self, delivery: Delivery) {
        if let Some(Item::Deliver(delivery)) = self.push(Item::Deliver(delivery), true) {
            self.inner.deliver(delivery);
        }
    }

    fn validate(&self, api_key: String) -> Validation {
        self.inner.validate(api_key)
    }
}

impl Journal for Store {
    fn clear(&self, link: Arc<SessionLink>, identity: Arc<Identity>, request_ids: Vec<u128>) {
        // The store closed (the gateway stopped): nothing is kept any more.
        if let Some(Item::Clear(link, _, request_ids)) =
            self.push(Item::Clear(link, identity, request_ids), true)
        {
            let_go(&link, &request_ids);
        }
    }

    fn queued(&self, send: QueuedSend, wake: bool) {
        let _ = self.push(Item::Queued(send), wake);
    }

    fn incoming(&self, api_key: &str, message_id: &str, seen_at: u64) {
        let _ = self.push(
            Item::Incoming(api_key.to_string(), message_id.to_string(), seen_at),
            true,
        );
    }
}
