//! Noisy neighbours: a well-behaved plugin's call latency alone and beside
//! [`SPINNERS`] calls of another plugin spinning until their deadline,
//! measured in one run (issue 15; target: p99 within 2× of alone).

use super::Bench;
use super::stats::{Goal, Row, Samples, human_time};
use std::time::{Duration, Instant};
use switchyard_runtime::{Limits, Runtime};

/// Spinning calls kept running beside the measured ones.
pub const SPINNERS: usize = 32;

/// Each call runs as a task on the runtime's workers, as a server's
/// request handler does, so it queues with the spinners for a worker.
fn echo_latencies(b: &Bench, runtime: &Runtime, n: usize) -> Samples {
    let mut samples = Samples::default();
    for _ in 0..n {
        let started = Instant::now();
        let runtime = runtime.clone();
        b.tokio
            .block_on(b.tokio.spawn(async move {
                runtime
                    .call_action("echo", "greet", br#"{"name":"n"}"#)
                    .await
            }))
            .expect("the task ran")
            .expect("echo answers");
        samples.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    samples
}

pub fn spinning_neighbours(b: &Bench) -> Vec<Row> {
    let limits = Limits {
        deadline_ms: 60_000,
        max_concurrent_per_connection: SPINNERS,
        ..Limits::default()
    };
    let runtime = b.tokio.block_on(switchyard_tests::runtime_with(
        limits,
        &["echo", "guest-misbehave"],
    ));
    let n = if b.quick { 200 } else { 1_000 };
    echo_latencies(b, &runtime, 50);
    let alone = echo_latencies(b, &runtime, n);
    let spinners: Vec<_> = (0..SPINNERS)
        .map(|_| {
            let runtime = runtime.clone();
            b.tokio.spawn(async move {
                let _ = runtime.call_action("guest-misbehave", "loop", b"").await;
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let beside = echo_latencies(b, &runtime, n);
    let all_spun = spinners.iter().all(|s| !s.is_finished());
    assert!(all_spun, "the spinners ran for the whole measurement");
    for spinner in spinners {
        spinner.abort();
    }
    let figure = |what: &str| {
        format!("noisy neighbour: echo {what} beside {SPINNERS} spinning calls of another plugin")
    };
    vec![
        Row {
            figure: figure("p50"),
            subject: format!("beside: {}", human_time(beside.median())),
            baseline: format!("alone: {}", human_time(alone.median())),
            value: beside.median() / alone.median(),
            unit: "×",
            goal: Goal::None,
        },
        Row {
            figure: figure("p99"),
            subject: format!("beside: {}", human_time(beside.p99())),
            baseline: format!("alone: {}", human_time(alone.p99())),
            value: beside.p99() / alone.p99(),
            unit: "×",
            goal: Goal::AtMost(2.0),
        },
    ]
}
