//! Switchyard's benchmark suite: every figure of issue 6 that is measured
//! so far, each beside its baseline from the same run, printed as a table
//! and written to `target/bench/results.{json,md}`.
//!
//! Run: `cargo bench -p switchyard-tests --bench suite` (add `-- --quick`
//! for a short, noisier run). See BENCHMARKS.md.
//!
//! The transform under test is `tests/guests/bench-transform`'s `record`
//! module, compiled natively into this bench, into the guest component and
//! into the `bench-jsonl-connector` subprocess binary.

#[path = "suite/cluster.rs"]
mod cluster;
#[path = "suite/endpoint.rs"]
mod endpoint;
#[path = "suite/epoch.rs"]
mod epoch;
#[path = "suite/guests.rs"]
mod guests;
#[path = "suite/load.rs"]
mod load;
#[path = "suite/memory.rs"]
mod memory;
#[path = "suite/neighbours.rs"]
mod neighbours;
#[path = "suite/oauth.rs"]
mod oauth;
#[path = "suite/pipeline.rs"]
mod pipeline;
#[path = "suite/stats.rs"]
mod stats;
#[path = "suite/subprocess.rs"]
mod subprocess;
#[path = "suite/transform.rs"]
mod transform;

use bench_transform::record::{sample_record, transform_record};
use switchyard_runtime::{Limits, Runtime};

/// What every figure needs.
#[derive(Debug)]
pub struct Bench {
    pub tokio: tokio::runtime::Runtime,
    /// The runtime under test: default limits, `bench-transform` loaded as
    /// connection `bench`.
    pub runtime: Runtime,
    /// The same, in an engine without epoch interruption.
    pub unbounded: Runtime,
    /// A runtime with an (initially empty) compile cache, for load times.
    pub cached: Runtime,
    pub quick: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory::child(std::path::Path::new(&args[i + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only per-call,batch,spawn,long-lived,epoch,load,memory,endpoint,pipeline,neighbours,cluster,guests,oauth`
    // runs those steps.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (runtime, unbounded, cached) = tokio.block_on(async {
        let load = |builder: switchyard_runtime::RuntimeBuilder| {
            switchyard_tests::runtime_from(
                builder.limits(Limits::default()),
                &[("bench-transform", transform::CONNECTION)],
            )
        };
        let runtime = load(Runtime::builder()).await;
        let unbounded = load(Runtime::builder().without_epoch_deadlines_for_benchmarks()).await;
        let cached = Runtime::builder()
            .limits(Limits::default())
            .cache_dir(cache.path().join("cache"))
            .build()
            .unwrap();
        (runtime, unbounded, cached)
    });
    let b = Bench {
        tokio,
        runtime,
        unbounded,
        cached,
        quick,
    };

    // The three builds of the transform must agree before any is timed.
    let input = sample_record(0);
    let expected = transform_record(&input).unwrap();
    let out = b
        .tokio
        .block_on(b.runtime.call_action(transform::CONNECTION, "map", &input))
        .unwrap();
    assert_eq!(out, expected, "component and native disagree");
    assert_eq!(
        subprocess::invoke_once(&input),
        expected,
        "subprocess and native disagree"
    );

    let mode = match (quick, &only) {
        (false, None) => "full".to_owned(),
        (true, None) => "quick".to_owned(),
        (q, Some(o)) => format!("{}, only {}", if q { "quick" } else { "full" }, o.join(",")),
    };
    eprintln!("benchmark suite ({mode} run); figures print when all are measured");
    let mut rows = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Vec<stats::Row>| {
        if only.as_ref().is_some_and(|o| !o.iter().any(|s| s == name)) {
            return;
        }
        eprintln!("  measuring {name}…");
        rows.extend(f());
    };
    step("per-call", &mut || transform::per_call(&b));
    step("batch", &mut || transform::batch(&b).0);
    step("spawn", &mut || vec![subprocess::per_invocation(&b)]);
    step("long-lived", &mut || vec![subprocess::long_lived(&b)]);
    step("epoch", &mut || {
        vec![epoch::overhead(&b), epoch::deadline_lateness(&b)]
    });
    step("load", &mut || vec![load::precompiled(&b)]);
    step("memory", &mut || vec![memory::thousand_plugins(&b)]);
    step("endpoint", &mut || {
        let mut rows = endpoint::action(&b);
        rows.extend(endpoint::webhook(&b));
        rows
    });
    step("pipeline", &mut || pipeline::throughput(&b));
    step("neighbours", &mut || neighbours::spinning_neighbours(&b));
    step("cluster", &mut || cluster::throughput(&b));
    step("guests", &mut || guests::guests(&b));
    step("oauth", &mut || oauth::cached_token(&b));

    let header = format!(
        "# Switchyard benchmark results ({mode} run)\n\nratio = subject / baseline unless the unit says otherwise; medians."
    );
    let table = stats::markdown(&rows);
    println!("\n{table}");
    let dir = switchyard_tests::workspace_root()
        .join("target")
        .join("bench");
    stats::write(&dir, &rows, &mode, &header).expect("writing target/bench");
    println!("written to {}", dir.join("results.{json,md}").display());
}
