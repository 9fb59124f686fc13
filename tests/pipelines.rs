// Over 500 lines: one shared harness (pouchdb-server, signed senders) and
// a test per integration pattern; split, each file would repeat it.
//! Integration patterns end to end with real peers: signed webhooks (signed
//! by the Standard Webhooks reference library) into a pouchdb-server sink,
//! retries into the dead-letter queue and replay, and incremental batch
//! sync between two pouchdb-server databases.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_broker::secrets::SecretValue;
use switchyard_flows::observe::{FlowObserver, FlowObservers, RecordsEvent};
use switchyard_flows::pipelines::{PipelineConfig, Pipelines};
use switchyard_flows::queue::{QueueStats, SqliteQueue};
use switchyard_flows::sync::Syncs;
use switchyard_host::SwitchyardConfig;
use switchyard_runtime::Runtime;
use switchyard_tests::pouchdb::pouchdb;
use switchyard_tests::{couchdb_plugins, workspace_root};
use tower::ServiceExt;

/// A host built from `config` (TOML after the plugin and connection
/// blocks this adds), with pipelines and syncs started.
struct Host {
    router: axum::Router,
    pipelines: Arc<Pipelines>,
    syncs: Arc<Syncs>,
    /// The host's queue file, opened a second time as `switchyard dlq` does.
    queue: SqliteQueue,
    _dir: tempfile::TempDir,
}

const ADMIN_TOKEN: &str = "pipelines-test-admin-token";

async fn host(origins: &[String], config: &str) -> Host {
    // SAFETY: every test sets the same value; nothing else writes it.
    unsafe { std::env::set_var(couchdb_plugins::AUTH_ENV, "dXNlcjpwYXNz") };
    let dir = tempfile::tempdir().unwrap();
    couchdb_plugins::install(&dir.path().join("plugins"), origins);
    let text = format!("data_dir = \"{}\"\n{config}", dir.path().display());
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let assembled = switchyard_host::Host::from_config(&config).await.unwrap();
    assembled.start().await;
    let router = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(SecretValue::new(ADMIN_TOKEN.into())),
        ..switchyard_server::Services::from_host(&assembled)
    });
    Host {
        router,
        pipelines: assembled.pipelines.unwrap(),
        syncs: assembled.syncs.unwrap(),
        queue: SqliteQueue::open(&config.queue_path()).unwrap(),
        _dir: dir,
    }
}

impl Host {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// An operator route: with the admin token.
    async fn get(&self, path: &str) -> Value {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        self.send(request).await.1
    }

    /// An operator route: with the admin token.
    async fn post(&self, path: &str) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    async fn hook(&self, name: &str, headers: &Value, body: &str) -> (StatusCode, Value) {
        let mut request = Request::post(format!("/v1/hooks/{name}"));
        for (key, value) in headers.as_object().unwrap() {
            request = request.header(key, value.as_str().unwrap());
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }
}

/// Headers from the Standard Webhooks reference library (PyPI).
fn standard_signature(secret: &str, id: &str, seconds: u64, body: &str) -> Value {
    let python = workspace_root().join(".switchyard/venv/bin/python");
    let out = std::process::Command::new(python)
        .arg(workspace_root().join("tests/sign_webhook.py"))
        .args([secret, id, &seconds.to_string(), body])
        .output()
        .expect("run tests/sign_webhook.py (./dev setup installs standardwebhooks)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `check` for up to 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_verified_queued_and_delivered_once() {
    let couch = pouchdb();
    let db = couch.fresh_db("events");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // SAFETY: only this test writes these variables.
    unsafe {
        std::env::set_var("SWITCHYARD_TEST_WEBHOOK_SECRET", secret);
        std::env::set_var(
            "SWITCHYARD_TEST_GITHUB_SECRET",
            "It's a Secret to Everybody",
        );
    }
    let h = host(
        &[couch.origin()],
        &format!(
            r#"
            [connections.receiver]
            plugin = "webhook-receiver"
            config = {{ stream_from = "type" }}
            {sink}
            [webhooks.events]
            connection = "receiver"
            pipeline = "events"
            signature = {{ scheme = "standard-webhooks", secret = {{ env = "SWITCHYARD_TEST_WEBHOOK_SECRET" }} }}
            [webhooks.github]
            connection = "receiver"
            pipeline = "events"
            signature = {{ scheme = "github", secret = {{ env = "SWITCHYARD_TEST_GITHUB_SECRET" }} }}
            [pipelines.events]
            sink = "events-sink"
            transforms = [{{ jq = ". + {{source: \"webhook\"}}" }}]
            "#,
            sink = couchdb_plugins::connection("events-sink", "couchdb-sink", &couch.origin(), &db)
        ),
    )
    .await;
    let body = r#"{"type":"order.created","order":42}"#;
    let good = standard_signature(secret, "msg_order_42", now_s(), body);
    let (status, first) = h.hook("events", &good, body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The same delivery again is the sender retrying: the same answer,
    // and (below) the event reaches the sink once.
    let (status, again) = h.hook("events", &good, body).await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, &first), "{again}");
    // Senders built on Svix send the same headers as `svix-*`.
    let svix_body = r#"{"type":"order.created","order":7}"#;
    let svix: serde_json::Map<String, Value> =
        standard_signature(secret, "msg_svix_7", now_s(), svix_body)
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.replace("webhook-", "svix-"), v.clone()))
            .collect();
    let (status, err) = h.hook("events", &Value::Object(svix), svix_body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{err}");
    // A signature over another body, a stale one, and none at all.
    let tampered = r#"{"type":"order.created","order":43}"#;
    assert_eq!(
        h.hook("events", &good, tampered).await.0,
        StatusCode::UNAUTHORIZED
    );
    let stale = standard_signature(secret, "msg_old", now_s() - 600, body);
    let (status, err) = h.hook("events", &stale, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["kind"], "stale");
    let (status, err) = h.hook("events", &json!({}), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook-id")
    );
    // GitHub's published test vector passes verification; its body is not
    // JSON, so the receiver refuses it and it is dead-lettered at once.
    let github = json!({
        "x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "x-github-delivery": "gh-delivery-1",
    });
    assert_eq!(
        h.hook("github", &github, "Hello, World!").await.0,
        StatusCode::ACCEPTED
    );
    // Its delivery id is outside the signature: a captured request with a
    // new one is still a replay.
    let mut replayed = github.clone();
    replayed["x-github-delivery"] = json!("gh-delivery-forged");
    let (status, err) = h.hook("github", &replayed, "Hello, World!").await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // The event reaches the sink once, transformed.
    let doc_url = format!("/{db}/msg_order_42");
    eventually("the event in pouchdb", || {
        switchyard_tests::pouchdb::request(couch.addr, "GET", &doc_url, None)
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    let doc = couch.get(&doc_url);
    assert_eq!(
        (doc["order"].clone(), doc["source"].clone()),
        (json!(42), json!("webhook"))
    );
    let hooks = h.get("/v1/hooks").await;
    assert_eq!(hooks["webhooks"]["events"]["accepted"], 2, "{hooks}");
    assert_eq!(hooks["webhooks"]["events"]["duplicates"], 1, "{hooks}");
    let rejected = &hooks["webhooks"]["events"]["rejected"];
    assert_eq!(
        (
            rejected["replayed"].clone(),
            rejected["bad-signature"].clone()
        ),
        (Value::Null, json!(1))
    );
    assert_eq!(
        hooks["webhooks"]["github"]["rejected"]["replayed"], 1,
        "{hooks}"
    );
    assert_eq!(
        (rejected["stale"].clone(), rejected["missing"].clone()),
        (json!(1), json!(1))
    );
    let mut letters = Value::Null;
    for _ in 0..200 {
        letters = h.get("/v1/dlq?queue=hook:github").await;
        if letters["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["id"], "gh-delivery-1", "{letters}");
    assert_eq!(letter["reason"], "invalid-input error");
    assert_eq!(couch.doc_count(&db), 1, "delivered once");
}

/// A `_bulk_docs` endpoint that fails with 503 until told to recover.
async fn flaky_couch() -> (
    SocketAddr,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<Value>>>,
) {
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let docs = Arc::new(Mutex::new(Vec::new()));
    let (u, c, d) = (up.clone(), calls.clone(), docs.clone());
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (up, calls, docs) = (u.clone(), c.clone(), d.clone());
        async move {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            if !up.load(Ordering::SeqCst) {
                // Down: every other call hangs past the host's first-byte
                // timeout, the rest fail fast with 503.
                if call % 2 == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "{\"error\":\"down\"}".to_owned(),
                );
            }
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            let batch = body["docs"].as_array().cloned().unwrap_or_default();
            let answer: Vec<Value> = batch
                .iter()
                .map(|doc| json!({"ok": true, "id": doc["_id"], "rev": "1-a"}))
                .collect();
            docs.lock().unwrap().extend(batch);
            (StatusCode::CREATED, Value::from(answer).to_string())
        }
    });
    let addr = switchyard_tests::serve_on_loopback(app).await;
    (addr, up, calls, docs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_sends_records_through_retries_to_the_dlq_and_replay_delivers() {
    let (addr, up, calls, docs) = flaky_couch().await;
    let origin = format!("http://{addr}");
    let h = host(
        std::slice::from_ref(&origin),
        &format!(
            r#"
            [limits]
            http_first_byte_timeout_ms = 200
            {sink}
            [pipelines.orders]
            sink = "flaky"
            batch_size = 10
            retry = {{ max_attempts = 3, base_delay_ms = 10, max_delay_ms = 20 }}
            "#,
            sink = couchdb_plugins::connection("flaky", "couchdb-sink", &origin, "orders")
        ),
    )
    .await;
    let messages: Vec<_> = (0..5)
        .map(|i| switchyard_runtime::Message {
            id: format!("order-{i}"),
            stream: "orders".into(),
            key: None,
            headers: vec![],
            payload: format!("{{\"_id\":\"order-{i}\",\"total\":{i}}}").into_bytes(),
            timestamp_ms: 0,
        })
        .collect();
    let queue = h.queue.clone();
    queue.enqueue("pipeline:orders", &messages).unwrap();
    h.pipelines.wake();
    eventually("5 dead letters", || {
        queue.stats("pipeline:orders").unwrap().dead == 5
    })
    .await;
    assert!(
        calls.load(Ordering::SeqCst) >= 3,
        "retried before giving up"
    );
    let letters = h.get("/v1/dlq?queue=pipeline:orders").await;
    let first = &letters["dead_letters"][0];
    assert_eq!(first["attempts"], 3, "{letters}");
    assert_eq!(first["reason"], "gave up after 3 attempts");
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .starts_with("retryable")
    );
    let errors = letters.to_string();
    assert!(
        errors.contains("timeout") || errors.contains("503"),
        "timeouts and 5xx both end as retryable failures: {letters}"
    );
    let shown = h.get(&format!("/v1/dlq/{}", first["seq"])).await;
    assert!(
        shown["message"]["payload"]
            .as_str()
            .unwrap()
            .contains("order-0")
    );
    assert!(docs.lock().unwrap().is_empty());

    up.store(true, Ordering::SeqCst);
    let (status, replayed) = h.post("/v1/dlq/replay?queue=pipeline:orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["replayed"], 5);
    eventually("replayed records delivered", || {
        queue.stats("pipeline:orders").unwrap().done == 5
    })
    .await;
    let mut ids: Vec<String> = docs
        .lock()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["order-0", "order-1", "order-2", "order-3", "order-4"]);
    let pipelines = h.get("/v1/pipelines").await;
    assert_eq!(pipelines["pipelines"]["orders"]["dead"], 0, "{pipelines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sync_copies_10000_documents_incrementally_and_exactly() {
    let couch = pouchdb();
    let (src, dst) = (couch.fresh_db("src"), couch.fresh_db("dst"));
    let docs: Vec<Value> = (0..10_000)
        .map(|i| json!({ "_id": format!("doc-{i:05}"), "n": i, "name": format!("record {i}") }))
        .collect();
    couch.bulk_insert(&src, &docs);
    // SAFETY: only this test reads these; set before the host starts.
    unsafe {
        std::env::set_var("SWITCHYARD_TEST_SYNC_KEY", "sync-key-for-copy");
        std::env::set_var("SWITCHYARD_TEST_OTHER_KEY", "key-for-something-else");
    }
    let h = host(
        &[couch.origin()],
        &format!(
            r#"
            {source}
            {sink}
            [syncs.copy]
            source = "couch-src"
            streams = ["{src}"]
            sink = "couch-dst"
            page_size = 1000
            [access.keys.scheduler]
            secret = {{ env = "SWITCHYARD_TEST_SYNC_KEY" }}
            syncs = ["copy"]
            [access.keys.other]
            secret = {{ env = "SWITCHYARD_TEST_OTHER_KEY" }}
            connections = ["couch-dst"]
            "#,
            source =
                couchdb_plugins::connection("couch-src", "couchdb-source", &couch.origin(), &src),
            sink = couchdb_plugins::connection("couch-dst", "couchdb-sink", &couch.origin(), &dst),
        ),
    )
    .await;
    let started = Instant::now();
    let (status, first) = h.post("/v1/syncs/copy/run").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let report = &first["report"];
    assert_eq!(
        (report["read"].clone(), report["written"].clone()),
        (json!(10_000), json!(10_000)),
        "{report}"
    );
    assert_eq!(report["error"], Value::Null);
    eprintln!("first sync of 10,000 documents: {:?}", started.elapsed());
    assert_eq!(pouchdb().snapshot(&src), pouchdb().snapshot(&dst));

    // More documents, updates and deletions: the next run reads only what
    // changed since the committed cursor.
    let more: Vec<Value> = (10_000..10_500)
        .map(|i| json!({ "_id": format!("doc-{i:05}"), "n": i }))
        .collect();
    couch.bulk_insert(&src, &more);
    let current = couch.all_docs(&src);
    let mut edits: Vec<Value> = current[..100]
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d["name"] = json!("updated");
            d
        })
        .collect();
    edits.extend(
        current[100..150]
            .iter()
            .map(|d| json!({ "_id": d["_id"], "_rev": d["_rev"], "_deleted": true })),
    );
    couch.bulk_insert(&src, &edits);
    // Running a sync takes the admin token or a key naming the sync.
    let run_as = |key: Option<&str>| {
        let mut request = Request::post("/v1/syncs/copy/run");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        h.send(request.body(Body::empty()).unwrap())
    };
    let (status, body) = run_as(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["kind"], "missing_key");
    let (status, body) = run_as(Some("key-for-something-else")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[access.keys.other]"),
        "{body}"
    );
    let (status, second) = run_as(Some("sync-key-for-copy")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let report = &second["report"];
    assert_eq!(report["read"], 650, "{report}");
    assert_eq!(report["failed"], 0);
    assert_eq!(pouchdb().snapshot(&src), pouchdb().snapshot(&dst));
    assert_eq!(couch.doc_count(&dst), 10_450);
    // Nothing new: nothing read.
    let (_, third) = h.post("/v1/syncs/copy/run").await;
    assert_eq!(third["report"]["read"], 0);
    let syncs = h.get("/v1/syncs").await;
    assert_eq!(syncs["syncs"]["copy"]["runs"].as_array().unwrap().len(), 3);
    assert!(h.syncs.configs().contains_key("copy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_sync_reads_everything_every_run() {
    let couch = pouchdb();
    let (src, dst) = (couch.fresh_db("full-src"), couch.fresh_db("full-dst"));
    let docs: Vec<Value> = (0..25)
        .map(|i| json!({ "_id": format!("d{i}"), "n": i }))
        .collect();
    couch.bulk_insert(&src, &docs);
    let h = host(
        &[couch.origin()],
        &format!(
            r#"
            {source}
            {sink}
            [syncs.refresh]
            source = "couch-src"
            streams = ["{src}"]
            sink = "couch-dst"
            mode = "full-refresh"
            page_size = 10
            "#,
            source =
                couchdb_plugins::connection("couch-src", "couchdb-source", &couch.origin(), &src),
            sink = couchdb_plugins::connection("couch-dst", "couchdb-sink", &couch.origin(), &dst),
        ),
    )
    .await;
    for _ in 0..2 {
        let (_, run) = h.post("/v1/syncs/refresh/run").await;
        assert_eq!(run["report"]["read"], 25, "{run}");
        assert_eq!(run["report"]["written"], 25);
    }
    assert_eq!(pouchdb().snapshot(&src), pouchdb().snapshot(&dst));
}

/// Pipeline records as a flow observer sees them.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    dead: AtomicU64,
}

impl FlowObserver for Tally {
    fn records(&self, event: &RecordsEvent<'_>) {
        if event.flow == "pipeline" {
            self.delivered
                .fetch_add(event.records_out, Ordering::SeqCst);
            self.dead.fetch_add(event.failed, Ordering::SeqCst);
        }
    }
}

/// Pipeline `p` (declared by `config`, TOML) from the `bench-transform`
/// guest's transform into its null-sink `write` (which refuses a message
/// with header `bench-refuse: KIND`), on a queue file in a temp dir.
async fn bench_pipeline(
    config: &str,
) -> (
    Arc<Pipelines>,
    Arc<SqliteQueue>,
    Arc<Tally>,
    tempfile::TempDir,
) {
    let tally = Arc::new(Tally::default());
    let runtime =
        switchyard_tests::runtime_from(Runtime::builder(), &[("bench-transform", "bench")]).await;
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("queue.sqlite")).unwrap());
    let config: PipelineConfig = toml::from_str(config).unwrap();
    let pipelines = Arc::new(
        Pipelines::new(
            runtime.clone(),
            queue.clone(),
            &BTreeMap::new(),
            &BTreeMap::from([("p".to_owned(), config)]),
            runtime.secret_provider(),
        )
        .unwrap()
        .with_observers(FlowObservers::new(vec![tally.clone()])),
    );
    (pipelines, queue, tally, dir)
}

/// Contact record `i`, refused by the sink with `refuse` if given.
fn contact(i: usize, refuse: Option<&str>) -> switchyard_runtime::Message {
    switchyard_runtime::Message {
        id: format!("contact-{i}"),
        stream: "contacts".into(),
        key: None,
        headers: refuse
            .map(|kind| vec![("bench-refuse".to_owned(), kind.to_owned())])
            .unwrap_or_default(),
        payload: bench_transform::record::sample_record(i),
        timestamp_ms: 0,
    }
}

async fn drained(queue: &SqliteQueue) -> QueueStats {
    let mut stats = queue.stats("pipeline:p").unwrap();
    let started = Instant::now();
    while stats.ready + stats.in_flight > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out draining: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = queue.stats("pipeline:p").unwrap();
    }
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_deliver_every_record_once_and_settle_each_by_its_outcome() {
    let (pipelines, queue, tally, _dir) = bench_pipeline(
        r#"
        transforms = [{ connection = "bench" }]
        sink = "bench"
        batch_size = 7
        workers = 3
        retry = { max_attempts = 2, base_delay_ms = 0, max_delay_ms = 0 }
        "#,
    )
    .await;
    // Every tenth record is refused for good, every tenth but five
    // retryably (twice, so it is dead-lettered after max_attempts).
    let records: Vec<_> = (0..300)
        .map(|i| {
            contact(
                i,
                match i % 10 {
                    0 => Some("permanent"),
                    5 => Some("retryable"),
                    _ => None,
                },
            )
        })
        .collect();
    let workers = pipelines.start().await;
    for chunk in records.chunks(50) {
        queue.enqueue("pipeline:p", chunk).unwrap();
        pipelines.wake();
    }
    let stats = drained(&queue).await;
    for w in workers {
        w.abort();
    }
    assert_eq!(
        stats,
        QueueStats {
            done: 240,
            dead: 60,
            ..QueueStats::default()
        }
    );
    // Acked once each: no batch was settled twice across workers. The
    // observers hear of a settlement after it commits, so the last one
    // may still be on its way when the queue reads drained.
    let settled = Instant::now();
    while tally.delivered.load(Ordering::SeqCst) + tally.dead.load(Ordering::SeqCst) < 300
        && settled.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tally.delivered.load(Ordering::SeqCst), 240);
    assert_eq!(tally.dead.load(Ordering::SeqCst), 60);
    let letters = queue.dead_letters(Some("pipeline:p"), 100).unwrap();
    assert_eq!(letters.len(), 60);
    for letter in letters {
        let i: usize = letter.id["contact-".len()..].parse().unwrap();
        if i.is_multiple_of(10) {
            assert_eq!(
                (letter.attempts, letter.reason.as_str()),
                (1, "permanent error")
            );
        } else {
            assert_eq!(i % 10, 5);
            assert_eq!(
                (letter.attempts, letter.reason.as_str()),
                (2, "gave up after 2 attempts")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_but_not_acked_before_a_restart_are_delivered_again() {
    let (pipelines, queue, tally, _dir) = bench_pipeline(
        r#"
        transforms = [{ connection = "bench" }]
        sink = "bench"
        batch_size = 4
        workers = 2
        "#,
    )
    .await;
    let records: Vec<_> = (0..20).map(|i| contact(i, None)).collect();
    queue.enqueue("pipeline:p", &records).unwrap();
    // A previous host claimed and wrote a batch, then died before its ack.
    let claimed = queue
        .claim("pipeline:p", 8, Duration::from_secs(3600))
        .unwrap();
    let written = pipelines.queue().stats("pipeline:p").await.unwrap();
    assert_eq!((claimed.len(), written.in_flight), (8, 8));
    let workers = pipelines.start().await;
    let stats = drained(&queue).await;
    for w in workers {
        w.abort();
    }
    assert_eq!(
        stats,
        QueueStats {
            done: 20,
            ..QueueStats::default()
        }
    );
    assert_eq!(tally.delivered.load(Ordering::SeqCst), 20);
}

#[test]
fn pipeline_workers_default_to_one() {
    // (0 is refused by the host's config unless it is in a cluster.)
    let config: PipelineConfig = toml::from_str("sink = \"s\"").unwrap();
    assert_eq!((config.workers, config.batch_size), (1, 100));
}

/// A sink whose per-message error quotes a secret's value (one it learned
/// somehow): the dead letter's `last_error`, the delivery warning and the
/// admin view hold `[redacted]` instead.
#[tokio::test]
async fn a_sink_error_quoting_a_secret_is_dead_lettered_redacted() {
    let canary = switchyard_tests::canary();
    // SAFETY: only this test reads or writes this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_SINK_TOKEN", &canary) };
    let dir = tempfile::tempdir().unwrap();
    let runtime = switchyard_tests::runtime_with_a_leaky_guest(
        dir.path(),
        "sink",
        "SWITCHYARD_TEST_SINK_TOKEN",
    )
    .await;
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("queue.sqlite")).unwrap());
    let pipeline: PipelineConfig = toml::from_str("sink = \"sink\"").unwrap();
    let pipelines = Arc::new(
        Pipelines::new(
            runtime.clone(),
            queue.clone(),
            &BTreeMap::new(),
            &BTreeMap::from([("p".to_owned(), pipeline)]),
            runtime.secret_provider(),
        )
        .unwrap(),
    );
    queue.enqueue("pipeline:p", &[contact(1, None)]).unwrap();
    let workers = pipelines.start().await;
    eventually("the dead letter", || {
        queue.stats("pipeline:p").unwrap().dead == 1
    })
    .await;
    workers.iter().for_each(|w| w.abort());
    let letters = queue.dead_letters(Some("pipeline:p"), 10).unwrap();
    let (letter, message) = queue.dead_letter_message(letters[0].seq).unwrap().unwrap();
    let shown = switchyard_flows::queue::dead_letter_view(&letter, &message).to_string();
    assert!(!shown.contains(&canary), "{shown}");
    assert!(letter.last_error.contains("[redacted]"), "{shown}");
}
