//! Shared by both crates' `module_layers.rs` (the binding's includes it by path): the
//! check that a graph of files has no cycle, naming the cycle it finds.

use std::collections::{BTreeMap, BTreeSet};

/// Panics with the first cycle found between the files of `edges` (file -> files it uses).
pub fn assert_no_cycle(edges: &BTreeMap<&str, BTreeSet<&str>>) {
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(start) = path.iter().position(|p| *p == m) {
            panic!(
                "module cycle: {}",
                [&path[start..], &[m]].concat().join(" -> ")
            );
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, edges, &mut Vec::new(), &mut done);
    }
}
