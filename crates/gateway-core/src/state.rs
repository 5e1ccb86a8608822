//! What the gateway's tasks share: the settings, the session registry, the host, the
//! media loader and the counters. Plain data and synchronous methods; the tasks that
//! use it live in `net` and `timers`.

pub mod acks;
pub mod directory;
pub mod idempotency;
pub mod incoming;
pub mod journal;
pub mod link;
pub mod own_keys;
pub mod pacing;
pub mod parking;
pub mod pending_auth;
pub mod queued_sends;
pub mod records;
pub mod registry;
pub mod request_ids;
pub mod requests;
pub mod send_request;
pub mod settle;
pub mod slot_index;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::host::{Delivery, Host};
use crate::identity::CallId;
use crate::media::MediaLoader;
use link::SessionLink;
use pending_auth::PendingAuth;
use registry::Registry;
use send_request::SendRequest;
use settle::Settling;

/// How a call whose `idempotencyKey` was freed by an earlier call is sent anew: the
/// facade's own `send` (media, cluster routing), set by it.
pub type Resend = Box<dyn Fn(CallId, SendRequest) + Send + Sync>;

/// Where the gateway is between `start()` and `stop()`; sends are refused differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Stopped = 0,
    Running = 1,
    Stopping = 2,
}

pub struct Shared {
    pub config: Config,
    pub registry: Mutex<Registry>,
    /// The embedder's host, behind `settling`.
    pub host: Arc<dyn Host>,
    /// Closes the records of calls that have one from the start as they settle.
    pub settling: Arc<Settling>,
    pub resend: OnceLock<Resend>,
    pub media: MediaLoader,
    /// Wakes the deadline task when a request with an earlier deadline arrives.
    pub deadline_changed: Notify,
    /// Open sockets, authenticated or not.
    pub connections: AtomicUsize,
    /// Sessions with commands queued by `send` but not yet woken: `flush()` wakes them
    /// all at once, so that one write carries every command of a JavaScript tick.
    pub corked: Mutex<Vec<Arc<SessionLink>>>,
    /// Incoming message ids seen lately, per API key (5.2).
    pub incoming: Mutex<incoming::SeenIncoming>,
    /// Slots of connections upgraded but not yet authenticated.
    pub pending_auth: Arc<PendingAuth>,
    /// The cluster-wide directory of sessions, in cluster mode (5.3).
    pub directory: OnceLock<Arc<dyn directory::Directory>>,
    /// Durable mode's store (`store`); empty otherwise.
    pub journal: OnceLock<Arc<dyn journal::Journal>>,
    /// Durable mode: calls whose sends `stop()` left waiting in the store, by request
    /// id; a `start()` of the same gateway settles their promises.
    pub kept: Mutex<std::collections::HashMap<u128, CallId>>,
    /// Whether a paced send whose queue wait passes its timeout was reported (once).
    pub warned_queue_wait: AtomicBool,
    /// The request ids of this gateway's sends.
    pub request_ids: request_ids::RequestIds,
    lifecycle: AtomicU8,
}

impl Shared {
    pub fn new(config: Config, host: Arc<dyn Host>) -> Result<Arc<Self>, GatewayError> {
        let media = MediaLoader::new(config.media.clone())?;
        let mut registry = Registry::default();
        registry
            .statuses
            .configure(config.idempotency_ttl, config.max_message_statuses);
        registry.pacing = config.pacing;
        registry.max_queued = config.max_queued_sends;
        registry.max_queued_bytes = config.max_queued_bytes;
        Ok(Arc::new_cyclic(|shared| {
            let settling = Arc::new(Settling::new(host, shared.clone()));
            Self::with(config, registry, media, settling)
        }))
    }

    fn with(
        config: Config,
        registry: Registry,
        media: MediaLoader,
        settling: Arc<Settling>,
    ) -> Self {
        Self {
            registry: Mutex::new(registry),
            host: settling.clone(),
            settling,
            resend: OnceLock::new(),
            media,
            deadline_changed: Notify::new(),
            connections: AtomicUsize::new(0),
            corked: Mutex::default(),
            incoming: Mutex::default(),
            pending_auth: PendingAuth::new(config.max_pending_auth, config.max_pending_auth_per_ip),
            directory: OnceLock::new(),
            journal: OnceLock::new(),
            kept: Mutex::default(),
            warned_queue_wait: AtomicBool::new(false),
            request_ids: request_ids::RequestIds::default(),
            lifecycle: AtomicU8::new(Lifecycle::Stopped as u8),
            config,
        }
    }

    pub fn log(&self, event: impl FnOnce() -> LogEvent) {
        if self.config.log_events {
            self.host.deliver(Delivery::Log(event()));
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Acquire) {
            1 => Lifecycle::Running,
            2 => Lifecycle::Stopping,
            _ => Lifecycle::Stopped,
        }
    }

    pub fn set_lifecycle(&self, now: Lifecycle) {
        self.lifecycle.store(now as u8, Ordering::Release);
    }

    /// `stop()` has finished, unless `start()` came first and the gateway runs again.
    pub fn stopped(&self) {
        let _ = self.lifecycle.compare_exchange(
            Lifecycle::Stopping as u8,
            Lifecycle::Stopped as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub fn report(&self, error: GatewayError) {
        self.host.deliver(Delivery::Error(error));
    }

    /// A line for the host's logger at `level` ('debug', 'info', 'warn', 'error').
    pub fn notice(&self, level: &str, message: &str, fields: serde_json::Value) {
        let notice = serde_json::json!({ "level": level, "message": message, "fields": fields });
        self.host.deliver(Delivery::Notice(notice));
    }

    /// Sends the commands queued with `Wake::Later`: written through where the
    /// session's task is idle, else by the task, woken.
    pub fn wake_corked(&self) {
        let corked = std::mem::take(&mut *link::lock(&self.corked));
        for link in corked {
            link.write_through();
        }
    }

    /// A line for the host's debug log; built only when the log is on.
    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.config.debug_log {
            self.host.deliver(Delivery::Debug(line()));
        }
    }
}
