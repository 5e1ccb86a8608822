//! A JavaScript exception left pending by a napi call that failed.

/// A failed conversion may leave a JavaScript exception pending; later napi calls would
/// fail with it. On the JavaScript thread only.
pub fn clear_exception(env: napi::sys::napi_env) {
    let mut pending = false;
    // SAFETY: on the JavaScript thread with its live env.
    unsafe {
        if napi::sys::napi_is_exception_pending(env, &mut pending) == napi::sys::Status::napi_ok
            && pending
        {
            let mut error = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env, &mut error);
        }
    }
}
