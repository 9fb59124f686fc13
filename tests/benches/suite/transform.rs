//! Bullets 1 and 2 of the suite: the record transform natively, in a fresh
//! instance per call, in a reused instance, and batched.

use super::Bench;
use super::stats::{Goal, Row, Samples, human_rate, interleave};
use bench_transform::record::{sample_record, transform_record};
use std::hint::black_box;
use std::time::Instant;
use switchyard_runtime::Message;

pub const CONNECTION: &str = "bench";
pub const BATCH: usize = 1_000;

/// One ~1 KiB record per call: native vs fresh instance vs reused instance.
pub fn per_call(b: &Bench) -> Vec<Row> {
    let input = sample_record(0);
    let (rounds, chunk) = if b.quick { (20, 100) } else { (100, 200) };
    let mut session = b.tokio.block_on(b.runtime.session(CONNECTION)).unwrap();
    let mut native = || {
        black_box(transform_record(black_box(&input)).unwrap());
    };
    let mut fresh = || {
        let out = b
            .tokio
            .block_on(b.runtime.call_action(CONNECTION, "map", &input));
        black_box(out.unwrap());
    };
    let mut reused = || {
        let out = b.tokio.block_on(session.call_action("map", &input));
        black_box(out.unwrap());
    };
    // What a fresh call adds over a reused one, split off: a store and an
    // instance from the pool, dropped again, with no call into the guest.
    let mut instantiate = || {
        let session = b.tokio.block_on(b.runtime.session(CONNECTION));
        drop(black_box(session.unwrap()));
    };
    let s = interleave(
        &mut [&mut native, &mut fresh, &mut reused, &mut instantiate],
        200,
        rounds,
        chunk,
    );
    let figure = format!("record transform, per call ({} B JSON)", input.len());
    let native_text = format!("native: {}", s[0].time_text());
    vec![
        Row {
            figure: figure.clone(),
            subject: format!("fresh instance: {}", s[1].time_text()),
            baseline: native_text.clone(),
            value: s[1].median() / s[0].median(),
            unit: "×",
            goal: Goal::AtMost(2.0),
        },
        Row {
            figure: figure.clone(),
            subject: format!("reused instance: {}", s[2].time_text()),
            baseline: native_text.clone(),
            value: s[2].median() / s[0].median(),
            unit: "×",
            goal: Goal::None,
        },
        Row {
            figure,
            subject: format!(
                "of which store + instance, created and dropped: {}",
                s[3].time_text()
            ),
            baseline: native_text,
            value: s[3].median() / s[0].median(),
            unit: "×",
            goal: Goal::None,
        },
    ]
}

/// `n` records as the messages a pipeline hands to `transform`.
pub fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            id: format!("rec-{i}"),
            stream: "contacts".into(),
            key: None,
            headers: vec![],
            payload: sample_record(i),
            timestamp_ms: 0,
        })
        .collect()
}

/// Records per second of `BATCH`-record batches, each subject timed one
/// batch at a time, alternating with the native loop.
pub struct BatchFigures {
    pub native: Samples,
    pub fresh: Samples,
    pub session: Samples,
    pub lines: Samples,
}

impl BatchFigures {
    pub fn rate(s: &Samples) -> f64 {
        BATCH as f64 / s.median()
    }
}

pub fn batch(b: &Bench) -> (Vec<Row>, BatchFigures) {
    let template = messages(BATCH);
    let payloads: Vec<Vec<u8>> = template.iter().map(|m| m.payload.clone()).collect();
    let lines: Vec<u8> = payloads
        .iter()
        .flat_map(|p| p.iter().chain(b"\n"))
        .copied()
        .collect();
    let mut session = b.tokio.block_on(b.runtime.session(CONNECTION)).unwrap();
    let rounds = if b.quick { 15 } else { 60 };
    let mut f = BatchFigures {
        native: Samples::default(),
        fresh: Samples::default(),
        session: Samples::default(),
        lines: Samples::default(),
    };
    for round in 0..rounds + 2 {
        let warm = round < 2;
        // Inputs are cloned before the clock starts: a pipeline owns them.
        let start = Instant::now();
        let out: Vec<Vec<u8>> = payloads
            .iter()
            .map(|p| transform_record(p).unwrap())
            .collect();
        let t = start.elapsed();
        black_box(out);
        if !warm {
            f.native.push(t);
        }
        let batch = template.clone();
        let start = Instant::now();
        let out = b
            .tokio
            .block_on(b.runtime.transform(CONNECTION, batch))
            .unwrap();
        let t = start.elapsed();
        assert_eq!(out.len(), BATCH);
        if !warm {
            f.fresh.push(t);
        }
        let batch = template.clone();
        let start = Instant::now();
        let out = b.tokio.block_on(session.transform(batch)).unwrap();
        let t = start.elapsed();
        black_box(out);
        if !warm {
            f.session.push(t);
        }
        let start = Instant::now();
        let out = b
            .tokio
            .block_on(b.runtime.call_action(CONNECTION, "map-lines", &lines))
            .unwrap();
        let t = start.elapsed();
        black_box(out);
        if !warm {
            f.lines.push(t);
        }
    }
    let figure = format!("batched transform ({BATCH} records per call)");
    let native = format!(
        "native loop: {} ({} per batch)",
        human_rate(BatchFigures::rate(&f.native)),
        super::stats::human_time(f.native.median())
    );
    let row = |what: &str, s: &Samples, goal| Row {
        figure: figure.clone(),
        subject: format!(
            "{what}: {} ({} per batch)",
            human_rate(BatchFigures::rate(s)),
            super::stats::human_time(s.median())
        ),
        baseline: native.clone(),
        value: BatchFigures::rate(s) / BatchFigures::rate(&f.native),
        unit: "×",
        goal,
    };
    let rows = vec![
        row(
            "`transform` export, fresh instance",
            &f.fresh,
            Goal::AtLeast(0.8),
        ),
        row(
            "`transform` export, reused instance",
            &f.session,
            Goal::None,
        ),
        row(
            "`map-lines` action (one buffer), fresh instance",
            &f.lines,
            Goal::None,
        ),
    ];
    (rows, f)
}
