//! The runtime the gateway runs on, built the same way by every embedder.

use std::io;

use tokio::runtime::Runtime;

use crate::supervise::install_quiet_hook;

const THREAD_NAME: &str = "wa-gateway";

/// How many threads of its own the runtime gets: `WA_GATEWAY_THREADS` if it is a number,
/// else none below 4 cores and half the cores (at most 4) from 4. With none, the host
/// turns the runtime from its own event loop (`build_inline_runtime`) where it can: on
/// two cores a runtime thread of its own competed with JavaScript and the extensions
/// for the second core and cost a thread hand-off per batch; from 4 cores it takes work
/// off the JavaScript thread, which is then the limit (docs/performance.md, "The runtime
/// on the JavaScript thread"). Batch scheduling (`WA_GATEWAY_SCHED=batch`) is for
/// threads, so it asks for at least one.
pub fn runtime_threads(threads_var: Option<&str>, sched_var: Option<&str>, cores: usize) -> usize {
    let asked = threads_var.and_then(|t| t.trim().parse::<usize>().ok());
    let threads = asked.unwrap_or(if cores < 4 { 0 } else { (cores / 2).min(4) });
    match Policy::from_env(sched_var) {
        Policy::Batch => threads.max(1),
        Policy::Normal => threads,
    }
}

/// `runtime_threads` from the environment and the machine.
pub fn runtime_threads_here() -> usize {
    plan_here().0
}

/// The runtime's threads (`runtime_threads`) and their policy, from one reading of the
/// environment.
fn plan_here() -> (usize, Policy) {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let sched = std::env::var("WA_GATEWAY_SCHED").ok();
    let threads = runtime_threads(
        std::env::var("WA_GATEWAY_THREADS").ok().as_deref(),
        sched.as_deref(),
        cores,
    );
    (threads, Policy::from_env(sched.as_deref()))
}

/// The runtime with threads of its own (`runtime_threads_here`, at least one), for
/// hosts that do not turn it themselves.
///
/// The threads run under the usual scheduling policy unless `WA_GATEWAY_SCHED=batch`
/// (`Policy`).
pub fn build_runtime() -> io::Result<Runtime> {
    quiet_panics();
    let (threads, policy) = plan_here();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(THREAD_NAME)
        .on_thread_start(move || policy.apply())
        .enable_all()
        .build()
}

/// Panics on the gateway's threads, or in a host's turn of its runtime
/// (`supervise::quietly`), are caught and reported to onError, not printed.
fn quiet_panics() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| install_quiet_hook(THREAD_NAME));
}

/// A runtime with no worker thread, for a host that drives it from its own event loop
/// (`runtime_threads` none): it runs only inside `block_on`. Returned with the epoll
/// instance its I/O driver waits on, which becomes readable whenever the runtime has
/// events to take (a socket's readiness, a wake-up from another thread), so that the
/// host's loop can watch it and turn the runtime then.
#[cfg(target_os = "linux")]
pub fn build_inline_runtime() -> io::Result<(Runtime, std::os::fd::RawFd)> {
    quiet_panics();
    let before = epoll_fds();
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name(THREAD_NAME)
        // A turn yields twice (the host's), so each of its two rounds runs every ready
        // task rather than the usual 61 before the driver is polled: a backlog of
        // thousands (sessions closing at stop()) is done in one turn, not one per tick.
        .event_interval(100_000)
        .enable_all()
        .build()?;
    // The driver keeps a duplicate of its epoll descriptor (mio's registry). Two
    // descriptors of one instance list the same registrations (the driver's wake-up);
    // another instance made meanwhile by another thread would list its own.
    let made: Vec<_> = epoll_fds()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .map(|fd| (fd, registrations(fd)))
        .collect();
    match made.first() {
        Some((fd, Some(first))) if made.iter().all(|(_, r)| r.as_ref() == Some(first)) => {
            Ok((rt, *fd))
        }
        _ => Err(io::Error::other("cannot find the runtime's epoll instance")),
    }
}

/// The descriptors an epoll instance watches, as /proc lists them.
#[cfg(target_os = "linux")]
fn registrations(fd: std::os::fd::RawFd) -> Option<Vec<String>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let watched: Vec<String> = info
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .map(String::from)
        .collect();
    (!watched.is_empty()).then_some(watched)
}

#[cfg(not(target_os = "linux"))]
pub fn build_inline_runtime() -> io::Result<(Runtime, i32)> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The process's open epoll instances (tokio does not name its own).
#[cfg(target_os = "linux")]
fn epoll_fds() -> Vec<std::os::fd::RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// How the kernel schedules the runtime's threads.
///
/// `Batch` (`WA_GATEWAY_SCHED=batch`; `Normal`, the usual policy, otherwise): a runtime thread woken by data on a socket does not preempt the
/// thread running on that core; it runs when that thread sleeps or its time slice ends,
/// as any thread does. Under load the writer on the other end of a socket (on one
/// machine, an extension's process) then writes a run of frames before the runtime
/// reads them all at once, instead of the runtime taking the core after each frame and
/// going back to sleep. 64 calls in flight on two cores, the Rust fleet answering
/// (docs/performance.md, "64 in flight: the second core"), medians of 3: context
/// switches per call on the runtime 0.106 -> 0.025 with one device and 0.206 -> 0.029
/// with 16; CPU per call 18.0 -> 15.5 us and 27.0 -> 20.1 us; calls/s 55.8k -> 50.5k with
/// one device (each batch now waits for the writer's whole run) and 40.4k -> 52.2k with
/// 16. The price: on a machine whose cores are all busy, a result may wait up to a time
/// slice (under a millisecond on Linux's default) before the runtime reads it; on an
/// idle core it runs at once. One call at a time pays that too: 11.3k -> 9.7k calls/s,
/// which is why batch is for a deployment under sustained load, not the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Batch,
    Normal,
}

impl Policy {
    /// From `WA_GATEWAY_SCHED`: `batch` is the batch policy; anything else, or nothing,
    /// the usual one.
    pub fn from_env(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("batch") => Self::Batch,
            _ => Self::Normal,
        }
    }

    /// Applies the policy to the calling thread. A refusal (a sandbox forbidding the
    /// call) leaves the thread under the usual policy: slower under load, nothing worse.
    fn apply(self) {
        #[cfg(target_os = "linux")]
        if self == Self::Batch {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `0` is the calling thread; `param` is a valid `sched_param` for the
            // duration of the call, and SCHED_BATCH takes priority 0.
            let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_runtime_thread_below_four_cores_unless_asked() {
        assert_eq!(runtime_threads(None, None, 1), 0);
        assert_eq!(runtime_threads(None, None, 2), 0);
        assert_eq!(runtime_threads(None, None, 3), 0);
        assert_eq!(runtime_threads(None, None, 4), 2);
        assert_eq!(runtime_threads(None, None, 16), 4);
        assert_eq!(runtime_threads(None, None, 64), 4);
        assert_eq!(runtime_threads(Some("3"), None, 2), 3);
        assert_eq!(runtime_threads(Some(" 0 "), None, 16), 0);
        assert_eq!(runtime_threads(Some("many"), None, 2), 0);
        assert_eq!(runtime_threads(Some(""), None, 8), 4);
        assert_eq!(runtime_threads(None, Some("batch"), 2), 1);
        assert_eq!(runtime_threads(Some("0"), Some("batch"), 2), 1);
        assert_eq!(runtime_threads(Some("2"), Some("batch"), 2), 2);
    }

    #[test]
    fn normal_unless_told_batch() {
        assert_eq!(Policy::from_env(None), Policy::Normal);
        assert_eq!(Policy::from_env(Some("")), Policy::Normal);
        assert_eq!(Policy::from_env(Some("normal")), Policy::Normal);
        assert_eq!(Policy::from_env(Some("batch")), Policy::Batch);
        assert_eq!(Policy::from_env(Some(" Batch ")), Policy::Batch);
    }

    /// The policy of the thread that runs a task on `rt`.
    #[cfg(target_os = "linux")]
    fn policy_on(rt: &Runtime) -> i32 {
        // SAFETY: `0` is the calling thread.
        rt.block_on(rt.spawn(async { unsafe { libc::sched_getscheduler(0) } }))
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_runtimes_threads_run_under_the_policy() {
        let built = |policy: Policy| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_start(move || policy.apply())
                .build()
                .unwrap()
        };
        assert_eq!(policy_on(&built(Policy::Batch)), libc::SCHED_BATCH);
        assert_eq!(policy_on(&built(Policy::Normal)), libc::SCHED_OTHER);
        // The gateway's own, as the environment of this test leaves it.
        let expected = match Policy::from_env(std::env::var("WA_GATEWAY_SCHED").ok().as_deref()) {
            Policy::Batch => libc::SCHED_BATCH,
            Policy::Normal => libc::SCHED_OTHER,
        };
        assert_eq!(policy_on(&build_runtime().unwrap()), expected);
    }
}
