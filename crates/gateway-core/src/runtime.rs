//! The runtime the gateway runs on, built the same way by every embedder.

use std::io;

use tokio::runtime::Runtime;

use crate::supervise::install_quiet_hook;

const THREAD_NAME: &str = "wa-gateway";

/// Half the cores as workers (at most 4), or `WA_GATEWAY_THREADS`: the JavaScript
/// thread needs a core of its own, and on two cores a single worker measured as fast
/// under load and cheaper per call when nearly idle.
pub fn build_runtime() -> io::Result<Runtime> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // Panics on the gateway's threads are caught and reported to onError, not printed.
    QUIET.call_once(|| install_quiet_hook(THREAD_NAME));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let threads = std::env::var("WA_GATEWAY_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or((cores / 2).clamp(1, 4))
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
}
