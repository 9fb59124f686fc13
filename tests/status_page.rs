//! The status page (`GET /status`) in a real browser: a host with real
//! guests (echo, greeter, the CouchDB connectors, webhook-receiver) and a
//! real pouchdb-server peer gets real traffic — action calls, two sync
//! runs whose sink silently loses documents (a reconciliation alert), a
//! webhook delivery its receiver refuses (a dead letter) — and is served
//! on loopback; headless Chromium (Debian's, which `./dev setup` installs)
//! loads the page and the test asserts on the DOM it rendered.

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_broker::secrets::SecretValue;
use switchyard_flows::queue::SqliteQueue;
use switchyard_host::SwitchyardConfig;
use switchyard_ops::monitor::AlertKind;
use switchyard_tests::browser::{CHROMIUM, CHROMIUM_FLAGS};
use switchyard_tests::pouchdb::{pouchdb, request_with};
use switchyard_tests::{couchdb_plugins, guest};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "admin-token-for-the-status-page-test";

/// Waits (up to 60 s) for `check`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loads `url` in headless Chromium and returns the DOM once its scripts
/// have run (`--virtual-time-budget` lets timers and fetches settle).
fn chromium_dom(url: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `./dev setup` (it installs Debian's chromium package; CI does)"
    );
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args(CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=8000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "chromium did not finish in 120 s: {}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = std::fs::read_to_string(out.path()).unwrap();
    assert!(
        status.success() && dom.contains("</html>"),
        "chromium failed ({status}): {}",
        std::fs::read_to_string(err.path()).unwrap_or_default()
    );
    dom
}

/// [`chromium_dom`] off the async runtime.
async fn dom_of(url: String) -> String {
    tokio::task::spawn_blocking(move || chromium_dom(&url))
        .await
        .unwrap()
}

/// The markup of the element marked `data-testid="<id>"`, up to the next
/// such mark (the page's sections are siblings, none nested).
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let mark = format!("data-testid=\"{id}\"");
    let start = dom
        .find(&mark)
        .unwrap_or_else(|| panic!("no {mark} in:\n{dom}"));
    let rest = &dom[start + mark.len()..];
    let end = rest.find("data-testid=").unwrap_or(rest.len());
    &dom[start..start + mark.len() + end]
}

/// The opening tag of the element marked `data-testid="<id>"`.
fn opening_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("data-testid=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id}"));
    let open = dom[..at].rfind('<').unwrap();
    &dom[open..at + dom[at..].find('>').unwrap()]
}

/// Requests seen: method and URI, and whether a bearer token came along.
type RequestLog = Arc<Mutex<Vec<(String, bool)>>>;

/// Records every request's method, path and query, and whether it carried
/// the admin token as a bearer header: the page must only ever send the
/// token in that header.
async fn record(log: axum::extract::State<RequestLog>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    log.lock()
        .unwrap()
        .push((format!("{} {}", request.method(), request.uri()), bearer));
    next.run(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_live_host_status_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `./dev setup` (it installs Debian's chromium package; CI does)"
    );
    let couch = pouchdb();
    let src = couch.fresh_db("status-src");
    let dst = couch.fresh_db("status-dst");
    let events = couch.fresh_db("status-events");
    let snap = couch.fresh_db("status-snap");
    let docs: Vec<Value> = (0..20)
        .map(|i| json!({ "_id": format!("doc-{i:03}"), "n": i }))
        .collect();
    couch.bulk_insert(&src, &docs);

    // SAFETY: only this test process's tests write these, with these values.
    unsafe {
        std::env::set_var(couchdb_plugins::AUTH_ENV, "dXNlcjpwYXNz");
        std::env::set_var("SWITCHYARD_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
        std::env::set_var(
            "SWITCHYARD_TEST_GITHUB_SECRET",
            "It's a Secret to Everybody",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    couchdb_plugins::install(&plugins, &[couch.origin()]);
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::copy(guest("guest-greeter-v1"), plugins.join("greeter.wasm")).unwrap();
    let origin = couch.origin();
    let text = format!(
        r#"data_dir = "{data}"
        [admin]
        token = {{ env = "SWITCHYARD_TEST_ADMIN_TOKEN" }}
        {src_conn}{dst_conn}{events_conn}{snap_conn}
        [connections.receiver]
        plugin = "webhook-receiver"
        config = {{ stream_from = "type" }}
        [webhooks.github]
        connection = "receiver"
        pipeline = "events"
        signature = {{ scheme = "github", secret = {{ env = "SWITCHYARD_TEST_GITHUB_SECRET" }} }}
        [pipelines.events]
        sink = "events-sink"
        [syncs.mirror]
        source = "src"
        streams = ["{src}"]
        sink = "dst"
        [syncs.mirror.reconcile]
        source_action = "count"
        sink_action = "count"
        [syncs.snapshot]
        source = "src"
        streams = ["{src}"]
        sink = "snap"
        mode = "full-refresh"
        "#,
        data = dir.path().display(),
        src_conn = couchdb_plugins::connection("src", "couchdb-source", &origin, &src),
        dst_conn = couchdb_plugins::connection("dst", "couchdb-sink", &origin, &dst),
        events_conn = couchdb_plugins::connection("events-sink", "couchdb-sink", &origin, &events),
        snap_conn = couchdb_plugins::connection("snap", "couchdb-sink", &origin, &snap),
    );
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let assembled = switchyard_host::Host::from_config(&config).await.unwrap();
    assembled.start().await;
    let runtime = assembled.runtime.clone();
    let syncs = assembled.syncs.clone().unwrap();
    let log = RequestLog::default();
    let app = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(SecretValue::new(ADMIN_TOKEN.as_bytes().to_vec())),
        ..switchyard_server::Services::from_host(&assembled)
    })
    .layer(axum::middleware::from_fn_with_state(log.clone(), record));

    // Traffic: action calls (one the guest refuses), ...
    for name in ["Ada", "Grace", "Barbara", "Frances", "Radia"] {
        let input = json!({ "name": name }).to_string();
        runtime
            .call_action("echo", "greet", input.as_bytes())
            .await
            .unwrap();
    }
    runtime
        .call_action("greeter", "version", b"null")
        .await
        .unwrap();
    assert!(runtime.call_action("echo", "greet", b"[]").await.is_err());
    // ... a sync whose sink then loses five documents behind its back, so
    // the second run's reconciliation raises an alert, ...
    let first = syncs.run("mirror").await.unwrap();
    assert_eq!((first.read, first.written), (20, 20), "{first:?}");
    let lost: Vec<Value> = couch.all_docs(&dst)[..5]
        .iter()
        .map(|d| json!({ "_id": d["_id"], "_rev": d["_rev"], "_deleted": true }))
        .collect();
    couch.post(&format!("/{dst}/_bulk_docs"), &json!({ "docs": lost }));
    let second = syncs.run("mirror").await.unwrap();
    assert_eq!(second.reconcile.unwrap().sink, Some(15));
    // ... a full-refresh sync (its runs' volumes are recorded), ...
    for _ in 0..2 {
        let run = syncs.run("snapshot").await.unwrap();
        assert_eq!(run.read, 20, "{run:?}");
    }
    let monitor = assembled
        .monitor
        .clone()
        .expect("monitoring is on by default");
    eventually("the reconciliation alert", || {
        monitor
            .alerts(100)
            .iter()
            .any(|a| a.kind == AlertKind::ReconciliationMismatch)
    })
    .await;
    // ... and GitHub's published test delivery, whose body is not JSON:
    // the receiver refuses it, so it is dead-lettered at once.
    let hook = axum::http::Request::post("/v1/hooks/github")
        .header(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .header("x-github-delivery", "gh-delivery-status")
        .body(Body::from("Hello, World!"))
        .unwrap();
    let response = app.clone().oneshot(hook).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let queue = SqliteQueue::open(&config.queue_path()).unwrap();
    eventually("the dead letter", || {
        queue.stats("hook:github").is_ok_and(|s| s.dead == 1)
    })
    .await;

    let addr = switchyard_tests::serve_on_loopback(app).await;

    // The page itself is static, needs no auth and allows no external
    // requests.
    let page = tokio::task::spawn_blocking(move || request_with(addr, "GET", "/status", &[], None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|v| v.starts_with("text/html"))
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(
        !html.contains("src=") && !html.contains("href=") && !html.contains("@import"),
        "the page loads nothing else"
    );

    // With the token in the fragment: everything renders.
    let dom = dom_of(format!("http://{addr}/status#token={ADMIN_TOKEN}")).await;
    assert!(
        opening_tag(&dom, "error").contains("hidden"),
        "an error shows:\n{dom}"
    );
    assert!(
        section(&dom, "updated").contains("Updated"),
        "not rendered:\n{dom}"
    );
    assert!(!dom.contains(ADMIN_TOKEN), "the token is in the DOM");
    assert!(section(&dom, "health").contains(">ok<"), "{dom}");

    let plugins = section(&dom, "plugins");
    for needle in [
        "<th scope=\"row\">echo</th><td>0.1.0</td><td>echo</td>",
        "<th scope=\"row\">greeter</th><td>1.0.0</td><td>greeter</td>",
        "<th scope=\"row\">couchdb-sink</th><td>0.1.0</td><td>dst, events-sink, snap</td>",
        "<th scope=\"row\">couchdb-source</th><td>0.1.0</td><td>src</td>",
        "<th scope=\"row\">webhook-receiver</th>",
    ] {
        assert!(plugins.contains(needle), "no {needle} in:\n{plugins}");
    }

    let charts = section(&dom, "charts");
    for series in ["invocations", "errors", "p50", "p99", "in", "out"] {
        assert!(
            charts.contains("<path d=\"M") && charts.contains(&format!("data-series=\"{series}\"")),
            "no {series} line in:\n{charts}"
        );
    }
    assert!(
        charts.contains("<circle"),
        "no points for the busy buckets:\n{charts}"
    );
    assert!(charts.contains("role=\"img\""));
    assert!(
        charts.contains("<title>Throughput (calls per bucket): latest invocations "),
        "{charts}"
    );
    let volumes = section(&dom, "volumes");
    assert!(
        volumes.contains(&format!("sync snapshot / {src}")) && volumes.contains("<path d=\"M"),
        "no volume chart of the sync:\n{volumes}"
    );

    let alerts = section(&dom, "alerts");
    assert!(
        alerts.contains("<th scope=\"row\">reconciliation_mismatch</th><td>sync:mirror</td>"),
        "{alerts}"
    );
    let dlq = section(&dom, "dlq");
    assert!(
        dlq.contains("<th scope=\"row\">hook:github</th><td>1</td>"),
        "{dlq}"
    );
    assert!(
        dlq.contains("<th scope=\"row\">pipeline:sync.mirror</th><td>0</td>"),
        "{dlq}"
    );
    let syncs_html = section(&dom, "syncs");
    assert!(
        syncs_html.contains("<th scope=\"row\">mirror</th>") && syncs_html.contains("20 / 15"),
        "{syncs_html}"
    );
    assert!(
        syncs_html.contains("<th scope=\"row\">snapshot</th>"),
        "{syncs_html}"
    );

    // A wrong token: the page says so and asks for another.
    let dom = dom_of(format!("http://{addr}/status#token=not-the-token")).await;
    let error = section(&dom, "error");
    assert!(
        !opening_tag(&dom, "error").contains("hidden") && error.contains("Unauthorized (401)"),
        "{dom}"
    );
    assert!(!opening_tag(&dom, "token-form").contains("hidden"), "{dom}");

    // No request ever carried a token in its URL, and the page fetched the
    // status with the bearer header.
    let log = log.lock().unwrap();
    assert!(
        log.iter()
            .all(|(line, _)| !line.contains(ADMIN_TOKEN) && !line.contains("not-the-token")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|(line, bearer)| line == "GET /admin/v1/status" && *bearer),
        "{log:?}"
    );
}
