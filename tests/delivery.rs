//! Delivery correctness (issue 14) with a real guest that misbehaves as a
//! source, transform or sink on request: records a sink names no outcome
//! for, poison records, a source that never gives a cursor, a sync that
//! hangs, and a run killed midway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_flows::cursors::CursorStore;
use switchyard_flows::pipelines::{PipelineConfig, Pipelines};
use switchyard_flows::queue::SqliteQueue;
use switchyard_flows::sync::{RunReport, SyncConfig, Syncs};
use switchyard_runtime::{Limits, Message, Runtime};
use switchyard_tests::guest;

/// Every misbehaving connection these tests use, by name and settings.
const CONNECTIONS: &[(&str, &str, &str)] = &[
    ("src-one", "read", "one"),
    ("src-stuck", "read", "stuck-after-first"),
    ("src-no-cursor", "read", "no-cursor"),
    ("src-spin", "read", "spin"),
    ("sink-ack", "write", "ack"),
    ("sink-partial", "write", "ack-all-but-last"),
];

struct Fixture {
    runtime: Runtime,
    queue: Arc<SqliteQueue>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        deadline_ms: 3_000,
        ..Limits::default()
    };
    let runtime = Runtime::builder().limits(limits).build().unwrap();
    runtime
        .load_plugin("misbehave", &guest("guest-misbehave"))
        .await
        .unwrap();
    for (name, key, value) in CONNECTIONS {
        let config = BTreeMap::from([((*key).to_owned(), (*value).to_owned())]);
        runtime.add_connection(name, "misbehave", config).unwrap();
    }
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("queue.sqlite")).unwrap());
    Fixture {
        runtime,
        queue,
        _dir: dir,
    }
}

impl Fixture {
    fn pipelines(&self, pipeline: &str) -> Arc<Pipelines> {
        let config: PipelineConfig = toml::from_str(pipeline).unwrap();
        Arc::new(
            Pipelines::new(
                self.runtime.clone(),
                self.queue.clone(),
                &BTreeMap::new(),
                &BTreeMap::from([("p".to_owned(), config)]),
                self.runtime.secret_provider(),
            )
            .unwrap(),
        )
    }

    fn syncs(&self, syncs: &str) -> Arc<Syncs> {
        let syncs: BTreeMap<String, SyncConfig> = toml::from_str(syncs).unwrap();
        Arc::new(
            Syncs::new(
                self.runtime.clone(),
                self.queue.clone(),
                self.queue.clone(),
                &syncs,
            )
            .unwrap(),
        )
    }
}

fn message(id: &str, payload: &str) -> Message {
    Message {
        id: id.into(),
        stream: "s".into(),
        key: None,
        headers: Vec::new(),
        payload: payload.as_bytes().to_vec(),
        timestamp_ms: 0,
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_sink_names_no_outcome_for_is_retried_never_counted_delivered() {
    let f = fixture().await;
    let pipelines = f.pipelines(
        "sink = \"sink-partial\"\nbatch_size = 10\nretry = { max_attempts = 2, base_delay_ms = 0, max_delay_ms = 0 }",
    );
    let q = &f.queue;
    q.enqueue(
        "pipeline:p",
        &[message("a", "{}"), message("b", "{}"), message("c", "{}")],
    )
    .unwrap();
    let workers = pipelines.start().await;
    // a and b are acked; c, never answered for, is retried alone (and
    // then is the last of its batch again) until it gives up.
    eventually("c dead-lettered", || {
        q.stats("pipeline:p").unwrap().dead == 1
    })
    .await;
    workers.iter().for_each(|w| w.abort());
    let stats = q.stats("pipeline:p").unwrap();
    assert_eq!((stats.done, stats.dead), (2, 1), "{stats:?}");
    let letters = q.dead_letters(Some("pipeline:p"), 10).unwrap();
    assert_eq!(letters[0].id, "c");
    assert!(letters[0].last_error.contains("no outcome"), "{letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_never_counts_an_unanswered_record_written_nor_moves_its_cursor() {
    let f = fixture().await;
    let syncs = f.syncs(
        "[s]\nsource = \"src-one\"\nstreams = [\"orders\"]\nsink = \"sink-partial\"\nretry = { max_attempts = 2, base_delay_ms = 0, max_delay_ms = 0 }",
    );
    let report = syncs.run("s").await.unwrap();
    assert_eq!((report.read, report.written), (1, 0), "{report:?}");
    let error = report.error.unwrap_or_default();
    assert!(
        error.contains("not acknowledged after 2 attempts"),
        "{error}"
    );
    assert_eq!(
        f.queue.cursor("s", "orders").unwrap(),
        None,
        "cursor unmoved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_alone_and_its_batch_goes_on() {
    let f = fixture().await;
    let pipelines = f.pipelines(
        "sink = \"sink-ack\"\nbatch_size = 10\ntransforms = [{ jq = 'if .poison then error(\"poison\") else . end' }]",
    );
    let q = &f.queue;
    q.enqueue(
        "pipeline:p",
        &[
            message("a", "{}"),
            message("bad", r#"{"poison":true}"#),
            message("b", "{}"),
        ],
    )
    .unwrap();
    let workers = pipelines.start().await;
    eventually("the batch settled", || {
        let s = q.stats("pipeline:p").unwrap();
        s.done + s.dead == 3
    })
    .await;
    workers.iter().for_each(|w| w.abort());
    let stats = q.stats("pipeline:p").unwrap();
    assert_eq!((stats.done, stats.dead), (2, 1), "{stats:?}");
    assert_eq!(q.dead_letters(Some("pipeline:p"), 10).unwrap()[0].id, "bad");

    // In a sync, the poison record is dead-lettered and the page goes on.
    let syncs = f.syncs(
        "[s]\nsource = \"src-one\"\nstreams = [\"orders\"]\nsink = \"sink-ack\"\ntransforms = [{ jq = 'error(\"poison\")' }]",
    );
    let report = syncs.run("s").await.unwrap();
    assert_eq!(
        (report.read, report.failed, report.written),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.error, None);
    assert_eq!(f.queue.stats("pipeline:sync.s").unwrap().dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_to_come_without_a_cursor_is_an_error_not_an_endless_loop() {
    let f = fixture().await;
    let syncs =
        f.syncs("[s]\nsource = \"src-no-cursor\"\nstreams = [\"orders\"]\nsink = \"sink-ack\"");
    let report = tokio::time::timeout(Duration::from_secs(20), syncs.run("s"))
        .await
        .expect("the run ends")
        .unwrap();
    let error = report.error.unwrap_or_default();
    assert!(error.contains("has_more without a next cursor"), "{error}");
    assert_eq!(
        (report.read, report.written),
        (1, 0),
        "read, and not written: no cursor could record it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sync_blocks_no_other_and_a_killed_run_leaves_its_progress() {
    let f = fixture().await;
    let syncs = f.syncs(
        "[stuck]\nsource = \"src-stuck\"\nstreams = [\"orders\"]\nsink = \"sink-ack\"\nretry = { max_attempts = 1 }\n\
         [quick]\nsource = \"src-one\"\nstreams = [\"orders\"]\nsink = \"sink-ack\"",
    );
    let stuck = {
        let syncs = syncs.clone();
        tokio::spawn(async move { syncs.run("stuck").await })
    };
    // Its first page is committed and recorded while the second read
    // spins: an operator sees the partial run.
    let queue = f.queue.clone();
    let mut progress: Option<RunReport> = None;
    eventually("a progress report", || {
        let runs = queue.runs("stuck", 1).unwrap();
        progress = runs.first().map(|r| serde_json::from_str(r).unwrap());
        progress.is_some()
    })
    .await;
    let progress = progress.unwrap();
    assert_eq!(
        (progress.read, progress.written, progress.finished_at_ms),
        (1, 1, 0),
        "{progress:?}"
    );
    assert_eq!(
        CursorStore::cursor(&*f.queue, "stuck", "orders")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // Another sync runs to its end meanwhile.
    let quick = tokio::time::timeout(Duration::from_millis(2_500), syncs.run("quick"))
        .await
        .expect("quick is not held up by stuck")
        .unwrap();
    assert_eq!(quick.written, 1);
    assert!(!stuck.is_finished(), "stuck still spins");
    // Killed (here: the read hits its deadline), the run's last record
    // is its final report, in the same row.
    let report = stuck.await.unwrap().unwrap();
    assert!(report.error.is_some() && report.finished_at_ms > 0);
    let runs = f.queue.runs("stuck", 10).unwrap();
    assert_eq!(runs.len(), 1, "progress and final report are one run");
}
