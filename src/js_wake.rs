//! Waking the JavaScript thread, through a libuv async handle on Node's event loop, to
//! drain whatever was queued for it (`Drain`: this module knows nothing more of it).
//!
//! A threadsafe function would do the same job, but Node signals the loop while holding
//! the function's queue lock: the JavaScript thread wakes at once, blocks on that lock,
//! and must be woken a second time. With one call in flight that extra sleep and wake
//! was a tenth of a call's CPU. Here the sending side signals the handle and nothing
//! else: the JavaScript side takes the batch from its own mutex, which the runtime
//! holds only to push a delivery.

use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex};

use napi::sys;
use wa_gateway_core::lock;

use crate::uv::{self, Handle as UvAsync};

/// The arguments of `deliver` (what they hold is the drain's business); fixed in number
/// so that a wake-up allocates nothing of its own.
pub type Args = [sys::napi_value; 4];

/// What a wake-up hands to JavaScript.
pub trait Drain: Send + Sync {
    /// The arguments of `deliver` for everything queued by now, or `None` to call nothing.
    ///
    /// # Safety
    /// On the JavaScript thread with its live env, inside a handle scope.
    unsafe fn drain(&self, env: sys::napi_env) -> Option<Args>;

    /// Lets go of what the drain keeps in JavaScript between wake-ups: the handle is
    /// closing, and no wake-up follows.
    ///
    /// # Safety
    /// On the JavaScript thread with its live env.
    unsafe fn release(&self, _env: sys::napi_env) {}
}

/// The handle while it is open; `None` once closed, so nothing signals it after.
struct Open(Mutex<Option<HandlePtr>>);

#[derive(Clone, Copy)]
struct HandlePtr(*mut UvAsync);
// SAFETY: the pointer is only signalled (`uv_async_send`, safe from any thread) while
// `Open` holds it, and closed on the JavaScript thread after taking it out of `Open`.
unsafe impl Send for HandlePtr {}

/// The runtime's side: wakes JavaScript. Cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct JsWaker(Arc<Open>);

thread_local! {
    /// While the runtime turns on this thread (the binding's `inline`), the wakers woken,
    /// called when the turn ends instead of signalled through the loop.
    static GATHERED: std::cell::RefCell<Option<Vec<Arc<Open>>>> = const { std::cell::RefCell::new(None) };
    /// The last turn's list, emptied, for the next: a turn allocates none.
    static SPARE: std::cell::Cell<Vec<Arc<Open>>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `turn` with wakes on this thread gathered, then calls what they woke.
///
/// Only the runtime turned by this thread's loop runs in `turn`, and it serves only this
/// thread's gateways: every handle gathered belongs to this loop.
pub fn gathering_wakes(turn: impl FnOnce()) {
    GATHERED.with_borrow_mut(|g| *g = Some(SPARE.take()));
    turn();
    let mut woken = GATHERED.with_borrow_mut(Option::take).unwrap_or_default();
    for open in woken.drain(..) {
        // Looked up again at each call: JavaScript run by the call before may have
        // closed this one (a gateway collected), and a closed handle's side is gone.
        let Some(handle) = *lock(&open.0) else {
            continue;
        };
        // SAFETY: on the JavaScript thread that owns the handle, which is open: its
        // side lives until it closes, and closing happens only on this thread.
        unsafe { on_wake(handle.0) };
    }
    SPARE.set(woken);
}

impl JsWaker {
    pub fn wake(&self) {
        if let Some(handle) = *lock(&self.0 .0) {
            let gathered = GATHERED.with_borrow_mut(|g| match g {
                Some(list) => {
                    if !list.iter().any(|o| Arc::ptr_eq(o, &self.0)) {
                        list.push(self.0.clone());
                    }
                    true
                }
                None => false,
            });
            if gathered {
                return;
            }
            // SAFETY: the handle stays open while `Open` holds it (see `close`).
            unsafe { uv::uv_async_send(handle.0) };
        }
    }

    /// On the runtime, wakes once the tasks that are ready have run, so that what they
    /// queue too rides the same wake-up of the JavaScript thread (which, on a busy
    /// machine, takes a core from the runtime); elsewhere at once.
    pub fn wake_soon(&self) {
        if GATHERED.with_borrow(Option::is_some) {
            // A turn on this thread: its end is soon, and every wake waits for it.
            return self.wake();
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let waker = self.clone();
                drop(runtime.spawn(async move {
                    tokio::task::yield_now().await;
                    waker.wake();
                }));
            }
            Err(_) => self.wake(),
        }
    }
}

/// The JavaScript thread's side, owned by the handle (its data pointer).
struct OnJsThread {
    env: sys::napi_env,
    deliver: sys::napi_ref,
    context: sys::napi_async_context,
    drain: Arc<dyn Drain>,
    open: Arc<Open>,
}

/// Owns the handle on the JavaScript thread: refs and unrefs it, closes it on drop or
/// when Node tears the environment down, whichever comes first.
pub struct JsWakeOwner {
    side: *mut OnJsThread,
    open: Arc<Open>,
    held: std::cell::Cell<bool>,
}

impl JsWakeOwner {
    /// On the JavaScript thread: a handle that calls `deliver` with what `drain` gives
    /// whenever the waker is woken. Until `set_ref(true)` it keeps neither the event loop
    /// nor `deliver` alive: the caller keeps `deliver` as long as it wants its calls.
    pub fn new(
        env: sys::napi_env,
        deliver: sys::napi_value,
        drain: Arc<dyn Drain>,
    ) -> napi::Result<(Self, JsWaker)> {
        // SAFETY: called on the JavaScript thread with its live env; every pointer passed
        // below is valid for the call, and the handle's memory outlives the handle. Each
        // step's failure releases what the steps before it took (`Taken`), so that an
        // error leaves no reference to `deliver` and no handle in the loop: a worker whose
        // loop still holds a handle cannot close it.
        unsafe {
            let mut loop_ = ptr::null_mut();
            check(sys::napi_get_uv_event_loop(env, &mut loop_))?;
            let mut name = ptr::null_mut();
            let label = "wa-gateway deliveries";
            check(sys::napi_create_string_utf8(
                env,
                label.as_ptr().cast(),
                label.len() as isize,
                &mut name,
            ))?;
            let mut taken = Taken {
                env,
                deliver: ptr::null_mut(),
                context: ptr::null_mut(),
            };
            check(sys::napi_create_reference(
                env,
                deliver,
                0,
                &mut taken.deliver,
            ))?;
            check(sys::napi_async_init(
                env,
                ptr::null_mut(),
                name,
                &mut taken.context,
            ))?;

            let Some(handle) = uv::new_handle(uv::ASYNC) else {
                return Err(napi::Error::from_reason("unexpected libuv handle size"));
            };
            if uv::uv_async_init(loop_, handle, on_wake) != 0 {
                uv::free_handle(handle);
                return Err(napi::Error::from_reason("cannot open a libuv async handle"));
            }
            uv::uv_unref(handle);
            let open = Arc::new(Open(Mutex::new(Some(HandlePtr(handle)))));
            // From here `close` releases the reference and the context with the handle.
            let (deliver, context) = taken.hand_over();
            let side = Box::into_raw(Box::new(OnJsThread {
                env,
                deliver,
                context,
                drain,
                open: open.clone(),
            }));
            uv::uv_handle_set_data(handle, side.cast());
            if let Err(e) = check(sys::napi_add_env_cleanup_hook(
                env,
                Some(on_env_teardown),
                side.cast(),
            )) {
                // Not hooked: closed now, freed once libuv has let go of it.
                close(&open, side, false);
                return Err(e);
            }
            Ok((
                Self {
                    side,
                    open: open.clone(),
                    held: Default::default(),
                },
                JsWaker(open),
            ))
        }
    }

    /// Whether the handle keeps Node's event loop alive, and `deliver` with it.
    pub fn set_ref(&self, on: bool) {
        let Some(handle) = *lock(&self.open.0) else {
            return;
        };
        if self.held.replace(on) == on {
            return;
        }
        // SAFETY: on the JavaScript thread (this owner never leaves it), handle open,
        // so `side` is alive.
        unsafe {
            let (env, deliver) = ((*self.side).env, (*self.side).deliver);
            let mut count = 0;
            match on {
                true => {
                    uv::uv_ref(handle.0);
                    sys::napi_reference_ref(env, deliver, &mut count);
                }
                false => {
                    uv::uv_unref(handle.0);
                    sys::napi_reference_unref(env, deliver, &mut count);
                }
            }
        }
    }
}

/// What `JsWakeOwner::new` has taken so far, released if a later step fails.
struct Taken {
    env: sys::napi_env,
    deliver: sys::napi_ref,
    context: sys::napi_async_context,
}

impl Taken {
    /// Now owned by the handle's side (`close` releases them).
    fn hand_over(self) -> (sys::napi_ref, sys::napi_async_context) {
        let this = std::mem::ManuallyDrop::new(self);
        (this.deliver, this.context)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // SAFETY: on the JavaScript thread, during `new`: whichever was made is live.
        unsafe {
            if !self.context.is_null() {
                sys::napi_async_destroy(self.env, self.context);
            }
            if !self.deliver.is_null() {
                sys::napi_delete_reference(self.env, self.deliver);
            }
        }
    }
}

impl Drop for JsWakeOwner {
    fn drop(&mut self) {
        // SAFETY: dropped on the JavaScript thread (napi finalizers run there); `side`
        // lives until the handle closes, which only `close` starts.
        unsafe { close(&self.open, self.side, true) };
    }
}

unsafe extern "C" fn on_env_teardown(side: *mut c_void) {
    let side = side.cast::<OnJsThread>();
    // Still hooked, so still open: `side` is alive.
    close(&(*side).open.clone(), side, false);
}

/// Closes the handle once: later wakes do nothing, and its memory is freed when libuv
/// has finished with it.
unsafe fn close(open: &Open, side: *mut OnJsThread, unhook: bool) {
    let Some(handle) = lock(&open.0).take() else {
        return;
    };
    let env = (*side).env;
    if unhook {
        sys::napi_remove_env_cleanup_hook(env, Some(on_env_teardown), side.cast());
    }
    (*side).drain.release(env);
    sys::napi_delete_reference(env, (*side).deliver);
    sys::napi_async_destroy(env, (*side).context);
    uv::uv_close(handle.0, on_closed);
}

unsafe extern "C" fn on_closed(handle: *mut UvAsync) {
    drop(Box::from_raw(
        uv::uv_handle_get_data(handle).cast::<OnJsThread>(),
    ));
    uv::free_handle(handle);
}

/// On the JavaScript thread, from the event loop: hands what is queued to `deliver`
/// inside a callback scope, so that the promises it settles run their reactions before
/// the loop goes on, as with any I/O callback.
unsafe extern "C" fn on_wake(handle: *mut UvAsync) {
    let side = &*uv::uv_handle_get_data(handle).cast::<OnJsThread>();
    let env = side.env;
    let mut scope = ptr::null_mut();
    if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
        return;
    }
    let mut deliver = ptr::null_mut();
    let mut global = ptr::null_mut();
    // `deliver` is null once collected (held weakly while nothing is pending).
    if sys::napi_get_reference_value(env, side.deliver, &mut deliver) == sys::Status::napi_ok
        && !deliver.is_null()
        && sys::napi_get_global(env, &mut global) == sys::Status::napi_ok
    {
        if let Some(args) = side.drain.drain(env) {
            let mut result = ptr::null_mut();
            let status = sys::napi_make_callback(
                env,
                side.context,
                global,
                deliver,
                args.len(),
                args.as_ptr(),
                &mut result,
            );
            if status == sys::Status::napi_pending_exception {
                // As for any callback from the loop: an uncaught exception.
                let mut error = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut error);
                sys::napi_fatal_exception(env, error);
            }
        }
    }
    sys::napi_close_handle_scope(env, scope);
}

fn check(status: sys::napi_status) -> napi::Result<()> {
    match status {
        sys::Status::napi_ok => Ok(()),
        status => Err(napi::Error::from_reason(format!(
            "cannot set up the delivery wake-up (napi status {status})"
        ))),
    }
}
