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
