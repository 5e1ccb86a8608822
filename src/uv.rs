//! The libuv calls the binding makes on Node's event loop (the Node binary exports libuv
//! to addons), and memory for a handle, whose size only libuv knows.

use std::ffi::c_void;

use napi::sys;

/// A libuv handle, opaque.
pub type Handle = c_void;

/// Handle kinds (`uv_handle_type`).
pub const ASYNC: i32 = 1;
pub const POLL: i32 = 8;
pub const TIMER: i32 = 13;
/// `uv_poll_event`: readable.
pub const READABLE: i32 = 1;

extern "C" {
    fn uv_handle_size(kind: i32) -> usize;
    pub fn uv_async_init(
        loop_: *mut sys::uv_loop_s,
        handle: *mut Handle,
        callback: unsafe extern "C" fn(*mut Handle),
    ) -> i32;
    pub fn uv_async_send(handle: *mut Handle) -> i32;
    pub fn uv_poll_init(loop_: *mut sys::uv_loop_s, handle: *mut Handle, fd: i32) -> i32;
    pub fn uv_poll_start(
        handle: *mut Handle,
        events: i32,
        callback: unsafe extern "C" fn(*mut Handle, i32, i32),
    ) -> i32;
    pub fn uv_timer_init(loop_: *mut sys::uv_loop_s, handle: *mut Handle) -> i32;
    pub fn uv_timer_start(
        handle: *mut Handle,
        callback: unsafe extern "C" fn(*mut Handle),
        timeout: u64,
        repeat: u64,
    ) -> i32;
    pub fn uv_close(handle: *mut Handle, callback: unsafe extern "C" fn(*mut Handle));
    pub fn uv_ref(handle: *mut Handle);
    pub fn uv_unref(handle: *mut Handle);
    pub fn uv_handle_set_data(handle: *mut Handle, data: *mut c_void);
    pub fn uv_handle_get_data(handle: *const Handle) -> *mut c_void;
}

/// Room for any handle the binding opens (at most 160 bytes on 64-bit Unix).
const HANDLE_WORDS: usize = 32;

/// Memory for a handle of `kind`, zeroed; `None` if libuv's handle would not fit.
pub fn new_handle(kind: i32) -> Option<*mut Handle> {
    // SAFETY: `uv_handle_size` only reads its argument.
    if unsafe { uv_handle_size(kind) } > HANDLE_WORDS * 8 {
        return None;
    }
    Some(Box::into_raw(Box::new([0u64; HANDLE_WORDS])).cast())
}

/// Frees the memory of a handle.
///
/// # Safety
/// `handle` came from `new_handle` and libuv no longer holds it: never initialised, or
/// closed (this is a `uv_close` callback).
pub unsafe extern "C" fn free_handle(handle: *mut Handle) {
    drop(Box::from_raw(handle.cast::<[u64; HANDLE_WORDS]>()));
}
