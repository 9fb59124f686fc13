//! One canary through every path out of the host (issue 13, item 2).
//!
//! A whole host built from config runs a sync whose source, transform and
//! sink are a guest that learned the value of its own secret and says it
//! everywhere it can: in message ids, keys, header names and values, the
//! cursor, per-message write errors, an action's output and its log lines.
//! Afterwards the value is nowhere: not in a log line (every thread, every
//! level), the queue and dead letters, the audit trail, the monitor's
//! store, the alert webhook's deliveries, the admin API, the operator
//! routes, the metrics or the status page. The dead letters say
//! `[redacted]`, which shows the canary did travel those paths.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_broker::secrets::SecretValue;
use switchyard_host::SwitchyardConfig;
use switchyard_tests::logs::Captured;
use switchyard_tests::{canary, guest};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "canary-paths-admin-token";

/// Alert deliveries, as received.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<Vec<Bytes>>>);

async fn receive(State(d): State<Deliveries>, body: Bytes) -> StatusCode {
    d.0.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, String) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_reaches_no_log_store_api_page_or_alert() {
    let canary = canary();
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let deliveries = Deliveries::default();
    let alerts = axum::Router::new()
        .route("/alerts", axum::routing::post(receive))
        .with_state(deliveries.clone());
    let alert_url = format!(
        "http://{}/alerts",
        switchyard_tests::serve_on_loopback(alerts).await
    );
    // SAFETY: only this test binary reads these; set before the host starts.
    unsafe {
        std::env::set_var("SWITCHYARD_TEST_PATHS_TOKEN", &canary);
        std::env::set_var("SWITCHYARD_TEST_PATHS_ADMIN", ADMIN_TOKEN);
        std::env::set_var(
            "SWITCHYARD_TEST_PATHS_ALERT",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("guest-misbehave"), plugins.join("misbehave.wasm")).unwrap();
    std::fs::write(
        plugins.join("misbehave.manifest.toml"),
        "secrets = [\"token\"]\n",
    )
    .unwrap();
    // Each connection holds the canary as its secret `token` and, as a
    // guest that learned it would, as its plain `leak` setting.
    let connection = |name: &str, tally: u32| {
        format!(
            r#"
            [connections.{name}]
            plugin = "misbehave"
            config = {{ leak = "{canary}", tally = {tally} }}
            [connections.{name}.grants.secrets.token]
            env = "SWITCHYARD_TEST_PATHS_TOKEN"
            "#
        )
    };
    let text = format!(
        r#"
        data_dir = "data"
        plugin_dir = "plugins"
        [admin]
        token = {{ env = "SWITCHYARD_TEST_PATHS_ADMIN" }}
        [access]
        public = ["leaky-source"]
        [monitoring.webhook]
        url = "{alert_url}"
        secret = {{ env = "SWITCHYARD_TEST_PATHS_ALERT" }}
        retry = {{ max_attempts = 3, base_delay_ms = 20, max_delay_ms = 100 }}
        {source}
        {transform}
        {sink}
        [syncs.s]
        source = "leaky-source"
        streams = ["orders"]
        transforms = [{{ connection = "leaky-transform" }}]
        sink = "leaky-sink"
        retry = {{ max_attempts = 1 }}
        [syncs.s.reconcile]
        source_action = "tally"
        sink_action = "tally"
        "#,
        source = connection("leaky-source", 5),
        transform = connection("leaky-transform", 0),
        sink = connection("leaky-sink", 3),
    );
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let host = switchyard_host::Host::from_config(&config).await.unwrap();
    host.start().await;
    let router = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(SecretValue::new(ADMIN_TOKEN.into())),
        ..switchyard_server::Services::from_host(&host)
    });

    // A run: the source's page, through the transform, into the sink that
    // refuses every message quoting the canary; the sides' counts differ,
    // so an alert goes out.
    let run = Request::post("/v1/syncs/s/run")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, report) = send(&router, run).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    eprintln!("run: {report}");
    // An action call whose output, log lines and error quote the canary.
    for action in ["tally", "leak", "panic-with", "config"] {
        let call = Request::post(format!("/v1/connectors/leaky-source/actions/{action}"))
            .body(Body::from("\"x\""))
            .unwrap();
        send(&router, call).await;
    }
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (_, dlq) = get(&router, "/v1/dlq").await;
        let alerted = !deliveries.0.lock().unwrap().is_empty();
        if dlq.contains("[redacted]") && alerted {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no redacted dead letter and alert yet: {dlq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, dlq) = get(&router, "/v1/dlq").await;
    let letters: Value = serde_json::from_str(&dlq).unwrap();
    let seq = letters["dead_letters"][0]["seq"].as_u64().unwrap();
    for path in [
        "/v1/dlq".to_owned(),
        format!("/v1/dlq/{seq}"),
        "/v1/syncs".to_owned(),
        "/v1/pipelines".to_owned(),
        "/v1/connectors".to_owned(),
        "/admin/v1/status".to_owned(),
        "/admin/v1/alerts".to_owned(),
        "/admin/v1/plugins".to_owned(),
        "/admin/v1/audit?limit=10000".to_owned(),
        "/metrics".to_owned(),
        "/status".to_owned(),
    ] {
        let (status, body) = get(&router, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        seen.push((path, body.into_bytes()));
    }
    let shown = String::from_utf8_lossy(&seen[1].1).into_owned();
    assert!(
        shown.contains("[redacted]"),
        "the dead letter carries what the guest said, redacted: {shown}"
    );

    host.audit.as_ref().unwrap().flush();
    drop(router);
    drop(host);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stored = Vec::new();
    files(&dir.path().join("data"), &mut stored);
    assert!(
        stored.iter().any(|(p, _)| p.ends_with("queue.sqlite")),
        "{:?}",
        stored.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, bytes) in &stored {
        if path.contains("/cache/") {
            continue;
        }
        assert!(
            !contains(bytes, canary.as_bytes()),
            "the canary is in {path}"
        );
    }
    let delivered = deliveries.0.lock().unwrap().clone();
    for body in &delivered {
        assert!(
            !contains(body, canary.as_bytes()),
            "alert: {}",
            String::from_utf8_lossy(body)
        );
    }
    for (path, body) in &seen {
        assert!(
            !contains(body, canary.as_bytes()),
            "{path}: {}",
            String::from_utf8_lossy(body)
        );
    }
    let logs = logs.bytes();
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains("leaky-sink"),
        "the logs saw the run: {} bytes",
        logs.len()
    );
    std::fs::write(
        switchyard_tests::log_dir().join("canary-paths.jsonl"),
        &logs,
    )
    .unwrap();
    let hits: Vec<&str> = text.lines().filter(|l| l.contains(&canary)).collect();
    assert!(
        hits.is_empty(),
        "{} log lines hold the canary: {hits:#?}",
        hits.len()
    );
}
