//! The host's crates are layers, each using only those below it:
//!
//! ```text
//! switchyard (cli) ─► switchyard-server ─► switchyard-host ─► switchyard-ops
//!   ─► switchyard-cluster (the flows on NATS JetStream) ─► switchyard-flows
//!   ─► switchyard-oauth (tokens) ─► switchyard-runtime (the sandbox)
//!   ─► switchyard-broker
//! ```
//!
//! Cargo already refuses cycles; this test refuses a dependency that points
//! *up* (the sandbox reaching for the flows, say) and keeps the HTTP
//! server's stack out of every layer below the server, read from the
//! manifests through `cargo metadata`, so a change that breaks the layering
//! fails here first.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Bottom to top.
const LAYERS: &[&str] = &[
    "switchyard-broker",
    "switchyard-runtime",
    "switchyard-oauth",
    "switchyard-flows",
    "switchyard-cluster",
    "switchyard-ops",
    "switchyard-host",
    "switchyard-server",
    "switchyard",
];

/// Crates only the server (and above) may pull in.
const SERVER_ONLY: &[&str] = &["axum", "tower-http", "clap"];

/// Each workspace package's name, and the names of its normal and build
/// dependencies as its manifest declares them (`--no-deps`: nothing to
/// resolve or download, so the check runs offline).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(switchyard_tests::workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                // Dev-dependencies (tests, doctests) may reach anywhere.
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Everything `name` depends on, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(next) = todo.pop() {
        // Outside the workspace: a leaf here (its own dependencies are
        // not ours to layer).
        let Some(deps) = graph.get(&next) else {
            continue;
        };
        for dep in deps {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn every_host_crate_depends_only_on_layers_below_it() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (level, name) in LAYERS.iter().enumerate() {
        let reach = closure(&graph, name);
        for above in &LAYERS[level..] {
            if reach.contains(*above) {
                wrong.push(format!("{name} depends on {above}, a layer at or above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn nothing_below_the_server_pulls_in_the_http_server_stack() {
    let graph = graph();
    let server = LAYERS
        .iter()
        .position(|l| *l == "switchyard-server")
        .unwrap();
    let mut wrong = Vec::new();
    for name in &LAYERS[..server] {
        let reach = closure(&graph, name);
        for crate_ in SERVER_ONLY {
            if reach.contains(*crate_) {
                wrong.push(format!("{name} depends on {crate_}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_sandbox_is_embeddable_with_the_broker_alone() {
    let graph = graph();
    let reach = closure(&graph, "switchyard-runtime");
    let ours: Vec<&String> = reach
        .iter()
        .filter(|c| c.starts_with("switchyard"))
        .collect();
    assert_eq!(ours, ["switchyard-broker"], "the sandbox's own crates");
}

#[test]
fn the_token_manager_knows_only_the_broker_and_only_it_speaks_oauth() {
    let graph = graph();
    let reach = closure(&graph, "switchyard-oauth");
    let ours: Vec<&String> = reach
        .iter()
        .filter(|c| c.starts_with("switchyard"))
        .collect();
    assert_eq!(
        ours,
        ["switchyard-broker"],
        "the token manager's own crates"
    );
    for name in [
        "switchyard-broker",
        "switchyard-runtime",
        "switchyard-flows",
    ] {
        assert!(
            !closure(&graph, name).contains("oauth2"),
            "{name} depends on oauth2"
        );
    }
}

#[test]
fn only_the_cluster_backend_speaks_nats() {
    let graph = graph();
    let mut wrong = Vec::new();
    for name in [
        "switchyard-broker",
        "switchyard-runtime",
        "switchyard-flows",
        "switchyard-ops",
    ] {
        if closure(&graph, name).contains("async-nats") {
            wrong.push(format!("{name} depends on async-nats"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(closure(&graph, "switchyard-cluster").contains("async-nats"));
}
