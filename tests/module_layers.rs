//! The binding's modules depend one way, like the core's (its tests/module_layers.rs):
//! the class over the outbox over what a batch and a key check look like, over the
//! leaves. This test reads `src/` and fails on a dependency that points up a layer, on
//! any cycle between files, and on a wake-up that knows what it wakes for.

#[path = "../crates/gateway-core/tests/support/module_graph.rs"]
mod module_graph;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Lower layers first; a module may use only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    // The libuv calls on Node's event loop.
    &["uv"],
    // Waking the JavaScript thread, a pending exception, JavaScript's shapes, media
    // sources shared by calls in flight.
    &["js_wake", "exception", "types", "media_shares"],
    // A batch's layout, key checks, argument checks, the options' names and defaults,
    // the runtime turned from the main thread's event loop.
    &["deliveries", "validations", "args", "options", "inline"],
    // The two queues for JavaScript and the rule for waking it.
    &["outbox"],
    // The class index.js drives.
    &["gateway"],
    &["lib"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("src/{module}.rs has no layer in tests/module_layers.rs"))
}

/// Each file of `src/` (flat) and the code before its tests.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&root).expect("readable src") {
        let path = entry.expect("entry").path();
        assert!(
            !path.is_dir(),
            "src/ is flat; a nested module needs this test extended"
        );
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_stem()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(&path).expect("readable source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.insert(name, code);
        }
    }
    out
}

/// The modules `code` names through `crate::` (or declares, for lib.rs).
fn dependencies<'a>(code: &str, known: &'a BTreeMap<String, String>) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let after = &code[i + "crate::".len()..];
        let listed: Vec<&str> = match after.strip_prefix('{') {
            Some(list) => list[..list.find('}').unwrap_or(0)]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![after
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")],
        };
        names.extend(listed.into_iter().filter_map(|n| known.get_key_value(n)));
    }
    for line in code.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("mod ")
            .map(|n| n.trim_end_matches(';'))
        {
            names.extend(known.get_key_value(name));
        }
    }
    names.into_iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn binding_modules_depend_downward_and_without_cycles() {
    let known = sources();
    let edges: BTreeMap<&str, BTreeSet<&str>> = known
        .iter()
        .map(|(module, code)| (module.as_str(), dependencies(code, &known)))
        .collect();
    assert!(
        edges["gateway"].contains("args") && edges["lib"].contains("gateway"),
        "the scanner finds dependencies: {edges:?}"
    );

    for (module, targets) in &edges {
        for target in targets {
            assert!(
                layer_of(target) < layer_of(module),
                "src/{module}.rs uses src/{target}.rs, which is not below it"
            );
        }
    }

    // The layers forbid a cycle; this says which, should the layers be edited.
    module_graph::assert_no_cycle(&edges);
}

#[test]
fn the_wake_up_knows_only_something_to_drain() {
    let known = sources();
    // Of the binding, it knows only the libuv calls.
    let js_wake = known["js_wake"].replace("crate::uv", "");
    for name in ["Delivery", "Batch", "Checks", "Validations", "crate::"] {
        assert!(
            !js_wake.contains(name),
            "src/js_wake.rs names {name}: what is drained belongs to the outbox"
        );
    }
    // One wake rule: only the outbox decides when JavaScript is woken.
    for (module, code) in &known {
        if module != "outbox" && module != "js_wake" {
            assert!(
                !code.contains(".wake(") && !code.contains(".wake_soon("),
                "src/{module}.rs wakes JavaScript itself; the outbox owns that rule"
            );
        }
    }
}

#[test]
fn one_lock_helper_the_cores() {
    for (module, code) in &sources() {
        assert!(
            !code.contains("fn lock"),
            "src/{module}.rs defines a lock helper; use wa_gateway_core::lock"
        );
    }
}
