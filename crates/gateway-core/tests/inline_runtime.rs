//! The inline runtime's epoll instance, in a process of its own: no other test makes a
//! runtime while it looks for the one it built.

#![cfg(target_os = "linux")]

use std::os::fd::RawFd;

fn is_epoll(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
}

#[test]
fn an_inline_runtime_names_its_epoll_instance_and_wakes_it() {
    let (rt, fd) = wa_gateway_core::build_inline_runtime().unwrap();
    assert!(is_epoll(fd));
    // A task spawned from outside makes the instance readable: a loop watching it
    // would turn the runtime.
    let readable = || {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    };
    rt.block_on(tokio::task::yield_now());
    assert!(!readable());
    let done = rt.spawn(async { 7 });
    assert!(readable());
    assert_eq!(rt.block_on(done).unwrap(), 7);
    drop(rt);
    assert!(!is_epoll(fd));
}
