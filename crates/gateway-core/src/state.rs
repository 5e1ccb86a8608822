//! What the gateway's tasks share: the settings, the session registry, the host, the
//! media loader and the counters. Plain data and synchronous methods; the tasks that
//! use it live in `net` and `timers`.

pub mod link;
pub mod pending_auth;
pub mod registry;
pub mod requests;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::host::{Delivery, Host};
use crate::media::MediaLoader;
use link::SessionLink;
use registry::Registry;

pub struct Shared {
    pub config: Config,
    pub registry: Mutex<Registry>,
    pub host: Arc<dyn Host>,
    pub media: MediaLoader,
    /// Wakes the deadline task when a request with an earlier deadline arrives.
    pub deadline_changed: Notify,
    /// Open sockets, authenticated or not.
    pub connections: AtomicUsize,
    /// Sessions with commands queued by `send` but not yet woken: `flush()` wakes them
    /// all at once, so that one write carries every command of a JavaScript tick.
    pub corked: Mutex<Vec<Arc<SessionLink>>>,
}

impl Shared {
    pub fn new(config: Config, host: Arc<dyn Host>) -> Result<Self, GatewayError> {
        let media = MediaLoader::new(config.media.clone())?;
        Ok(Self {
            config,
            registry: Mutex::default(),
            host,
            media,
            deadline_changed: Notify::new(),
            connections: AtomicUsize::new(0),
            corked: Mutex::default(),
        })
    }

    pub fn log(&self, event: impl FnOnce() -> LogEvent) {
        if self.config.log_events {
            self.host.deliver(Delivery::Log(event()));
        }
    }

    pub fn report(&self, error: GatewayError) {
        self.host.deliver(Delivery::Error(error));
    }

    /// A line for the host's debug log; built only when the log is on.
    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.config.debug_log {
            self.host.deliver(Delivery::Debug(line()));
        }
    }
}
