// Over 500 lines: one shared host harness (pouchdb-server, alert sink) and
// a test per alert kind.
//! Monitoring end to end with real peers: full-refresh syncs between
//! pouchdb-server databases whose source shrinks and empties (volume
//! alerts), a sink database that silently loses documents (the CouchDB
//! connectors' `count` actions disagree), and a real guest whose HTTP
//! upstream slows down (latency regression). Every alert must reach a
//! loopback axum receiver, signed so the host's Standard Webhooks
//! verifier accepts it, and show in the admin API.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use switchyard_broker::secrets::SecretValue;
use switchyard_flows::sync::Syncs;
use switchyard_flows::webhooks::{SignatureScheme, sign_standard_webhooks, verify};
use switchyard_host::SwitchyardConfig;
use switchyard_ops::monitor::{AlertKind, Monitor};
use switchyard_runtime::Runtime;
use switchyard_tests::pouchdb::{PouchDb, pouchdb, request};
use switchyard_tests::{couchdb_plugins, guest};
use tower::ServiceExt;

const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_TOKEN: &str = "admin-token-for-monitor-tests";

/// One delivery: its headers and body.
type Delivery = (Vec<(String, String)>, Bytes);

/// Alert deliveries a loopback receiver got: headers and body. It answers
/// 503 to the first `fail_first` deliveries, so retries are exercised.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    r.got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

async fn receiver(fail_first: usize) -> (String, Receiver) {
    let r = Receiver::default();
    r.fail_first.store(fail_first, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/alerts", axum::routing::post(receive))
        .with_state(r.clone());
    let url = format!(
        "http://{}/alerts",
        switchyard_tests::serve_on_loopback(app).await
    );
    (url, r)
}

impl Receiver {
    /// Every delivery's body, each checked with the host's verifier.
    fn verified(&self) -> Vec<Value> {
        let secret = SecretValue::new(ALERT_SECRET.as_bytes().to_vec());
        let scheme = SignatureScheme::StandardWebhooks { tolerance_s: 300 };
        let got = self.got.lock().unwrap();
        got.iter()
            .map(|(headers, body)| {
                let verified = verify(&scheme, &secret, headers, body, SystemTime::now())
                    .unwrap_or_else(|e| panic!("alert webhook does not verify: {e}"));
                let body: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(verified.delivery_id, body["data"]["id"].as_str().unwrap());
                body
            })
            .collect()
    }

    /// Waits (up to 60 s) for a verified delivery of `kind`.
    async fn wait_for(&self, kind: &str) -> Value {
        let started = Instant::now();
        loop {
            let found = self
                .verified()
                .into_iter()
                .find(|b| b["type"] == format!("alert.{kind}"));
            if let Some(body) = found {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {kind} alert delivered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Host {
    runtime: Runtime,
    /// `None` when the config has no webhook, pipeline or sync.
    syncs: Option<Arc<Syncs>>,
    monitor: Option<Monitor>,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

/// A host from `config` with the CouchDB connectors installed (and the
/// http-probe guest, allowed to reach `probe_upstream`, when given),
/// alerts going to `alert_url`.
async fn host(
    origins: &[String],
    probe_upstream: Option<&str>,
    alert_url: &str,
    config: &str,
) -> Host {
    // SAFETY: every test sets the same values; nothing else writes them.
    unsafe {
        std::env::set_var(couchdb_plugins::AUTH_ENV, "dXNlcjpwYXNz");
        std::env::set_var("SWITCHYARD_TEST_ALERT_SECRET", ALERT_SECRET);
        std::env::set_var("SWITCHYARD_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    }
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    couchdb_plugins::install(&plugins, origins);
    if let Some(upstream) = probe_upstream {
        std::fs::copy(guest("guest-http-probe"), plugins.join("http-probe.wasm")).unwrap();
        let manifest = format!(
            "http = [\"{upstream}\"]\nsecrets = [\"base-token\"]\nrate_limits = [\"spare\"]\nstate = true\n"
        );
        std::fs::write(plugins.join("http-probe.manifest.toml"), manifest).unwrap();
    }
    let text = format!(
        r#"data_dir = "{}"
        [admin]
        token = {{ env = "SWITCHYARD_TEST_ADMIN_TOKEN" }}
        [monitoring.webhook]
        url = "{alert_url}"
        secret = {{ env = "SWITCHYARD_TEST_ALERT_SECRET" }}
        retry = {{ max_attempts = 5, base_delay_ms = 20, max_delay_ms = 200 }}
        {config}"#,
        dir.path().display()
    );
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let assembled = switchyard_host::Host::from_config(&config).await.unwrap();
    assembled.start().await;
    let router = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(SecretValue::new(ADMIN_TOKEN.as_bytes().to_vec())),
        ..switchyard_server::Services::from_host(&assembled)
    });
    Host {
        runtime: assembled.runtime.clone(),
        syncs: assembled.syncs.clone(),
        monitor: assembled.monitor.clone(),
        router,
        _dir: dir,
    }
}

impl Host {
    async fn admin(&self, path: &str) -> Value {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn syncs(&self) -> &Syncs {
        self.syncs.as_ref().expect("the config has syncs")
    }

    fn alert_kinds(&self) -> Vec<AlertKind> {
        let monitor = self.monitor.as_ref().expect("monitoring is on by default");
        monitor
            .alerts(100)
            .into_iter()
            .rev()
            .map(|a| a.kind)
            .collect()
    }
}

fn docs(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "_id": format!("{prefix}-{i:03}"), "n": i }))
        .collect()
}

/// Drops and recreates `db` with `n` documents.
fn refill(couch: &PouchDb, db: &str, n: usize) {
    let deleted = request(couch.addr, "DELETE", &format!("/{db}"), None).unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    couch.create_db(db);
    if n > 0 {
        couch.bulk_insert(db, &docs("again", n));
    }
}

fn sync_config(couch: &PouchDb, src: &str, dst: &str, sync: &str) -> String {
    format!(
        "{}{}{sync}",
        couchdb_plugins::connection("src", "couchdb-source", &couch.origin(), src),
        couchdb_plugins::connection("dst", "couchdb-sink", &couch.origin(), dst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_runs_that_shrink_raise_volume_drop_then_volume_zero() {
    let couch = pouchdb();
    let src = couch.fresh_db("mon-vol-src");
    let dst = couch.fresh_db("mon-vol-dst");
    couch.bulk_insert(&src, &docs("doc", 40));
    let (url, received) = receiver(1).await;
    let sync = format!(
        r#"
        [syncs.snapshot]
        source = "src"
        streams = ["{src}"]
        sink = "dst"
        mode = "full-refresh"
        "#
    );
    let h = host(
        &[couch.origin()],
        None,
        &url,
        &sync_config(couch, &src, &dst, &sync),
    )
    .await;
    for _ in 0..3 {
        let report = h.syncs().run("snapshot").await.unwrap();
        assert_eq!((report.read, report.written), (40, 40), "{report:?}");
    }
    assert_eq!(
        h.alert_kinds(),
        [],
        "three steady runs are a baseline, not an alert"
    );

    refill(couch, &src, 10);
    let report = h.syncs().run("snapshot").await.unwrap();
    assert_eq!(report.read, 10);
    let drop = received.wait_for("volume_drop").await;
    assert_eq!(drop["data"]["subject"], format!("sync:snapshot/{src}"));
    assert_eq!(
        (
            drop["data"]["observed"].as_f64(),
            drop["data"]["baseline"].as_f64()
        ),
        (Some(10.0), Some(40.0))
    );

    refill(couch, &src, 0);
    let report = h.syncs().run("snapshot").await.unwrap();
    assert_eq!((report.read, report.error), (0, None));
    let zero = received.wait_for("volume_zero").await;
    assert_eq!(zero["data"]["observed"].as_f64(), Some(0.0));
    assert_eq!(zero["data"]["baseline"].as_f64(), Some(40.0));
    assert!(zero["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        h.alert_kinds(),
        [AlertKind::VolumeDrop, AlertKind::VolumeZero],
        "every record was accounted for, so no reconciliation alert"
    );
    let listed = h.admin("/admin/v1/alerts?limit=1").await;
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(listed["alerts"][0]["kind"], "volume_zero");
    let status = h.admin("/admin/v1/status").await;
    let volumes = status["volumes"].as_array().unwrap();
    let counts: Vec<u64> = volumes[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [40, 40, 40, 10, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_silently_loses_documents_raises_reconciliation_mismatch() {
    let couch = pouchdb();
    let src = couch.fresh_db("mon-rec-src");
    let dst = couch.fresh_db("mon-rec-dst");
    couch.bulk_insert(&src, &docs("doc", 20));
    let (url, received) = receiver(0).await;
    let sync = format!(
        r#"
        [syncs.mirror]
        source = "src"
        streams = ["{src}"]
        sink = "dst"
        [syncs.mirror.reconcile]
        source_action = "count"
        sink_action = "count"
        "#
    );
    let h = host(
        &[couch.origin()],
        None,
        &url,
        &sync_config(couch, &src, &dst, &sync),
    )
    .await;
    let first = h.syncs().run("mirror").await.unwrap();
    let counts = first.reconcile.clone().unwrap();
    assert_eq!(
        (counts.source, counts.sink, counts.error),
        (Some(20), Some(20), None)
    );
    assert_eq!(h.alert_kinds(), []);

    // Five documents vanish from the sink behind the sync's back.
    let lost: Vec<Value> = couch.all_docs(&dst)[..5]
        .iter()
        .map(|d| json!({ "_id": d["_id"], "_rev": d["_rev"], "_deleted": true }))
        .collect();
    couch.post(&format!("/{dst}/_bulk_docs"), &json!({ "docs": lost }));
    let second = h.syncs().run("mirror").await.unwrap();
    assert_eq!(second.read, 0, "incremental: nothing new to read");
    assert_eq!(second.reconcile.unwrap().sink, Some(15));
    let alert = received.wait_for("reconciliation_mismatch").await;
    assert_eq!(alert["data"]["subject"], "sync:mirror");
    assert_eq!(alert["data"]["observed"].as_f64(), Some(15.0));
    assert_eq!(alert["data"]["baseline"].as_f64(), Some(20.0));
    // An incremental sync reading nothing is normal: no volume alert.
    assert_eq!(h.alert_kinds(), [AlertKind::ReconciliationMismatch]);

    let status = h.admin("/admin/v1/status").await;
    assert_eq!(status["health"]["status"], "ok");
    assert_eq!(status["alerts"][0]["kind"], "reconciliation_mismatch");
    assert_eq!(status["syncs"]["mirror"]["reconcile"]["sink"], 15);
    assert_eq!(status["dlq"]["pipeline:sync.mirror"], 0);
    assert_eq!(status["series"].as_array().unwrap().len(), 360);
    let records_in: u64 = status["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records_in"].as_u64().unwrap())
        .sum();
    assert_eq!(records_in, 20);
    let sink = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "couchdb-sink")
        .unwrap();
    assert_eq!(sink["connections"], json!(["dst"]));
}

/// An upstream answering `GET /` after `delay` milliseconds.
async fn slow_upstream(delay: Arc<AtomicU64>) -> String {
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|State(delay): State<Arc<AtomicU64>>| async move {
                let ms = delay.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "ok"
            }),
        )
        .with_state(delay);
    let origin = format!("http://{}", switchyard_tests::serve_on_loopback(app).await);
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_slow_down_raise_latency_regression() {
    let delay = Arc::new(AtomicU64::new(0));
    let upstream = slow_upstream(delay.clone()).await;
    let (url, received) = receiver(0).await;
    // SAFETY: only this test writes it.
    unsafe { std::env::set_var("SWITCHYARD_TEST_PROBE_TOKEN", switchyard_tests::canary()) };
    let probe = format!(
        r#"
        [limits]
        http_destination_per_second = 100000
        [monitoring]
        latency_window_secs = 1
        [connections.probe]
        plugin = "http-probe"
        [connections.probe.grants]
        allow = ["{upstream}"]
        state = true
        secrets.base-token = {{ env = "SWITCHYARD_TEST_PROBE_TOKEN" }}
        rate_limits.spare = {{ per_second = 100000, burst = 100000 }}
        "#
    );
    let h = host(&[], Some(&upstream), &url, &probe).await;
    let monitor = h.monitor.clone().unwrap();
    let input = json!({ "url": format!("{upstream}/") }).to_string();
    let call = |runtime: Runtime, input: String| async move {
        let out = runtime
            .call_action("probe", "fetch", input.as_bytes())
            .await
            .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["status"], 200, "{out}");
    };
    let batch = |n: usize| {
        let calls: Vec<_> = (0..n)
            .map(|_| tokio::spawn(call(h.runtime.clone(), input.clone())))
            .collect();
        async move {
            for c in calls {
                c.await.unwrap();
            }
        }
    };
    // Fast windows until the baseline holds three of them.
    let started = Instant::now();
    while monitor.latency().iter().all(|t| t.windows < 3) {
        assert!(started.elapsed() < Duration::from_secs(120), "no baseline");
        batch(4).await;
    }
    assert_eq!(h.alert_kinds(), []);
    delay.store(300, Ordering::SeqCst);
    let started = Instant::now();
    while !h.alert_kinds().contains(&AlertKind::LatencyRegression) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no regression alert"
        );
        batch(25).await;
    }
    let alert = received.wait_for("latency_regression").await;
    assert_eq!(alert["data"]["subject"], "plugin:http-probe/action/fetch");
    let (observed, baseline) = (
        alert["data"]["observed"].as_f64().unwrap(),
        alert["data"]["baseline"].as_f64().unwrap(),
    );
    assert!(observed >= 300.0 && observed > 2.0 * baseline, "{alert}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_flow_that_stops_raises_volume_zero() {
    let couch = pouchdb();
    let dst = couch.fresh_db("mon-hook-dst");
    let (url, received) = receiver(0).await;
    let config = format!(
        r#"
        [monitoring]
        window_secs = 1
        [connections.receiver]
        plugin = "webhook-receiver"
        config = {{ stream_from = "type" }}
        {sink}
        [webhooks.events]
        connection = "receiver"
        pipeline = "events"
        signature = {{ scheme = "standard-webhooks", secret = {{ env = "SWITCHYARD_TEST_ALERT_SECRET" }} }}
        [pipelines.events]
        sink = "dst"
        "#,
        sink = couchdb_plugins::connection("dst", "couchdb-sink", &couch.origin(), &dst)
    );
    let h = host(&[couch.origin()], None, &url, &config).await;
    let monitor = h.monitor.clone().unwrap();
    let secret = SecretValue::new(ALERT_SECRET.as_bytes().to_vec());
    let busy_windows = |flow: &str| {
        monitor
            .volumes()
            .iter()
            .filter(|v| v.key.flow == flow)
            .map(|v| v.points.iter().filter(|p| p.count > 0).count())
            .max()
            .unwrap_or(0)
    };
    // Steady traffic until three busy windows of it are on record.
    let started = Instant::now();
    let mut n = 0;
    while busy_windows("webhook") < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "no history");
        let body = format!(r#"{{"type":"order","n":{n}}}"#);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let mut hook = Request::post("/v1/hooks/events");
        for (name, value) in
            sign_standard_webhooks(&secret, &format!("msg_{n}"), now.as_secs(), body.as_bytes())
                .unwrap()
        {
            hook = hook.header(name, value);
        }
        let response = h
            .router
            .clone()
            .oneshot(hook.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then the sender goes quiet.
    let started = Instant::now();
    let zero = loop {
        let found = monitor
            .alerts(100)
            .into_iter()
            .find(|a| a.kind == AlertKind::VolumeZero && a.subject == "webhook:events/events");
        if let Some(alert) = found {
            break alert;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no volume_zero"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(zero.baseline > 0.0 && zero.observed == 0.0, "{zero:?}");
    let delivered = received.wait_for("volume_zero").await;
    assert_eq!(delivered["data"]["kind"], "volume_zero");
}
