//! Gives the memory a burst of connections freed back to the operating system once the
//! burst settles. Each handshake and auth briefly holds several kilobytes (its task,
//! request head, frames); after thousands at once, glibc keeps the freed pages
//! scattered between the sessions that stayed, and the process's resident size with
//! them. `malloc_trim` returns whole free pages from every arena, Node's included.
//!
//! Once per burst (at least `BURST` sessions admitted or ended, then `QUIET` with
//! none), on a blocking thread: a few milliseconds for a heap of a hundred megabytes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Sessions admitted or ended since the last trim that make a burst worth trimming.
const BURST: usize = 1000;
/// How long without any that counts as settled.
const QUIET: Duration = Duration::from_millis(100);

static CHANGES: AtomicUsize = AtomicUsize::new(0);
static WATCHING: AtomicBool = AtomicBool::new(false);

/// A session was admitted or ended; call from inside the gateway's runtime.
pub fn session_changed() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    if CHANGES.fetch_add(1, Ordering::Relaxed) + 1 < BURST {
        return;
    }
    if WATCHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        WATCHING.store(false, Ordering::Release);
        return;
    };
    runtime.spawn(async {
        // Lets another burst start watching if this runtime stops meanwhile.
        let _watching = Watching;
        loop {
            let seen = CHANGES.load(Ordering::Relaxed);
            tokio::time::sleep(QUIET).await;
            if CHANGES.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        CHANGES.store(0, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(release_free_pages).await;
    });
}

struct Watching;

impl Drop for Watching {
    fn drop(&mut self) {
        WATCHING.store(false, Ordering::Release);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_pages() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}
