//! Bullet 3 of the suite: the same transform as a JSON-lines subprocess
//! connector, one process per invocation and one long-lived process.

use super::Bench;
use super::stats::{Goal, Row, Samples, human_rate, human_time};
use super::transform::{BATCH, CONNECTION, messages};
use bench_transform::record::{sample_record, transform_record};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The connector binary cargo built beside this bench.
const CONNECTOR: &str = env!("CARGO_BIN_EXE_bench-jsonl-connector");

fn spawn() -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = Command::new(CONNECTOR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the JSON-lines connector");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// One invocation of a process-per-invocation connector: spawn, send one
/// record, read one line, close stdin, wait for the exit.
pub fn invoke_once(record: &[u8]) -> Vec<u8> {
    let (mut child, mut stdin, mut stdout) = spawn();
    stdin.write_all(record).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let mut line = Vec::new();
    stdout.read_until(b'\n', &mut line).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    line.pop();
    line
}

/// Process per invocation vs a fresh component instance per invocation.
pub fn per_invocation(b: &Bench) -> Row {
    let input = sample_record(0);
    assert_eq!(invoke_once(&input), transform_record(&input).unwrap());
    let rounds = if b.quick { 30 } else { 200 };
    let (mut spawned, mut fresh) = (Samples::default(), Samples::default());
    for round in 0..rounds + 3 {
        let start = Instant::now();
        black_box(invoke_once(&input));
        let t = start.elapsed();
        if round >= 3 {
            spawned.push(t);
        }
        // Several component calls per spawn keep its sample count useful.
        for _ in 0..10 {
            let start = Instant::now();
            let out = b
                .tokio
                .block_on(b.runtime.call_action(CONNECTION, "map", &input));
            let t = start.elapsed();
            black_box(out.unwrap());
            if round >= 3 {
                fresh.push(t);
            }
        }
    }
    Row {
        figure: "one record per invocation: component vs process spawn".into(),
        subject: format!("fresh instance: {}", fresh.time_text()),
        baseline: format!("spawn + 1 line + exit: {}", spawned.time_text()),
        value: spawned.median() / fresh.median(),
        unit: "× faster",
        goal: Goal::AtLeast(100.0),
    }
}

/// Streams `input` (newline-terminated records) through a running
/// connector, reading `n` lines back.
fn stream(stdin: &mut ChildStdin, stdout: &mut BufReader<ChildStdout>, input: &[u8], n: usize) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            stdin.write_all(input).unwrap();
            stdin.flush().unwrap();
        });
        let mut line = Vec::with_capacity(2048);
        for _ in 0..n {
            line.clear();
            stdout.read_until(b'\n', &mut line).unwrap();
            assert_eq!(line.last(), Some(&b'\n'));
        }
    });
}

/// A long-lived process streaming records vs the component transforming
/// the same records in `BATCH`-record batches, a fresh instance per batch
/// (what a pipeline does).
pub fn long_lived(b: &Bench) -> Row {
    let batches = if b.quick { 5 } else { 10 };
    let n = batches * BATCH;
    let template = messages(BATCH);
    let input: Vec<u8> = (0..n)
        .flat_map(|i| {
            let mut r = sample_record(i % BATCH);
            r.push(b'\n');
            r
        })
        .collect();
    let (mut child, mut stdin, mut stdout) = spawn();
    let rounds = if b.quick { 5 } else { 15 };
    let (mut process, mut component) = (Samples::default(), Samples::default());
    for round in 0..rounds + 1 {
        let start = Instant::now();
        stream(&mut stdin, &mut stdout, &input, n);
        let t = start.elapsed();
        let start_c = Instant::now();
        for _ in 0..batches {
            let out = b
                .tokio
                .block_on(b.runtime.transform(CONNECTION, template.clone()));
            black_box(out.unwrap());
        }
        let tc = start_c.elapsed();
        if round > 0 {
            process.push(t);
            component.push(tc);
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let rate = |s: &Samples| n as f64 / s.median();
    Row {
        figure: format!("pipeline throughput, {n} records per round"),
        subject: format!(
            "component, `transform` of {BATCH}-record batches, fresh instance each: {}",
            human_rate(rate(&component))
        ),
        baseline: format!(
            "long-lived JSON-lines process: {} ({} per round)",
            human_rate(rate(&process)),
            human_time(process.median())
        ),
        value: rate(&component) / rate(&process),
        unit: "×",
        goal: Goal::AtLeast(1.0),
    }
}
