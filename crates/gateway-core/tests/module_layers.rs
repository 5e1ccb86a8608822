//! The core's modules depend one way: facade -> network and timers -> shared state ->
//! leaves. This test reads the sources and fails on a dependency that points up a
//! layer or on any cycle between files.

mod support {
    pub mod module_graph;
}
use support::module_graph;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Lower layers first; a module may use only modules of its own layer or below.
const LAYERS: &[&[&str]] = &[
    &[
        "clock",
        "config",
        "error",
        "identity",
        "protocol",
        "runtime",
        "media",
        "events",
        "host",
        "metrics",
        "supervise",
    ],
    &["state"],
    &["net", "timers", "cluster", "store"],
    &["gateway", "fuzzing"],
    &[""],
];

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or("");
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module {module} has no layer"))
}

/// `net/session.rs` -> `net::session`; `lib.rs` -> ``.
fn module_name(relative: &Path) -> String {
    let text = relative
        .with_extension("")
        .to_string_lossy()
        .replace('/', "::");
    if text == "lib" {
        String::new()
    } else {
        text
    }
}

fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            // Tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.insert(
                module_name(path.strip_prefix(root).expect("inside src")),
                code,
            );
        }
    }
}

/// The longest known module that `path` (like `state::link::lock`) names.
fn resolve<'a>(path: &str, known: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|candidate| known.get_key_value(&candidate).map(|(k, _)| k.as_str()))
}

fn dependencies(known: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, code) in known {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
            for (i, _) in code.match_indices(prefix) {
                let after = &code[i + prefix.len()..];
                let rest: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let stem = if base.is_empty() {
                    rest.clone()
                } else {
                    format!("{base}::{rest}")
                };
                let stem = stem.trim_end_matches(':');
                // `use crate::net::{connection, listener}` names several modules at once.
                let listed = after[rest.len()..]
                    .strip_prefix('{')
                    .map(|l| &l[..l.find('}').unwrap_or(0)]);
                let names: Vec<String> = match listed {
                    Some(list) => list
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or(""))
                        .map(|n| {
                            [stem, n]
                                .iter()
                                .filter(|p| !p.is_empty())
                                .copied()
                                .collect::<Vec<_>>()
                                .join("::")
                        })
                        .collect(),
                    None => vec![stem.to_string()],
                };
                targets.extend(names.iter().filter_map(|name| resolve(name, known)));
            }
        }
        targets.retain(|t| t != module && !module.starts_with(&format!("{t}::")) || t.is_empty());
        targets.remove("");
        edges.insert(module.as_str(), targets);
    }
    edges
}

#[test]
fn modules_depend_downward_and_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut known = BTreeMap::new();
    sources(&root, &root, &mut known);
    let edges = dependencies(&known);
    assert!(
        edges
            .get("gateway")
            .is_some_and(|d| d.contains("net::listener")),
        "the scanner finds dependencies: {edges:?}"
    );

    for (module, targets) in &edges {
        for target in targets {
            assert!(
                layer_of(target) <= layer_of(module),
                "{module} depends on {target}, a higher layer"
            );
        }
    }

    // The layers forbid a cycle; this says which, should the layers be edited.
    module_graph::assert_no_cycle(&edges);
}
