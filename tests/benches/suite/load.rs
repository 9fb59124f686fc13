//! Load time of a precompiled plugin: the compile cache already holds the
//! component, so loading is read, hash, authenticate, deserialize,
//! pre-link and `describe`.

use super::Bench;
use super::stats::{Goal, Row, Samples, human_time};
use std::time::Instant;

pub fn precompiled(b: &Bench) -> Row {
    let path = switchyard_tests::guest("bench-transform");
    let rounds = if b.quick { 20 } else { 100 };
    let mut cold = None;
    let mut warm = Samples::default();
    for i in 0..rounds + 1 {
        let name = format!("load-{i}");
        let start = Instant::now();
        let plugin = b
            .tokio
            .block_on(b.cached.load_plugin(&name, &path))
            .unwrap();
        let t = start.elapsed();
        if i == 0 {
            assert!(!plugin.from_cache(), "the cache dir starts empty");
            cold = Some(t);
        } else {
            assert!(plugin.from_cache());
            warm.push(t);
        }
        b.cached.remove_plugin(&name, None);
    }
    let cold = cold.unwrap();
    Row {
        figure: "load time of a precompiled plugin".into(),
        subject: format!("from the compile cache: {}", warm.time_text()),
        baseline: format!("first load, compiling: {}", human_time(cold.as_secs_f64())),
        value: warm.median() * 1e3,
        unit: " ms",
        goal: Goal::AtMost(5.0),
    }
}
