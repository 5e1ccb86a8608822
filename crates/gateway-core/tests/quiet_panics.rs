//! Panics while a host turns the runtime on its own thread stay off stderr, like those
//! on the runtime's threads; others reach the hook that was there before. In a process
//! of its own: the panic hook is the process's.

use std::sync::atomic::{AtomicUsize, Ordering};

static PRINTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_panic_in_a_hosts_turn_is_quiet_and_others_are_not() {
    std::panic::set_hook(Box::new(|_| {
        PRINTED.fetch_add(1, Ordering::SeqCst);
    }));
    // Building a runtime installs the gateway's hook in front of the one above.
    drop(wa_gateway_core::build_runtime().unwrap());

    let caught = wa_gateway_core::quietly(|| std::panic::catch_unwind(|| panic!("in a turn")));
    assert!(caught.is_err());
    assert_eq!(
        PRINTED.load(Ordering::SeqCst),
        0,
        "a turn's panic reached the old hook"
    );

    assert!(std::panic::catch_unwind(|| panic!("elsewhere")).is_err());
    assert_eq!(
        PRINTED.load(Ordering::SeqCst),
        1,
        "a panic elsewhere is the old hook's"
    );

    // A turn that unwinds is quiet too, and its mark does not outlive it.
    assert!(std::panic::catch_unwind(|| wa_gateway_core::quietly(|| panic!("through"))).is_err());
    assert_eq!(PRINTED.load(Ordering::SeqCst), 1);
    assert!(std::panic::catch_unwind(|| panic!("after")).is_err());
    assert_eq!(PRINTED.load(Ordering::SeqCst), 2);
}
