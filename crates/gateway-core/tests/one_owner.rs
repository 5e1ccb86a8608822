//! Helpers with one purpose have one definition: a second copy drifts (two hashers for
//! the gateway's own keys once mixed request ids differently; two lock helpers handled
//! poisoning each its own way).

use std::fs;
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            out.push((path.display().to_string(), text));
        }
    }
}

/// Files of the core and of the binding (`../../src`) whose code matches `needle`.
fn defining(needle: &str) -> Vec<String> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&crate_dir.join("src"), &mut files);
    sources(&crate_dir.join("../../src"), &mut files);
    files
        .into_iter()
        .filter(|(_, code)| code.contains(needle))
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn one_hasher_for_the_gateways_own_keys() {
    let found = defining("Hasher for ");
    assert_eq!(found.len(), 1, "hashers: {found:?} (use state::own_keys)");
    assert!(found[0].ends_with("own_keys.rs"), "{found:?}");
}

#[test]
fn one_lock_helper() {
    let found = defining("fn lock<");
    assert_eq!(
        found.len(),
        1,
        "lock helpers: {found:?} (use state::link::lock)"
    );
}
