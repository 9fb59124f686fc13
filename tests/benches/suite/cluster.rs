//! The durable pipeline on the cluster backend beside the embedded one, in
//! one run: the same records, transform and null sink, through the
//! SQLite queue, through JetStream with one host, and with two hosts
//! (two `Pipelines` on their own NATS connections, sharing the queue's
//! consumer). nats-server (file storage) runs on this machine too: on a
//! 2-core VM it shares the cores with the hosts.

use super::Bench;
use super::pipeline::{PRODUCER_BATCH, Settled};
use super::stats::{Goal, Row, human_rate};
use super::transform::{CONNECTION, messages};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use switchyard_broker::secrets::EnvOrFile;
use switchyard_cluster::{Cluster, ClusterConfig};
use switchyard_flows::observe::FlowObservers;
use switchyard_flows::pipelines::{PipelineConfig, Pipelines, pipeline_queue};
use switchyard_flows::queue::{Queue, SqliteQueue};
use switchyard_flows::transform::Transform;
use switchyard_runtime::{Limits, Runtime};
use switchyard_tests::nats::NatsServer;

const PIPELINE: &str = "bench";
/// The goal: one host on JetStream at least half the SQLite figure.
const GOAL: f64 = 0.5;

fn config() -> PipelineConfig {
    PipelineConfig {
        transforms: vec![Transform::Connection {
            connection: CONNECTION.into(),
        }],
        sink: CONNECTION.into(),
        batch_size: 1_000,
        workers: 2,
        retry: Default::default(),
    }
}

/// Records per second through `queues` (one `Pipelines` each, all
/// draining one queue), from the first enqueue to the last ack.
fn run(b: &Bench, runtime: &Runtime, queues: &[Arc<dyn Queue>], records: usize) -> f64 {
    let settled = Arc::new(Settled::default());
    let pipelines = BTreeMap::from([(PIPELINE.to_owned(), config())]);
    let hosts: Vec<Arc<Pipelines>> = queues
        .iter()
        .map(|queue| {
            Arc::new(
                Pipelines::new(
                    runtime.clone(),
                    queue.clone(),
                    &BTreeMap::new(),
                    &pipelines,
                    runtime.secret_provider(),
                )
                .unwrap()
                .with_observers(FlowObservers::new(vec![settled.clone()])),
            )
        })
        .collect();
    let batches: Vec<_> = messages(records)
        .chunks(PRODUCER_BATCH)
        .map(<[_]>::to_vec)
        .collect();
    settled.reset(records as u64);
    let workers: Vec<_> = hosts
        .iter()
        .flat_map(|h| b.tokio.block_on(h.start()))
        .collect();
    let start = Instant::now();
    let producer = {
        let queue = queues[0].clone();
        let host = hosts[0].clone();
        b.tokio.spawn(async move {
            for batch in batches {
                queue
                    .enqueue(&pipeline_queue(PIPELINE), batch)
                    .await
                    .unwrap();
                host.wake();
            }
        })
    };
    let end = settled.wait();
    b.tokio.block_on(producer).unwrap();
    for w in workers {
        w.abort();
    }
    assert_eq!(settled.dead(), 0, "none dead");
    records as f64 / (end - start).as_secs_f64()
}

pub fn throughput(b: &Bench) -> Vec<Row> {
    let runtime = b.tokio.block_on(switchyard_tests::runtime_from(
        Runtime::builder().limits(Limits::default()),
        &[("bench-transform", CONNECTION)],
    ));
    let records = if b.quick { 20_000 } else { 100_000 };
    let repeats = if b.quick { 1 } else { 3 };
    let nats = NatsServer::start();
    let mut round = 0;
    let mut cluster = |hosts: usize| -> Vec<Arc<dyn Queue>> {
        round += 1;
        // A fresh prefix per run: every run starts from an empty stream.
        let config: ClusterConfig = toml::from_str(&format!(
            "nats = [\"{}\"]\nprefix = \"bench{round}\"",
            nats.url()
        ))
        .unwrap();
        (0..hosts)
            .map(|_| {
                let cluster = b
                    .tokio
                    .block_on(Cluster::connect(&config, &EnvOrFile))
                    .unwrap();
                Arc::new(cluster.queue) as Arc<dyn Queue>
            })
            .collect()
    };
    let (mut sqlite, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so drift on a shared VM hits each alike.
    for _ in 0..repeats {
        let dir = tempfile::tempdir().unwrap();
        let file: Arc<dyn Queue> =
            Arc::new(SqliteQueue::open(&dir.path().join("queue.db")).unwrap());
        sqlite.push(run(b, &runtime, &[file], records));
        one.push(run(b, &runtime, &cluster(1), records));
        two.push(run(b, &runtime, &cluster(2), records));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sqlite, one, two) = (median(&mut sqlite), median(&mut one), median(&mut two));
    let figure = format!("durable pipeline on the cluster backend ({records} records)");
    let baseline = format!(
        "SQLite queue (file, WAL, synchronous=FULL), same pipeline, same run: {}",
        human_rate(sqlite)
    );
    let setup = "batch_size 1000, 2 workers per host; nats-server 2.9 with file storage on the same 2 cores; every ack confirmed by the server";
    vec![
        Row {
            figure: figure.clone(),
            subject: format!("JetStream, one host: {} ({setup})", human_rate(one)),
            baseline: baseline.clone(),
            value: one / sqlite,
            unit: "×",
            goal: Goal::AtLeast(GOAL),
        },
        Row {
            figure,
            subject: format!(
                "JetStream, two hosts in one process: {} ({:.2}× one host)",
                human_rate(two),
                two / one
            ),
            baseline,
            value: two / sqlite,
            unit: "×",
            goal: Goal::None,
        },
    ]
}
