//! The durable pipeline end to end: a producer enqueues records into the
//! SQLite queue (a real file, WAL, `synchronous = FULL`), the pipeline's
//! workers claim them, run them through the `bench` transform connection
//! into the same component's null-sink `write`, and ack them. Timed from
//! the first enqueue to the last ack, as counted by a records observer;
//! the queue's own counts are checked after every run.

use super::Bench;
use super::stats::{Goal, Row, human_rate, human_time};
use super::transform::{CONNECTION, messages};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard_flows::observe::{FlowObserver, FlowObservers, RecordsEvent};
use switchyard_flows::pipelines::{PipelineConfig, Pipelines, pipeline_queue};
use switchyard_flows::queue::{QueueStats, SqliteQueue};
use switchyard_flows::transform::Transform;
use switchyard_runtime::{Limits, Runtime};

const PIPELINE: &str = "bench";
/// Records per `enqueue` call (one transaction, one fsync): what a
/// webhook receiver or a sync page hands the queue.
pub const PRODUCER_BATCH: usize = 1_000;
/// The figure's goal.
const TARGET_PER_S: f64 = 50_000.0;

/// Counts what the pipeline settled and notes when a goal is reached.
#[derive(Default)]
pub(super) struct Settled {
    delivered: AtomicU64,
    dead: AtomicU64,
    /// (goal, when it was reached)
    finish: Mutex<(u64, Option<Instant>)>,
    done: Condvar,
}

impl FlowObserver for Settled {
    fn records(&self, event: &RecordsEvent<'_>) {
        if event.flow != "pipeline" {
            return;
        }
        let delivered = self
            .delivered
            .fetch_add(event.records_out, Ordering::SeqCst)
            + event.records_out;
        let dead = self.dead.fetch_add(event.failed, Ordering::SeqCst) + event.failed;
        let mut finish = self.finish.lock().unwrap();
        if finish.1.is_none() && delivered + dead >= finish.0 {
            finish.1 = Some(Instant::now());
            self.done.notify_all();
        }
    }
}

impl Settled {
    /// Records dead-lettered since the last reset.
    pub(super) fn dead(&self) -> u64 {
        self.dead.load(Ordering::SeqCst)
    }

    pub(super) fn reset(&self, goal: u64) {
        self.delivered.store(0, Ordering::SeqCst);
        self.dead.store(0, Ordering::SeqCst);
        *self.finish.lock().unwrap() = (goal, None);
    }

    pub(super) fn wait(&self) -> Instant {
        let finish = self.finish.lock().unwrap();
        let (finish, timeout) = self
            .done
            .wait_timeout_while(finish, Duration::from_secs(600), |f| f.1.is_none())
            .unwrap();
        assert!(!timeout.timed_out(), "pipeline did not finish in 10 min");
        finish.1.unwrap()
    }
}

/// One configuration of the pipeline under test.
#[derive(Debug, Clone, Copy)]
struct Setup {
    batch_size: usize,
    workers: usize,
}

impl Setup {
    fn config(self) -> PipelineConfig {
        PipelineConfig {
            transforms: vec![Transform::Connection {
                connection: CONNECTION.into(),
            }],
            sink: CONNECTION.into(),
            batch_size: self.batch_size,
            workers: self.workers,
            retry: Default::default(),
        }
    }

    fn text(self) -> String {
        format!(
            "batch_size {}, {} worker{}",
            self.batch_size,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )
    }
}

/// One run: `records` through a fresh queue file. Returns the seconds
/// from first enqueue to last ack.
fn run(b: &Bench, runtime: &Runtime, settled: &Arc<Settled>, setup: Setup, records: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("queue.db")).unwrap());
    let pipelines = BTreeMap::from([(PIPELINE.to_owned(), setup.config())]);
    let host = Arc::new(
        Pipelines::new(
            runtime.clone(),
            queue.clone(),
            &BTreeMap::new(),
            &pipelines,
            runtime.secret_provider(),
        )
        .unwrap()
        .with_observers(FlowObservers::new(vec![settled.clone()])),
    );
    // Built before the clock starts: a producer owns its records.
    let batches: Vec<_> = messages(records)
        .chunks(PRODUCER_BATCH)
        .map(<[_]>::to_vec)
        .collect();
    settled.reset(records as u64);
    let workers = b.tokio.block_on(host.start());
    let name = pipeline_queue(PIPELINE);
    let start = Instant::now();
    let producer = {
        let (queue, host) = (queue.clone(), host.clone());
        std::thread::spawn(move || {
            for batch in batches {
                queue.enqueue(&name, &batch).unwrap();
                host.wake();
            }
        })
    };
    let end = settled.wait();
    producer.join().unwrap();
    for w in workers {
        w.abort();
    }
    let stats = queue.stats(&pipeline_queue(PIPELINE)).unwrap();
    assert_eq!(
        stats,
        QueueStats {
            done: records as u64,
            ..QueueStats::default()
        },
        "every record acked once, none dead"
    );
    assert_eq!(settled.dead.load(Ordering::SeqCst), 0);
    (end - start).as_secs_f64()
}

/// The transform alone, a fresh instance per `PRODUCER_BATCH` records, on
/// one core: what bounds a single worker.
fn transform_alone(b: &Bench, runtime: &Runtime) -> f64 {
    let template = messages(PRODUCER_BATCH);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let batch = template.clone();
        let start = Instant::now();
        let out = b
            .tokio
            .block_on(runtime.transform(CONNECTION, batch))
            .unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(out.len(), PRODUCER_BATCH);
    }
    PRODUCER_BATCH as f64 / best
}

/// The pipeline's two halves apart, on one thread: the queue alone
/// (enqueue, claim, settle, no connector calls) and the connectors alone
/// (transform, then write, of in-memory batches). Records per second each.
fn halves(b: &Bench, runtime: &Runtime, batch_size: usize, records: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open(&dir.path().join("queue.db")).unwrap();
    let name = pipeline_queue(PIPELINE);
    let all = messages(records);
    let start = Instant::now();
    for batch in all.chunks(PRODUCER_BATCH) {
        queue.enqueue(&name, batch).unwrap();
    }
    let mut settled = 0;
    loop {
        let batch = queue
            .claim(&name, batch_size, Duration::from_secs(60))
            .unwrap();
        if batch.is_empty() {
            break;
        }
        let ok = vec![Ok(()); batch.len()];
        queue
            .settle(batch.iter().zip(&ok), &Default::default())
            .unwrap();
        settled += batch.len();
    }
    let queue_rate = settled as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for batch in all.chunks(batch_size) {
        let out = b
            .tokio
            .block_on(runtime.transform(CONNECTION, batch.to_vec()))
            .unwrap();
        let written = b.tokio.block_on(runtime.write(CONNECTION, out)).unwrap();
        assert_eq!(written.len(), batch.len());
    }
    let connector_rate = records as f64 / start.elapsed().as_secs_f64();
    (queue_rate, connector_rate)
}

pub fn throughput(b: &Bench) -> Vec<Row> {
    let settled = Arc::new(Settled::default());
    let runtime = b.tokio.block_on(switchyard_tests::runtime_from(
        Runtime::builder().limits(Limits::default()),
        &[("bench-transform", CONNECTION)],
    ));
    let (records, repeats) = if b.quick { (20_000, 1) } else { (100_000, 3) };
    let alone = transform_alone(b, &runtime);
    let measure = |setup: Setup, records: usize| {
        let mut rates: Vec<f64> = (0..repeats)
            .map(|_| records as f64 / run(b, &runtime, &settled, setup, records))
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let figure = format!(
        "durable pipeline, end to end ({records} × {} B records)",
        messages(1)[0].payload.len()
    );
    let durability = "SQLite file, WAL, synchronous=FULL (fsync per commit)";
    let baseline = format!(
        "`transform` alone, fresh instance per {PRODUCER_BATCH}: {} (1 core)",
        human_rate(alone)
    );
    // The best of the setups below on the 2-core VM (see the info rows):
    // queue transactions run on the blocking pool, so a second worker's
    // guest calls overlap the first one's commits. More than one worker
    // may settle batches out of order (see README, `workers`).
    let headline = Setup {
        batch_size: 1_000,
        workers: 2,
    };
    let rate = measure(headline, records);
    let mut rows = vec![Row {
        figure: figure.clone(),
        subject: format!(
            "{}: enqueue ({PRODUCER_BATCH}/tx) → claim → `bench` transform → null-sink `write` → ack; {durability}; {} ({} per run, median of {repeats})",
            headline.text(),
            human_rate(rate),
            human_time(records as f64 / rate),
        ),
        baseline: baseline.clone(),
        value: rate / 1e3,
        unit: " k rec/s",
        goal: Goal::AtLeast(TARGET_PER_S / 1e3),
    }];
    // What one setting changes, each against the headline setup: one
    // worker (the default, in order), the default batch size, a third
    // worker.
    for setup in [
        Setup {
            batch_size: 1_000,
            workers: 1,
        },
        Setup {
            batch_size: 100,
            workers: 2,
        },
        Setup {
            batch_size: 1_000,
            workers: 3,
        },
    ] {
        let r = measure(setup, records);
        rows.push(Row {
            figure: figure.clone(),
            subject: format!("{}: {}", setup.text(), human_rate(r)),
            baseline: format!("{}: {}", headline.text(), human_rate(rate)),
            value: r / rate,
            unit: "×",
            goal: Goal::None,
        });
    }
    let (queue_rate, connector_rate) = halves(b, &runtime, headline.batch_size, records);
    for (what, r) in [
        (
            "queue alone (enqueue, claim, settle; no connector calls), 1 thread",
            queue_rate,
        ),
        (
            "connectors alone (transform, then null-sink write; no queue), 1 thread",
            connector_rate,
        ),
    ] {
        rows.push(Row {
            figure: figure.clone(),
            subject: format!(
                "{what}, batch_size {}: {}",
                headline.batch_size,
                human_rate(r)
            ),
            baseline: format!("{}: {}", headline.text(), human_rate(rate)),
            value: r / rate,
            unit: "×",
            goal: Goal::None,
        });
    }
    rows
}
