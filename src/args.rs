//! Arguments of `NativeGateway`'s methods, checked: the class is reachable from
//! JavaScript (`require('…/gateway.node')`), and whatever a caller passes, a value it
//! cannot take is refused with a `TypeError` (code `ERR_INVALID_ARG_TYPE`), never an
//! abort. napi-rs throws a plain `Error` when a conversion fails, and takes anything
//! for a function or an options object: `Arg` turns the first into a `TypeError` and
//! checks the second. On the hot path (`send`'s strings and numbers) it adds no napi
//! call: their conversions check their types themselves.

use napi::bindgen_prelude::{FromNapiValue, Function};
use napi::{sys, Status, ValueType};
use serde_json::Value;

use crate::exception::clear_exception;
use crate::types::{NativeConfig, SendKind, SendOptions, StatusSelector, UpgradeRequest};

/// A method argument of type `T`, checked (see the module's comment).
pub struct Arg<T>(pub T);

/// What an argument's JavaScript value must be, beyond what its conversion checks.
pub trait Expected: FromNapiValue {
    /// Whether its conversion would take a value of any type (so `refuse` is asked).
    const TAKES_ANYTHING: bool = false;
    /// What the value must be, if a value of type `kind` is not that.
    fn refuse(_kind: ValueType) -> Option<&'static str> {
        None
    }
    /// Converts a value whose type is `kind` (when `TAKES_ANYTHING`; else unknown).
    ///
    /// # Safety
    /// As `FromNapiValue::from_napi_value`.
    unsafe fn convert(
        env: sys::napi_env,
        value: sys::napi_value,
        _kind: ValueType,
    ) -> napi::Result<Self> {
        Self::from_napi_value(env, value)
    }
}

impl Expected for u32 {}
impl Expected for i32 {}
impl Expected for bool {}

/// The bytes of a string `value` that fit in `buf`, in one napi call; `None` if it is not
/// a string. Node writes whole characters only (up to 4 bytes each), leaving room for
/// the terminating NUL: a string it cut leaves fewer than 5 bytes of `buf` unwritten.
///
/// # Safety
/// As `FromNapiValue::from_napi_value`.
unsafe fn utf8_into(env: sys::napi_env, value: sys::napi_value, buf: &mut [u8]) -> Option<&[u8]> {
    let mut written = 0;
    let status = sys::napi_get_value_string_utf8(
        env,
        value,
        buf.as_mut_ptr().cast(),
        buf.len(),
        &mut written,
    );
    (status == sys::Status::napi_ok).then(|| &buf[..written.min(buf.len())])
}

/// One napi call for a string that fits a small buffer (API keys, phone numbers, most
/// texts): napi-rs's own conversion asks for the length first, then copies into a
/// zeroed allocation (both showed in the profile of every send).
impl Expected for String {
    unsafe fn convert(
        env: sys::napi_env,
        value: sys::napi_value,
        _kind: ValueType,
    ) -> napi::Result<Self> {
        let mut buf = [0u8; 256];
        let room = buf.len();
        if let Some(bytes) = utf8_into(env, value, &mut buf).filter(|b| b.len() + 5 <= room) {
            if let Ok(text) = std::str::from_utf8(bytes) {
                return Ok(text.to_owned());
            }
        }
        // Not a string (napi-rs says so in its error), or a longer one.
        Self::from_napi_value(env, value)
    }
}
impl Expected for Value {}
/// Read into a small buffer and matched: napi-rs reads a string enum as a `String`
/// (a length, a zeroed allocation, a copy) on every send.
impl Expected for SendKind {
    unsafe fn convert(
        env: sys::napi_env,
        value: sys::napi_value,
        _kind: ValueType,
    ) -> napi::Result<Self> {
        // Longer than any kind's name: a longer string, cut, matches none.
        let mut buf = [0u8; 16];
        match utf8_into(env, value, &mut buf) {
            Some(b"message") => Ok(Self::Message),
            Some(b"image") => Ok(Self::Image),
            Some(b"video") => Ok(Self::Video),
            Some(b"document") => Ok(Self::Document),
            Some(b"command") => Ok(Self::Command),
            // Not a string, or not a kind: napi-rs's conversion says which.
            _ => Self::from_napi_value(env, value),
        }
    }
}

impl Expected for Function<'_, (), ()> {
    const TAKES_ANYTHING: bool = true;
    fn refuse(kind: ValueType) -> Option<&'static str> {
        (kind != ValueType::Function).then_some("a function")
    }
}

macro_rules! objects {
    ($($name:ty),*) => {$(
        impl Expected for $name {
            const TAKES_ANYTHING: bool = true;
            fn refuse(kind: ValueType) -> Option<&'static str> {
                (kind != ValueType::Object).then_some("an object")
            }
        }
    )*};
}
objects!(NativeConfig, UpgradeRequest, SendOptions, StatusSelector);

impl<T: Expected> Expected for Option<T> {
    const TAKES_ANYTHING: bool = T::TAKES_ANYTHING;
    fn refuse(kind: ValueType) -> Option<&'static str> {
        match kind {
            ValueType::Null | ValueType::Undefined => None,
            other => T::refuse(other),
        }
    }
    /// Its type is known already: no second `typeof` (a plain text `send` passes none).
    unsafe fn convert(
        env: sys::napi_env,
        value: sys::napi_value,
        kind: ValueType,
    ) -> napi::Result<Self> {
        match kind {
            _ if !T::TAKES_ANYTHING => Self::from_napi_value(env, value),
            ValueType::Null | ValueType::Undefined => Ok(None),
            _ => T::convert(env, value, kind).map(Some),
        }
    }
}

impl<T: Expected> FromNapiValue for Arg<T> {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let mut kind = ValueType::Unknown;
        if T::TAKES_ANYTHING {
            let mut raw = 0;
            if sys::napi_typeof(env, value, &mut raw) != sys::Status::napi_ok {
                return Err(type_error(env, "an argument could not be read"));
            }
            kind = ValueType::from(raw);
            if let Some(what) = T::refuse(kind) {
                return Err(type_error(env, &format!("expected {what}, got {kind}")));
            }
        }
        T::convert(env, value, kind)
            .map(Arg)
            .map_err(|e| type_error(env, &e.reason))
    }
}

/// Throws a `TypeError` now (in place of any exception a conversion left pending: a
/// getter that threw), and returns the error that tells napi-rs it is thrown already.
pub fn type_error(env: sys::napi_env, message: &str) -> napi::Error {
    let text = match thrown_message(env) {
        Some(thrown) => format!("NativeGateway: {message}: {thrown}"),
        None => format!("NativeGateway: {message}"),
    };
    // Both NUL-free: napi takes C strings. A message with a NUL in it is cut there.
    let code = c"ERR_INVALID_ARG_TYPE";
    let text = std::ffi::CString::new(text).unwrap_or_else(|e| {
        let at = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(at);
        std::ffi::CString::new(bytes).unwrap_or_default()
    });
    // SAFETY: on the JavaScript thread, with its live env (napi calls this from a
    // method's callback); both pointers are valid C strings for the call.
    unsafe { sys::napi_throw_type_error(env, code.as_ptr(), text.as_ptr()) };
    napi::Error::new(Status::PendingException, message.to_string())
}

/// The `message` of an exception a conversion left pending (a getter threw), taken off
/// so that the `TypeError` replaces it; `None` if nothing is pending or it has no
/// string message.
fn thrown_message(env: sys::napi_env) -> Option<String> {
    let mut pending = false;
    let mut error = std::ptr::null_mut();
    // SAFETY: on the JavaScript thread with its live env; out-pointers are valid.
    unsafe {
        if sys::napi_is_exception_pending(env, &mut pending) != sys::Status::napi_ok || !pending {
            return None;
        }
        sys::napi_get_and_clear_last_exception(env, &mut error);
        let mut message = std::ptr::null_mut();
        let read = sys::napi_get_named_property(env, error, c"message".as_ptr(), &mut message);
        // Reading it may run a getter that throws in turn: nothing is left pending.
        clear_exception(env);
        if read != sys::Status::napi_ok {
            return None;
        }
        String::from_napi_value(env, message).ok()
    }
}
