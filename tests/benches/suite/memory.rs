//! Memory with 1,000 plugins loaded: the resident set of a host that
//! started from a plugin directory holding 1,000 plugins, against the same
//! host started from an empty directory.
//!
//! Each host is a child process (this bench binary re-run with
//! `--memory-child DIR`) that builds its runtime the way `switchyard serve`
//! does (`Host::from_config`: compile cache, audit, monitoring, a default
//! connection per plugin), then reports `VmRSS` from `/proc/self/status`.
//! A separate process keeps the bench's own heap out of the figure.
//!
//! The 1,000 plugins are copies of the `bench-transform` component under
//! 1,000 names. A first child run fills the compile cache, so the measured
//! start is a restart: every plugin is deserialized from the cache into its
//! own code mapping (wasmtime shares nothing between separately loaded
//! components), as with 1,000 different plugins of this size.

use super::Bench;
use super::stats::{Goal, Row};
use std::path::Path;
use std::process::Command;

const PLUGINS: usize = 1_000;

/// The child side: load every plugin in `dir`/plugins, print
/// `plugins=N rss_kib=K`, exit.
pub fn child(data_dir: &Path) {
    let text = format!(
        "data_dir = {:?}\nwatch_plugin_dir = false\n",
        data_dir.display().to_string()
    );
    let config = switchyard_host::SwitchyardConfig::parse(&text, data_dir).unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = tokio
        .block_on(switchyard_host::Host::from_config(&config))
        .unwrap()
        .runtime;
    let plugins = runtime.plugins().len();
    let connections = runtime.connections().len();
    assert_eq!(plugins, connections, "every plugin has its connection");
    println!("plugins={plugins} rss_kib={}", rss_kib());
    drop(runtime);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Runs a child host on `data_dir`; returns (plugins loaded, RSS in KiB).
fn run_child(data_dir: &Path) -> (usize, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--memory-child")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "memory child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("plugins="))
        .expect("child report");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("plugins=") as usize, field("rss_kib="))
}

pub fn thousand_plugins(_b: &Bench) -> Row {
    let component = switchyard_tests::guest("bench-transform");
    let full = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let dir = full.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(empty.path().join("plugins")).unwrap();
    // One plugin first: compiles once and fills the cache.
    std::fs::copy(&component, dir.join("p0000.wasm")).unwrap();
    assert_eq!(run_child(full.path()).0, 1);
    for i in 1..PLUGINS {
        std::fs::copy(&component, dir.join(format!("p{i:04}.wasm"))).unwrap();
    }
    let (none, base_kib) = run_child(empty.path());
    assert_eq!(none, 0);
    let (loaded, kib) = run_child(full.path());
    assert_eq!(loaded, PLUGINS);
    let mib = |k: u64| k as f64 / 1024.0;
    let per_plugin = (kib.saturating_sub(base_kib)) as f64 / PLUGINS as f64;
    let size = std::fs::metadata(&component).unwrap().len() as f64 / 1024.0;
    Row {
        figure: format!("memory with {PLUGINS} plugins loaded ({size:.0} KiB component each)"),
        subject: format!(
            "host with {PLUGINS} plugins + connections: {:.1} MiB RSS ({per_plugin:.0} KiB per plugin)",
            mib(kib)
        ),
        baseline: format!("same host, no plugins: {:.1} MiB RSS", mib(base_kib)),
        value: mib(kib),
        unit: " MiB",
        goal: Goal::AtMost(1024.0),
    }
}
