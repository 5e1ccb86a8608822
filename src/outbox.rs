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

use crate::deliveries::{encode, Reused};
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
    /// The JavaScript thread's: what one wake-up leaves for the next.
    drained: Mutex<Drained>,
}

/// The deliveries taken by the last wake-up (emptied, then swapped with the queue so that
/// it need not grow again), and what their encoding reuses.
#[derive(Default)]
struct Drained {
    deliveries: Vec<Delivery>,
    reused: Reused,
}

/// The most deliveries whose room a wake-up keeps for the next.
const KEPT_DELIVERIES: usize = 4096;

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
    /// `deliver(numbers, text, values, checks)`.
    unsafe fn drain(&self, env: sys::napi_env) -> Option<Args> {
        let mut drained = lock(&self.drained);
        let Drained { deliveries, reused } = &mut *drained;
        std::mem::swap(&mut *lock(&self.deliveries), deliveries);
        let checks = Checks::take(&self.checks);
        // Each on its own: deliveries that cannot be converted must not cost the key
        // checks, nor the checks the deliveries (`encode` isolates one delivery from
        // another).
        let encoded = encode(env, deliveries, reused);
        if deliveries.capacity() > KEPT_DELIVERIES {
            *deliveries = Vec::new();
        }
        let [numbers, text, values] = encoded.unwrap_or_else(|_| {
            let nothing = undefined(env);
            [nothing; 3]
        });
        let checks = Checks::to_napi_value(env, checks).unwrap_or_else(|_| undefined(env));
        (!numbers.is_null()).then_some([numbers, text, values, checks])
    }

    unsafe fn release(&self, env: sys::napi_env) {
        lock(&self.drained).reused.release(env);
    }
}

unsafe fn undefined(env: sys::napi_env) -> sys::napi_value {
    clear_exception(env);
    let mut value = ptr::null_mut();
    sys::napi_get_undefined(env, &mut value);
    value
}
