//! Epoch-deadline overhead: the same guest in an engine without epoch
//! interruption (guest code compiled without deadline checks) vs the
//! normal one, alternating.

use super::Bench;
use super::stats::{Goal, Row, Samples, human_time};
use super::transform::{BATCH, CONNECTION, messages};
use std::hint::black_box;
use std::time::Instant;
use switchyard_runtime::Runtime;

fn time_batch(b: &Bench, runtime: &Runtime, template: &[switchyard_runtime::Message]) -> f64 {
    let batch = template.to_vec();
    let start = Instant::now();
    let out = b.tokio.block_on(runtime.transform(CONNECTION, batch));
    let t = start.elapsed();
    black_box(out.unwrap());
    t.as_secs_f64()
}

pub fn overhead(b: &Bench) -> Row {
    let template = messages(BATCH);
    let rounds = if b.quick { 15 } else { 60 };
    let (mut with, mut without) = (Samples::default(), Samples::default());
    for round in 0..rounds + 2 {
        let w = time_batch(b, &b.runtime, &template);
        let wo = time_batch(b, &b.unbounded, &template);
        if round >= 2 {
            with.push(std::time::Duration::from_secs_f64(w));
            without.push(std::time::Duration::from_secs_f64(wo));
        }
    }
    Row {
        figure: format!("epoch-deadline overhead (`transform`, {BATCH} records)"),
        subject: format!(
            "epoch interruption on: {} per batch",
            human_time(with.median())
        ),
        baseline: format!("off: {} per batch", human_time(without.median())),
        value: with.median() / without.median(),
        unit: "×",
        goal: Goal::AtMost(1.10),
    }
}

/// How late a spinning guest is stopped after its deadline: the figure
/// `tests/deadline.rs` leaves to the bench (it only checks that the
/// configured deadline fired). Epochs tick every
/// [`switchyard_runtime::engine::EPOCH_TICK`] (1 ms), so about that late is expected.
pub fn deadline_lateness(b: &Bench) -> Row {
    let deadline = std::time::Duration::from_millis(200);
    let limits = switchyard_runtime::Limits {
        deadline_ms: deadline.as_millis() as u64,
        ..Default::default()
    };
    let runtime = b
        .tokio
        .block_on(switchyard_tests::runtime_with(limits, &["guest-misbehave"]));
    let mut late = Samples::default();
    for _ in 0..if b.quick { 5 } else { 20 } {
        let start = Instant::now();
        let out = b
            .tokio
            .block_on(runtime.call_action("guest-misbehave", "loop", b""));
        let elapsed = start.elapsed();
        assert!(
            matches!(out, Err(switchyard_runtime::InvokeError::Timeout { .. })),
            "{out:?}"
        );
        late.push(elapsed.saturating_sub(deadline));
    }
    Row {
        figure: format!(
            "deadline enforcement (spinning guest, {} ms deadline)",
            deadline.as_millis()
        ),
        subject: format!("stopped after the deadline by: {}", late.time_text()),
        baseline: "the deadline".into(),
        value: late.median() * 1e3,
        unit: " ms late",
        goal: Goal::None,
    }
}
