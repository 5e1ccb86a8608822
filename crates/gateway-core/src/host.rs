//! What the core needs from whoever embeds it (the Node binding, or a test):
//! somewhere to deliver outcomes and events, and a way to ask if an API key is valid.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use serde_json::Value;

use crate::error::GatewayError;
use crate::events::LogEvent;
use crate::identity::{CallId, Identity};
use crate::protocol::delivery::Ack;

/// The validator's answer, already normalised by the host.
#[derive(Clone, Debug, Default)]
pub struct AuthAnswer {
    pub valid: bool,
    pub user_id: Value,
    pub reason: Option<String>,
}

pub type Validation = Pin<Box<dyn Future<Output = Result<AuthAnswer, String>> + Send>>;

pub trait Host: Send + Sync + 'static {
    /// Called from any thread, never while the core holds a lock; must not block.
    fn deliver(&self, delivery: Delivery);
    /// `Err` carries what went wrong in the validator (a throw, a rejection, a bad answer).
    fn validate(&self, api_key: String) -> Validation;
    /// A session task on this thread starts on frames its socket already holds:
    /// until `release_deliveries` (on the same thread, before the task yields), the
    /// host may wait before waking whoever takes deliveries, so that one wake-up
    /// carries the outcomes of a whole read instead of one each.
    fn hold_deliveries(&self) {}
    /// Ends `hold_deliveries`; anything delivered meanwhile must now be taken.
    fn release_deliveries(&self) {}
}

/// A host in front of another (`state::settle`'s settling, the cluster's host): it sees
/// each delivery first and hands on what it does not take; key checks and holding go
/// straight to the host behind it.
pub trait HostInFront: Send + Sync + 'static {
    fn behind(&self) -> &dyn Host;
    /// What `Host::deliver` does: takes `delivery`, or hands it to `behind()`.
    fn deliver(&self, delivery: Delivery);
}

impl<T: HostInFront> Host for T {
    fn deliver(&self, delivery: Delivery) {
        HostInFront::deliver(self, delivery);
    }

    fn validate(&self, api_key: String) -> Validation {
        self.behind().validate(api_key)
    }

    fn hold_deliveries(&self) {
        self.behind().hold_deliveries();
    }

    fn release_deliveries(&self) {
        self.behind().release_deliveries();
    }
}

/// Everything that flows from the core to the host, in order.
#[derive(Debug)]
pub enum Delivery {
    /// The hot path, one per successful send: plain data that the host turns into
    /// the call's result without serializing it.
    Resolved(Resolved),
    Rejected {
        call: CallId,
        error: GatewayError,
    },
    /// A call settled by an earlier call with its `idempotencyKey`: the success result
    /// as the caller gets it (`duplicate: true`), built from that call's record.
    Duplicate {
        call: CallId,
        result: Value,
    },
    Log(LogEvent),
    Error(GatewayError),
    /// A line for the debug log; only with `Config::debug_log`.
    Debug(String),
    /// Something about how the gateway is used that its operator should hear of (Node:
    /// a process warning), not the failure of a call. `code` names the kind.
    Warning {
        code: &'static str,
        message: String,
    },
    /// `stop()` has finished: sessions closed, port free.
    Stopped,
    /// Something for the host's logger (6.3 `logger`), as `{ level, message, fields }`:
    /// the cluster's Redis connected or lost.
    Notice(Value),
    /// The answer to a query the host made with this token (5.3: cluster-wide queries
    /// and joining the cluster, which need Redis).
    Answer {
        token: u32,
        result: Result<Value, GatewayError>,
    },
}

/// The extension reported success: what the host needs to build the send's result
/// (`{ success, requestId, messageId, timestamp, deviceInfo }`) and its `*-sent` event.
#[derive(Debug)]
pub struct Resolved {
    pub id: CallId,
    pub request_id: u128,
    /// The extension's message id, or null.
    pub message_id: Value,
    /// The extension's timestamp, else when the result arrived (ms since the epoch).
    pub timestamp: f64,
    pub session: Arc<Identity>,
    /// The highest ack known (`sent` on the extension's result).
    pub ack: Ack,
    pub stage: Stage,
}

/// Which part of a send's success this delivery is (5.2 `waitFor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The extension's result: the `*-sent` event fires and the call resolves.
    Result,
    /// The extension's result, but the caller waits for a later ack: only the event.
    ResultAwaitingAck,
    /// The ack the caller waited for: it resolves, no event again.
    Ack,
}

impl Stage {
    pub fn code(self) -> u32 {
        match self {
            Self::Result => 0,
            Self::ResultAwaitingAck => 1,
            Self::Ack => 2,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::ResultAwaitingAck,
            2 => Self::Ack,
            _ => Self::Result,
        }
    }
}
