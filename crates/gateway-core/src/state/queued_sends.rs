//! 5.2 sends that do not leave at once: paced ones (a device's queue) and those
//! waiting for a device (`waitForDevice`), from the call to their departure or their
//! failure (`QUEUE_FULL`, `NO_ACTIVE_DEVICE`, `CONNECTION_LOST` with `sent: false`,
//! `GATEWAY_SHUTDOWN`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::link::lock;
use super::parking::Parked;
use super::registry::{NotPlaced, Pending, SessionKey, Settled, Unavailable};
use super::requests::{
    command_frame, connection_lost, no_device, unsupported_command, SendRequest,
};
use super::Shared;
use crate::config::Strategy;
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::host::Delivery;
use crate::identity::{CallId, Identity, RECOVERED_CALL};
use crate::media::Media;

impl Shared {
    /// Records a paced request on its device: it leaves now if the device is idle,
    /// else waits its turn in the device's queue.
    pub(super) fn place_paced(
        &self,
        key: SessionKey,
        identity: Arc<Identity>,
        request_id: u128,
        pending: Pending,
        frame: crate::protocol::Frame,
    ) {
        let mut registry = lock(&self.registry);
        let placed = registry.place(key, request_id, pending, frame);
        // Checked until it has been found once: a bulk send's first such send says it.
        let late = match placed {
            Ok(_) if !self.warned_queue_wait.load(Ordering::Relaxed) => {
                registry.queue_outlasts_timeout(key, request_id, Instant::now())
            }
            _ => None,
        };
        drop(registry);
        if let Some((wait, timeout_ms)) = late {
            self.warn_queue_wait(wait, timeout_ms);
        }
        match placed {
            Ok(earliest) => {
                if earliest {
                    self.deadline_changed.notify_one();
                }
            }
            Err(NotPlaced::Gone(pending, _)) => {
                let settled = Settled {
                    identity,
                    request_id,
                    pending,
                };
                self.fail(settled, connection_lost);
            }
            Err(NotPlaced::QueueFull(pending, _, queued)) => {
                self.queue_full(identity, request_id, pending, queued)
            }
        }
    }

    /// Tells the host, once, that a paced send will time out in its queue: with pacing,
    /// a timeout must cover the wait behind the sends queued before it.
    fn warn_queue_wait(&self, wait: std::time::Duration, timeout_ms: u64) {
        if self.warned_queue_wait.swap(true, Ordering::Relaxed) {
            return;
        }
        let wait = if wait == std::time::Duration::MAX {
            "longer than can be told".to_string()
        } else {
            format!("at least {} ms", wait.as_millis())
        };
        let message = format!(
            "a paced send waits {wait} in its device's queue, past its timeout of {timeout_ms} ms: it will fail \
             REQUEST_TIMEOUT without being sent. With pacing, give sends a `timeout` that covers the queue \
             (the call's `timeout` option, or requestTimeout)"
        );
        self.host.deliver(Delivery::Warning {
            code: "PACED_SEND_TIMEOUT",
            message,
        });
    }

    /// `QUEUE_FULL` for a send whose device has `maxQueuedSends` sends waiting, paced
    /// or for room on its socket (`send-failed` fires: a device was chosen).
    pub(super) fn queue_full(
        &self,
        identity: Arc<Identity>,
        request_id: u128,
        pending: Pending,
        queued: usize,
    ) {
        let id_text = Uuid::from_u128(request_id).to_string();
        let error = GatewayError::new(
            ErrorCode::QueueFull,
            format!(
                "The device's queue is full ({queued} sends waiting to be written; see maxQueuedSends)"
            ),
            json!({ "requestId": &id_text, "sessionId": identity.session_id(), "queued": queued, "sent": false }),
        );
        let settled = Settled {
            identity,
            request_id,
            pending,
        };
        self.fail_with(settled, id_text, error);
    }

    /// Keeps a send that found no active device until one comes, for up to its
    /// `waitForDevice` from the call (or its timeout, if shorter).
    pub(super) fn park(
        &self,
        call: CallId,
        request: SendRequest,
        media: Option<Media>,
        strategy: Strategy,
    ) {
        let request_id = request
            .request_id
            .map_or_else(|| self.request_ids.next(), Uuid::from_u128);
        // Taken up from the store: it is there already, and was accepted before, so no
        // bound refuses it now.
        let recovered = call & RECOVERED_CALL != 0;
        let queued = match self.journal.get() {
            Some(journal) if !recovered => Some((
                journal,
                self.queued_send(request_id.as_u128(), &request, media.as_ref()),
            )),
            _ => None,
        };
        let mut id_buf = Uuid::encode_buffer();
        let id_text: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let frame = command_frame(&request, media, id_text, self.config.dialect);
        let api_key: Arc<str> = request.api_key.as_str().into();
        let target = request.target.clone().filter(|_| request.pinned);
        let pending = self.pending_for(call, request);
        let until = pending.park_until.unwrap_or(pending.deadline);
        let mut registry = lock(&self.registry);
        if !registry.parking_open() {
            drop(registry);
            let error = no_device(&api_key, None);
            return self.host.deliver(Delivery::Rejected { call, error });
        }
        let waiting = registry.parking.count(&api_key);
        if waiting >= self.config.max_queued_sends && !recovered {
            let queued = waiting;
            drop(registry);
            let error = GatewayError::new(
                ErrorCode::QueueFull,
                format!("Too many sends are waiting for a device of this API key ({queued}; see maxQueuedSends)"),
                json!({ "sessionId": null, "queued": queued, "apiKey": mask_api_key(&api_key), "sent": false }),
            );
            return self.host.deliver(Delivery::Rejected { call, error });
        }
        if let Some((journal, send)) = queued {
            journal.queued(send, true);
        }
        registry.parking.park(
            api_key,
            Parked {
                request_id: request_id.as_u128(),
                frame,
                pending,
                strategy,
                until,
                origin: None,
                target,
            },
        );
        // The delivery timer sleeps until its next due time: this one may be earlier,
        // and a device may have become active since the selection above.
        registry.wake_delivery.notify_one();
    }

    /// Durable mode: a send taken up from the store after a restart goes to a device of
    /// its key, or waits for one until its deadline.
    pub fn take_up(&self, call: CallId, request: SendRequest, media: Option<Media>) {
        self.dispatch(call, request, media, super::requests::Wake::Now);
    }

    /// One round of the delivery timer; returns when the next is due.
    pub fn delivery_tick(&self, now: Instant) -> Option<Instant> {
        let mut registry = lock(&self.registry);
        let unparked = registry.unpark();
        let expired = registry.parking.expire(now);
        let reasons: Vec<Unavailable> = expired
            .iter()
            .map(|(api_key, parked)| match parked.target {
                Some(_) => Unavailable::Target,
                None => registry.why_no_device(api_key),
            })
            .collect();
        let next_paced = registry.release_due(now);
        let next = next_paced
            .into_iter()
            .chain(registry.parking.next_deadline())
            .min();
        drop(registry);

        if unparked.earliest {
            self.deadline_changed.notify_one();
        }
        for (identity, request_id, pending, queued) in unparked.queue_full {
            self.queue_full(identity, request_id, pending, queued);
        }
        for (api_key, parked) in unparked.unsupported {
            let command = parked.pending.command().unwrap_or_default();
            let mut error = unsupported_command(&api_key, command, parked.target.as_deref());
            error.details["requestId"] = Uuid::from_u128(parked.request_id).to_string().into();
            self.host.deliver(Delivery::Rejected {
                call: parked.pending.call,
                error,
            });
        }
        for ((api_key, parked), reason) in expired.into_iter().zip(reasons) {
            self.end_wait(&api_key, parked, reason);
        }
        next
    }

    /// A send's wait for a device is up.
    fn end_wait(&self, api_key: &str, parked: Parked<Pending>, why: Unavailable) {
        let Parked {
            request_id,
            pending,
            origin,
            ..
        } = parked;
        match origin {
            // Its device left before the command was written.
            Some(identity) => {
                let settled = Settled {
                    identity,
                    request_id,
                    pending,
                };
                self.fail(settled, connection_lost);
            }
            None => {
                let mut error = no_device(api_key, Some(why));
                error.details["requestId"] = Uuid::from_u128(request_id).to_string().into();
                error.details["sent"] = false.into();
                self.host.deliver(Delivery::Rejected {
                    call: pending.call,
                    error,
                });
            }
        }
    }

    /// `stop()`: sends waiting for a device reject `GATEWAY_SHUTDOWN`.
    pub fn abandon_parked(&self) {
        let parked = lock(&self.registry).parking.take_all();
        for p in parked {
            let error = GatewayError::new(
                ErrorCode::GatewayShutdown,
                "Gateway is shutting down",
                json!({ "requestId": Uuid::from_u128(p.request_id).to_string(), "sent": false }),
            );
            self.host.deliver(Delivery::Rejected {
                call: p.pending.call,
                error,
            });
        }
    }
}
