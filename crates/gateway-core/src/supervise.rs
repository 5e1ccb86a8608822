//! A panic inside the core never ends the process and never silently stops a task:
//! tasks run under [`catch_panic`], and their owners report what it returns as
//! `SERVER_ERROR` and carry on (a timer loop starts its next round).

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::json;

use crate::error::{ErrorCode, GatewayError};

thread_local! {
    /// Where the last panic on this thread happened, noted by the quiet hook.
    static LAST_PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `future`; a panic inside it comes back as a description instead of unwinding.
/// A plain function, not an `async fn`: the latter would keep `future` twice in its
/// state (the argument, then the combinator), doubling every idle session's task.
pub fn catch_panic<F: Future>(future: F) -> impl Future<Output = Result<F::Output, String>> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .map(|caught| caught.map_err(|payload| describe(payload.as_ref())))
}

/// What a caught panic's payload says, and where it happened.
pub fn describe(payload: &(dyn Any + Send)) -> String {
    let at = LAST_PANIC_AT.with(|last| last.borrow_mut().take());
    let message = panic_message(payload);
    match at {
        Some(at) => format!("{message} (at {at})"),
        None => message,
    }
}

/// Runs `job`; a panic inside it comes back as a description instead of unwinding.
pub fn catch_panic_sync<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(job)).map_err(|payload| describe(payload.as_ref()))
}

/// The error a caught panic is reported as.
pub fn panic_error(task: &str, description: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::ServerError,
        format!("Internal error in the gateway's {task}: {description}; the gateway keeps serving"),
        json!({ "task": task, "panic": description }),
    )
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_string()
    }
}

thread_local! {
    /// Whether this thread is running the gateway's runtime for its host (`quietly`).
    static TURNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `turn`, the host turning the gateway's runtime on its own thread, with panics
/// kept quiet as on the runtime's threads (`install_quiet_hook`).
pub fn quietly<R>(turn: impl FnOnce() -> R) -> R {
    /// Puts the mark back as it was, whether `turn` returns or unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TURNING.set(self.0);
        }
    }
    let _restore = Restore(TURNING.replace(true));
    turn()
}

/// Keeps panics on the gateway's own threads (named `thread_prefix...`), or while a host
/// turns its runtime (`quietly`), off stderr: they are caught and reported to `onError`
/// instead. Panics elsewhere print as before.
pub fn install_quiet_hook(thread_prefix: &'static str) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = TURNING.get()
            || std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with(thread_prefix));
        if ours {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            LAST_PANIC_AT.with(|last| *last.borrow_mut() = at);
        } else {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let caught = catch_panic(async { panic!("boom {}", 42) })
            .await
            .unwrap_err();
        assert!(caught.starts_with("boom 42"), "{caught}");
        let error = panic_error("heartbeat timer", &caught);
        assert_eq!(error.code, ErrorCode::ServerError);
        assert!(error.message.contains("heartbeat timer"));
    }
}
