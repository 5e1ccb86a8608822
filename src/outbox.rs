//! What the core hands to JavaScript waits here: deliveries (the core's `Host`) and
//! `validateApiKey` checks, two queues that each wake-up of the JavaScript thread drains
//! together. The rule for waking lives here only: the first item into an empty queue
//! wakes JavaScript, which takes everything queued by the time it runs, so batches grow
//! while it is busy.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use wa_gateway_core::{lock, Delivery, Host, Validation};

use crate::deliveries::Batch;
use crate::exception::clear_exception;
use crate::js_wake::{Args, Drain, JsWaker};
use crate::validations::{Checks, Validations};

/// The two queues, drained by the JavaScript thread (`Drain`).
#[derive(Default)]
pub struct Queued {
    /// Deliveries JavaScript has not taken yet.
    deliveries: Mutex<Vec<Delivery>>,
    /// Key checks JavaScript has not taken yet, and the connections waiting for answers.
    pub checks: Arc<Validations>,
}

/// The core's host inside Node: queues what JavaScript must see and wakes it.
pub struct Outbox {
    queued: Arc<Queued>,
    waker: JsWaker,
    /// The deliveries became non-empty while a thread held deliveries: the wake-up is
    /// owed, made when that thread releases them.
    owed: AtomicBool,
}

thread_local! {
    /// Whether a session task on this thread holds deliveries (`Host::hold_deliveries`).
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

impl Outbox {
    pub fn new(queued: Arc<Queued>, waker: JsWaker) -> Self {
        Self {
            queued,
            waker,
            owed: AtomicBool::new(false),
        }
    }
}

impl Host for Outbox {
    fn deliver(&self, delivery: Delivery) {
        let is_log = matches!(delivery, Delivery::Log(_));
        let mut batch = lock(&self.queued.deliveries);
        batch.push(delivery);
        let first = batch.len() == 1;
        drop(batch);
        // One call per non-empty batch. A thread holding deliveries makes the call when
        // it releases them, before its task yields. An event (nobody waits on it) first
        // in the batch on the runtime calls once the ready tasks have run: in a connect
        // storm one wake-up of the JavaScript thread then carries the events of many
        // sessions instead of one each.
        if first {
            if HOLDING.get() {
                self.owed.store(true, Ordering::Release);
            } else if is_log {
                self.waker.wake_soon();
            } else {
                self.waker.wake();
            }
        }
    }

    fn hold_deliveries(&self) {
        HOLDING.set(true);
    }

    fn release_deliveries(&self) {
        HOLDING.set(false);
        if self.owed.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Queues the check; the first queued wakes JavaScript once the runtime's ready
    /// tasks have run: in a storm they queue their checks too, and one wake-up of the
    /// JavaScript thread carries them all.
    fn validate(&self, api_key: String) -> Validation {
        let (first, answer) = self.queued.checks.ask(api_key);
        if first {
            self.waker.wake_soon();
        }
        Box::pin(answer)
    }
}

impl Drain for Queued {
    /// `deliver(batch, checks)`.
    unsafe fn drain(&self, env: sys::napi_env) -> Option<Args> {
        let batch = Batch::take(&self.deliveries);
        let checks = Checks::take(&self.checks);
        // Each on its own: deliveries that cannot be converted must not cost the key
        // checks, nor the checks the deliveries (`Batch` isolates one delivery from
        // another).
        let items = Batch::to_napi_value(env, batch).unwrap_or_else(|_| empty_array(env));
        let checks = Checks::to_napi_value(env, checks).unwrap_or_else(|_| undefined(env));
        (!items.is_null()).then_some([items, checks])
    }
}

/// An empty array, or null if not even that can be made (the environment is going).
unsafe fn empty_array(env: sys::napi_env) -> sys::napi_value {
    clear_exception(env);
    let mut array = ptr::null_mut();
    sys::napi_create_array(env, &mut array);
    array
}

unsafe fn undefined(env: sys::napi_env) -> sys::napi_value {
    clear_exception(env);
    let mut value = ptr::null_mut();
    sys::napi_get_undefined(env, &mut value);
    value
}
