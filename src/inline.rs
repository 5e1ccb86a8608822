//! The runtime turned from Node's event loop: on the main thread the gateway's runtime
//! has no thread of its own below 4 cores (README, "Architecture"). Node's loop watches
//! the runtime's epoll instance and, whenever it has events, turns the runtime there:
//! an extension's answer is read, settled and handed to JavaScript in one wake-up of one
//! thread, where a runtime thread of its own slept and woke once per batch besides
//! JavaScript (docs/performance.md, "The runtime on the JavaScript thread").
//!
//! Timers: the loop cannot see the runtime's next deadline, so a libuv timer turns it a
//! millisecond after each turn, then at twice the last wait up to `MAX_WAIT_MS` while
//! nothing else does: a deadline is late by at most the time since the last activity,
//! and at most `MAX_WAIT_MS`.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::OnceLock;

use napi::sys;
use tokio::runtime::Runtime;

use crate::js_wake::gathering_wakes;
use crate::uv::{self, Handle};

/// The longest wait between turns while nothing happens.
const MAX_WAIT_MS: u64 = 16;

/// The main thread's runtime, or `None` where it has threads of its own: on other
/// threads, when it is given threads (`wa_gateway_core::runtime_threads_here`: from 4
/// cores, `WA_GATEWAY_THREADS`, `WA_GATEWAY_SCHED=batch`), or where the runtime's epoll
/// instance cannot be found.
pub fn main_thread_runtime(env: sys::napi_env) -> Option<&'static Runtime> {
    static INLINE: OnceLock<Option<&'static Runtime>> = OnceLock::new();
    if !on_main_thread() {
        return None;
    }
    // Only the main thread gets here, so the closure runs on it, once.
    *INLINE.get_or_init(|| {
        if wa_gateway_core::runtime_threads_here() > 0 {
            return None;
        }
        let (rt, fd) = wa_gateway_core::build_inline_runtime().ok()?;
        let rt = Box::into_raw(Box::new(rt));
        // SAFETY: on the main JavaScript thread with its live env; `rt` lives from here
        // on unless `watch` fails.
        if unsafe { watch(env, &*rt, fd) }.is_err() {
            // SAFETY: `watch` closed all it opened before failing (its handles, its
            // driver), so nothing refers to the runtime any more.
            drop(unsafe { Box::from_raw(rt) });
            return None;
        }
        // SAFETY: never freed from here on.
        Some(unsafe { &*rt })
    })
}

#[cfg(target_os = "linux")]
fn on_main_thread() -> bool {
    // SAFETY: neither call takes arguments or fails.
    unsafe { libc::gettid() == libc::getpid() }
}

#[cfg(not(target_os = "linux"))]
fn on_main_thread() -> bool {
    false
}

/// The driver's state, on the main thread only.
struct Driver {
    rt: &'static Runtime,
    poll: *mut Handle,
    timer: *mut Handle,
    /// The timer's current wait, doubled by each turn nothing else caused.
    wait_ms: Cell<u64>,
}

thread_local! {
    static DRIVER: Cell<*const Driver> = const { Cell::new(std::ptr::null()) };
}

/// Opens the poll and timer handles on `env`'s loop and closes them when it tears down.
/// Neither keeps the loop alive: a running gateway does (its wake-up handle).
///
/// # Safety
/// On the JavaScript thread with its live env.
unsafe fn watch(env: sys::napi_env, rt: &'static Runtime, fd: i32) -> Result<(), ()> {
    let mut loop_ = std::ptr::null_mut();
    if sys::napi_get_uv_event_loop(env, &mut loop_) != sys::Status::napi_ok {
        return Err(());
    }
    let poll = uv::new_handle(uv::POLL).ok_or(())?;
    if uv::uv_poll_init(loop_, poll, fd) != 0 {
        uv::free_handle(poll);
        return Err(());
    }
    let timer = match uv::new_handle(uv::TIMER) {
        Some(timer) if uv::uv_timer_init(loop_, timer) == 0 => timer,
        unready => {
            if let Some(timer) = unready {
                uv::free_handle(timer);
            }
            uv::uv_close(poll, uv::free_handle);
            return Err(());
        }
    };
    uv::uv_unref(poll);
    uv::uv_unref(timer);
    let driver = Box::into_raw(Box::new(Driver {
        rt,
        poll,
        timer,
        wait_ms: Cell::new(1),
    }));
    DRIVER.set(driver);
    if uv::uv_poll_start(poll, uv::READABLE, on_ready) != 0
        || uv::uv_timer_start(timer, on_tick, 1, 0) != 0
        || sys::napi_add_env_cleanup_hook(env, Some(on_env_teardown), driver.cast())
            != sys::Status::napi_ok
    {
        on_env_teardown(driver.cast());
        return Err(());
    }
    Ok(())
}

/// Turns the runtime (its I/O and timers, then every task they woke), then hands
/// JavaScript what the turn delivered, in the same wake-up.
fn turn(rt: &'static Runtime) {
    gathering_wakes(|| {
        let turned = wa_gateway_core::quietly(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The first yield lets the runtime take its I/O events and timers, the
                // second runs the tasks they woke.
                rt.block_on(async {
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                })
            }))
        });
        // A task's panic is caught by the runtime; this would be tokio's own, which must
        // not unwind into libuv.
        drop(turned);
    });
}

fn next_tick(driver: &Driver, wait_ms: u64) {
    driver.wait_ms.set(wait_ms);
    // SAFETY: the timer is open while the driver is installed (see `on_env_teardown`).
    unsafe { uv::uv_timer_start(driver.timer, on_tick, wait_ms, 0) };
}

/// The driver, while installed on this thread.
fn driver() -> Option<&'static Driver> {
    // SAFETY: set by `watch` and cleared by `on_env_teardown` before it is freed, both
    // on this thread.
    unsafe { DRIVER.get().as_ref() }
}

unsafe extern "C" fn on_ready(_handle: *mut Handle, _status: i32, _events: i32) {
    turned_then(1);
}

unsafe extern "C" fn on_tick(_handle: *mut Handle) {
    let wait_ms = driver().map_or(MAX_WAIT_MS, |d| d.wait_ms.get());
    turned_then((wait_ms * 2).min(MAX_WAIT_MS));
}

/// A turn, then the timer in `wait_ms`. The driver is looked up again after the turn:
/// the JavaScript it ran may have torn the environment down, and the driver with it.
fn turned_then(wait_ms: u64) {
    if let Some(driver) = driver() {
        turn(driver.rt);
    }
    if let Some(driver) = driver() {
        next_tick(driver, wait_ms);
    }
}

/// Node's environment is going: the handles close with it, and the runtime is no longer
/// turned (its gateways have stopped with their JavaScript).
unsafe extern "C" fn on_env_teardown(driver: *mut c_void) {
    let driver = Box::from_raw(driver.cast::<Driver>());
    DRIVER.set(std::ptr::null());
    uv::uv_close(driver.poll, uv::free_handle);
    uv::uv_close(driver.timer, uv::free_handle);
}
