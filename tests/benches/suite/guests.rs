//! Python and JavaScript guests (issue 17) beside the Rust one, in one
//! run: a fresh-instance call of the 1 KiB record transform
//! (`plugins/record-mapper-{py,js}`'s `map` against `bench-transform`'s),
//! precompiled load time, and the resident memory each loaded plugin
//! adds. The components are built from source first (componentize-py and
//! componentize-js, from `./dev setup`).

use super::Bench;
use super::stats::{Goal, Row, Samples, human_time, interleave};
use super::transform::CONNECTION;
use bench_transform::record::sample_record;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A guest language under test.
struct Guest {
    language: &'static str,
    plugin: &'static str,
    build: switchyard_build::GuestBuilder,
}

const GUESTS: [Guest; 2] = [
    Guest {
        language: "Python",
        plugin: "record-mapper-py",
        build: switchyard_build::python::build,
    },
    Guest {
        language: "JavaScript",
        plugin: "record-mapper-js",
        build: switchyard_build::javascript::build,
    },
];

fn component(guest: &Guest) -> PathBuf {
    let root = switchyard_tests::workspace_root();
    let out = root.join("target/guests-py");
    std::fs::create_dir_all(&out).unwrap();
    (guest.build)(&root.join("plugins").join(guest.plugin), &out)
        .unwrap_or_else(|e| panic!("building {}: {e}", guest.plugin))
        .1
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Precompiled load time and RSS per plugin of `path`, loading it
/// `copies` times under new names into the cached runtime (the first
/// load compiles and fills the cache).
fn load_and_memory(b: &Bench, path: &Path, tag: &str, copies: usize) -> (Samples, f64, f64) {
    let first = Instant::now();
    let name = format!("{tag}-cold");
    b.tokio.block_on(b.cached.load_plugin(&name, path)).unwrap();
    let cold = first.elapsed().as_secs_f64();
    b.cached.remove_plugin(&name, None);
    let before = rss_kib();
    let mut warm = Samples::default();
    for i in 0..copies {
        let name = format!("{tag}-{i}");
        let start = Instant::now();
        let plugin = b.tokio.block_on(b.cached.load_plugin(&name, path)).unwrap();
        warm.push(start.elapsed());
        assert!(plugin.from_cache());
        // A connection each, as a served plugin has, and one call, so its
        // instance pre and memory image are in use.
        b.cached
            .add_connection(&name, &name, Default::default())
            .unwrap();
        b.tokio
            .block_on(b.cached.call_action(&name, "map", &sample_record(0)))
            .unwrap();
    }
    let per_plugin_mib = (rss_kib().saturating_sub(before)) as f64 / 1024.0 / copies as f64;
    for i in 0..copies {
        b.cached.remove_plugin(&format!("{tag}-{i}"), None);
    }
    (warm, cold, per_plugin_mib)
}

pub fn guests(b: &Bench) -> Vec<Row> {
    let paths: Vec<PathBuf> = GUESTS.iter().map(component).collect();
    let input = sample_record(0);
    let call = |connection: &str| {
        b.tokio
            .block_on(b.runtime.call_action(connection, "map", &input))
            .unwrap()
    };
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
    for (guest, path) in GUESTS.iter().zip(&paths) {
        b.tokio
            .block_on(b.runtime.load_plugin(guest.plugin, path))
            .unwrap();
        b.runtime
            .add_connection(guest.plugin, guest.plugin, Default::default())
            .unwrap();
        // Every build of the mapping must agree before any is timed.
        assert_eq!(
            parse(call(guest.plugin)),
            parse(call(CONNECTION)),
            "{} and Rust disagree",
            guest.language
        );
    }
    let (rounds, chunk) = if b.quick { (10, 20) } else { (40, 25) };
    let mut rust = || {
        black_box(call(CONNECTION));
    };
    let mut python = || {
        black_box(call(GUESTS[0].plugin));
    };
    let mut javascript = || {
        black_box(call(GUESTS[1].plugin));
    };
    let s = interleave(
        &mut [&mut rust, &mut python, &mut javascript],
        20,
        rounds,
        chunk,
    );
    let copies = if b.quick { 3 } else { 8 };
    let rust_path = switchyard_tests::guest("bench-transform");
    let (rs_load, rs_cold, rs_mib) = load_and_memory(b, &rust_path, "rs", copies);
    let mut rows = Vec::new();
    for (i, (guest, path)) in GUESTS.iter().zip(&paths).enumerate() {
        let language = guest.language;
        let figure = format!(
            "{language} guest: fresh-instance call ({} B record transform)",
            input.len()
        );
        rows.push(Row {
            figure: figure.clone(),
            subject: format!(
                "{} `map`, fresh instance: {}",
                guest.plugin,
                s[i + 1].time_text()
            ),
            baseline: format!(
                "Rust bench-transform `map`, fresh instance: {}",
                s[0].time_text()
            ),
            value: s[i + 1].median() * 1e3,
            unit: " ms",
            goal: Goal::AtMost(1.0),
        });
        rows.push(Row {
            figure,
            subject: format!("{language} over Rust, same run"),
            baseline: format!("Rust: {}", human_time(s[0].median())),
            value: s[i + 1].median() / s[0].median(),
            unit: "×",
            goal: Goal::None,
        });
        let size_mib = std::fs::metadata(path).unwrap().len() as f64 / (1 << 20) as f64;
        let (load, cold, mib) = load_and_memory(b, path, guest.plugin, copies);
        rows.push(Row {
            figure: format!("{language} guest: precompiled load ({size_mib:.1} MiB component)"),
            subject: format!(
                "from the compile cache: {} (first load, compiling: {})",
                load.time_text(),
                human_time(cold)
            ),
            baseline: format!(
                "Rust guest from the cache: {} (compiling: {})",
                rs_load.time_text(),
                human_time(rs_cold)
            ),
            value: load.median() * 1e3,
            unit: " ms",
            goal: Goal::AtMost(50.0),
        });
        rows.push(Row {
            figure: format!(
                "{language} guest: RSS per loaded plugin ({copies} loaded, one call each)"
            ),
            subject: format!("{}: {mib:.1} MiB each", guest.plugin),
            baseline: format!("Rust bench-transform: {rs_mib:.1} MiB each"),
            value: mib,
            unit: " MiB",
            goal: Goal::AtMost(40.0),
        });
    }
    rows
}
