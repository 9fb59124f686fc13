//! Metrics, the audit trail and span-carrying logs, from real guest
//! traffic: a probe guest calls a real httpbin on 127.0.0.1 with a bearer
//! secret, writes state, signs, runs into a rate-limit bucket, and another
//! guest spins into its deadline. The tests scrape `/metrics` and read the
//! audit SQLite file, through the runtime, the admin API and on disk.
//!
//! The dialer connects only to httpbin and diverts everything else to a
//! loopback sinkhole that must see nothing.

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use switchyard_broker::capabilities::Grants;
use switchyard_broker::egress::BoxFuture;
use switchyard_broker::secrets::SecretValue;
use switchyard_ops::audit::{AuditFilter, AuditKind, AuditLog, AuditRecord};
use switchyard_ops::metrics::Metrics;
use switchyard_runtime::{Dialer, InvokeError, Limits, Network, Runtime, StaticResolver};
use switchyard_tests::httpbin::httpbin;
use switchyard_tests::{canary, guest, log_dir};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Every event of this binary goes to target/test-logs/observability.jsonl,
/// JSON as `--log-format json` writes it (current span and span list).
fn log_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = log_dir().join("observability.jsonl");
        let file = std::fs::File::create(&path).expect("create log");
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(Mutex::new(file))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        path
    })
}

/// Connects to httpbin only; anything else goes to a counting sinkhole.
#[derive(Debug)]
struct OnlyHttpbin {
    sink: SocketAddr,
    diverted: Arc<AtomicUsize>,
}

impl Dialer for OnlyHttpbin {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        let target = if addr == httpbin().addr {
            addr
        } else {
            self.diverted.fetch_add(1, Ordering::SeqCst);
            self.sink
        };
        Box::pin(TcpStream::connect(target))
    }
}

struct Harness {
    runtime: Runtime,
    diverted: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    dir: tempfile::TempDir,
}

const TOKEN_VAR: &str = "SWITCHYARD_TEST_OBS_TOKEN";

/// A runtime with metrics and an audit file, the probe as connection
/// `obs` (httpbin, a bearer secret bound to it, state, a one-permit
/// bucket pacing httpbin) and `guest-misbehave` under a 1.5 s deadline.
async fn harness() -> Harness {
    log_file();
    // SAFETY: every test of this binary sets the same value.
    unsafe { std::env::set_var(TOKEN_VAR, canary()) };
    let dir = tempfile::tempdir().unwrap();
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let diverted = Arc::new(AtomicUsize::new(0));
    let dialer = OnlyHttpbin {
        sink: sink.local_addr().unwrap(),
        diverted: diverted.clone(),
    };
    tokio::spawn(async move { while sink.accept().await.is_ok() {} });
    let audit = AuditLog::open(
        &dir.path().join("audit.sqlite"),
        Duration::from_secs(86_400),
    );
    let limits = Limits {
        deadline_ms: 1_500,
        rate_limit_wait_ms: 50,
        ..Limits::default()
    };
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(audit.unwrap());
    let runtime = Runtime::builder()
        .limits(limits)
        .state_path(dir.path().join("state.sqlite"))
        .network(Network::new(
            Arc::new(StaticResolver::default()),
            Arc::new(dialer),
        ))
        .observer(metrics.clone())
        .observer(audit.clone())
        .build()
        .unwrap();
    let hb = httpbin().origin();
    let probe = dir.path().join("probe.wasm");
    std::fs::copy(guest("guest-http-probe"), &probe).unwrap();
    std::fs::write(
        dir.path().join("probe.manifest.toml"),
        format!(
            "http = [\"{hb}\"]\nsecrets = [\"api-token\"]\nrate_limits = [\"api\"]\nstate = true\n"
        ),
    )
    .unwrap();
    runtime.load_plugin("probe", &probe).await.unwrap();
    let grants: Grants = toml::from_str(&format!(
        r#"allow = ["{hb}"]
        state = true
        secrets.api-token = {{ env = "{TOKEN_VAR}", destinations = ["{hb}"] }}
        rate_limits.api = {{ per_second = 0.1, burst = 1, destinations = ["{hb}"] }}"#
    ))
    .unwrap();
    runtime
        .add_connection_with_grants("obs", "probe", BTreeMap::new(), &grants)
        .unwrap();
    let misbehave = guest("guest-misbehave");
    runtime
        .load_plugin("guest-misbehave", &misbehave)
        .await
        .unwrap();
    runtime
        .add_connection("spin", "guest-misbehave", BTreeMap::new())
        .unwrap();
    Harness {
        runtime,
        diverted,
        metrics,
        audit,
        dir,
    }
}

impl Harness {
    async fn call(&self, action: &str, input: Value) -> Value {
        let out = self
            .runtime
            .call_action("obs", action, input.to_string().as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"));
        serde_json::from_slice(&out).unwrap()
    }

    /// The traffic every test looks at.
    async fn drive(&self) {
        let bearer = json!({ "url": httpbin().url("/bearer"), "bearer_secret": "api-token" });
        assert_eq!(self.call("fetch", bearer).await["status"], 200);
        // The bucket had one permit: this one is refused with a 429.
        let paced = self
            .call("fetch", json!({ "url": httpbin().url("/get") }))
            .await;
        assert_eq!(paced["status"], 429, "{paced}");
        let state = |v: Value| self.call("state", v);
        state(json!({ "op": "set", "key": "cursor", "value": "42" })).await;
        state(json!({ "op": "cas", "key": "cursor", "expected": "stale", "new": "x" })).await;
        state(json!({ "op": "delete", "key": "cursor" })).await;
        let signed = self
            .call("sign", json!({ "name": "api-token", "message": "m" }))
            .await;
        assert!(signed["signature"].is_string(), "{signed}");
        let err = self
            .runtime
            .call_action("spin", "loop", b"")
            .await
            .unwrap_err();
        assert!(matches!(err, InvokeError::Timeout { .. }), "{err:?}");
    }

    fn audit(&self, filter: AuditFilter) -> Vec<AuditRecord> {
        let audit = &self.audit;
        audit.flush();
        audit.query(&filter).unwrap()
    }

    fn app(&self) -> axum::Router {
        switchyard_server::app(switchyard_server::Services {
            admin_token: Some(SecretValue::new(b"admin-secret".to_vec())),
            metrics: Some(self.metrics.clone()),
            audit: Some(self.audit.clone()),
            ..switchyard_server::Services::new(self.runtime.clone())
        })
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (u16, String, String) {
        let mut request = axum::http::Request::get(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// The value of the series written exactly as `series` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_invocations_egress_rate_limits_and_deadline_kills() {
    let h = harness().await;
    h.drive().await;
    let (status, content_type, text) = h.get("/metrics", None).await;
    assert_eq!(status, 200, "public, no token: {text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let dest = httpbin().origin();
    let expect = [
        (r#"switchyard_invocations_total{plugin="probe",version="0.1.0",pattern="action",outcome="ok"}"#.to_owned(), 6.0),
        (r#"switchyard_invocations_total{plugin="guest-misbehave",version="0.1.0",pattern="action",outcome="timeout"}"#.to_owned(), 1.0),
        (r#"switchyard_invocation_errors_total{kind="timeout"}"#.to_owned(), 1.0),
        (r#"switchyard_deadline_kills_total{plugin="guest-misbehave"}"#.to_owned(), 1.0),
        (r#"switchyard_invocation_duration_seconds_count{plugin="probe",pattern="action"}"#.to_owned(), 6.0),
        (format!(r#"switchyard_egress_requests_total{{plugin="probe",destination="{dest}",status="2xx"}}"#), 1.0),
        (format!(r#"switchyard_egress_requests_total{{plugin="probe",destination="{dest}",status="4xx"}}"#), 1.0),
        (r#"switchyard_rate_limit_refusals_total{bucket="api"}"#.to_owned(), 1.0),
        (r#"switchyard_rate_limit_waits_total{bucket="api"}"#.to_owned(), 1.0),
        (r#"switchyard_plugins_loaded{plugin="probe",version="0.1.0"}"#.to_owned(), 1.0),
        (r#"switchyard_plugins_loaded{plugin="guest-misbehave",version="0.1.0"}"#.to_owned(), 1.0),
    ];
    for (series, value) in &expect {
        assert_eq!(sample(&text, series), Some(*value), "{series} in:\n{text}");
    }
    // Bytes in agree with what the audit trail recorded per request.
    let egress = h.audit(AuditFilter {
        kind: Some(AuditKind::Egress),
        ..AuditFilter::default()
    });
    let bytes_in: u64 = egress.iter().filter_map(|r| r.bytes_in).sum();
    assert!(bytes_in > 0);
    let series = format!(r#"switchyard_egress_bytes_total{{destination="{dest}",direction="in"}}"#);
    assert_eq!(sample(&text, &series), Some(bytes_in as f64), "{text}");
    assert!(
        !text.contains(&canary()),
        "the secret value is not in the metrics"
    );
    assert_eq!(h.diverted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_audit_trail_names_destinations_secrets_and_keys_but_never_values() {
    let h = harness().await;
    h.drive().await;
    let dest = httpbin().origin();
    let all = h.audit(AuditFilter::default());
    assert!(
        all.iter()
            .all(|r| r.plugin == "probe" && r.connection == "obs"),
        "{all:#?}"
    );
    assert!(all.iter().all(|r| r.version == "0.1.0" && r.invocation > 0));

    let egress: Vec<_> = all.iter().filter(|r| r.kind == AuditKind::Egress).collect();
    assert_eq!(egress.len(), 2, "{egress:#?}");
    let (limited, ok) = (egress[0], egress[1]);
    assert_eq!(ok.destination.as_deref(), Some(dest.as_str()));
    assert_eq!((ok.method.as_deref(), ok.status), (Some("GET"), Some(200)));
    assert_eq!(ok.bytes_out, Some(0));
    assert!(ok.bytes_in.unwrap() > 0 && ok.error.is_none());
    assert_eq!(limited.status, Some(429));

    let secrets: Vec<_> = all.iter().filter(|r| r.kind == AuditKind::Secret).collect();
    assert_eq!(secrets.len(), 2, "{secrets:#?}");
    let (sign, header) = (secrets[0], secrets[1]);
    assert_eq!(header.name.as_deref(), Some("api-token"));
    assert_eq!(header.purpose.as_deref(), Some("http-header"));
    assert_eq!(header.destination.as_deref(), Some(dest.as_str()));
    assert_eq!(header.invocation, ok.invocation, "same request");
    assert_eq!(
        (sign.name.as_deref(), sign.purpose.as_deref()),
        (Some("api-token"), Some("sign"))
    );

    let writes: Vec<_> = all
        .iter()
        .filter(|r| r.kind == AuditKind::State)
        .map(|r| {
            (
                r.op.clone().unwrap(),
                r.key.clone().unwrap(),
                r.applied.unwrap(),
            )
        })
        .collect();
    let expected = [("delete", true), ("compare-and-swap", false), ("set", true)]
        .map(|(op, applied)| (op.to_owned(), "cursor".to_owned(), applied));
    assert_eq!(writes, expected);

    // The file on disk (and its WAL) never holds the value.
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("audit.sqlite") {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes
                .windows(canary().len())
                .any(|w| w == canary().as_bytes());
            assert!(!found, "canary in {}", path.display());
        }
    }
}

#[tokio::test]
async fn the_admin_api_filters_the_audit_trail_behind_the_token() {
    let h = harness().await;
    h.drive().await;
    let (status, _, _) = h.get("/admin/v1/audit", None).await;
    assert_eq!(status, 401);
    let uri = "/admin/v1/audit?connection=obs&kind=state&since=1h&limit=2";
    let (status, _, body) = h.get(uri, Some("admin-secret")).await;
    assert_eq!(status, 200, "{body}");
    let records = serde_json::from_str::<Value>(&body).unwrap()["records"].clone();
    let ops: Vec<_> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].clone())
        .collect();
    assert_eq!(ops, [json!("delete"), json!("compare-and-swap")]);
    let (status, _, body) = h
        .get("/admin/v1/audit?kind=nope", Some("admin-secret"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, _, body) = h
        .get("/admin/v1/audit?plugin=nope", Some("admin-secret"))
        .await;
    assert_eq!(body, r#"{"records":[]}"#);
}

#[tokio::test]
async fn egress_log_lines_carry_the_invocation_span() {
    let h = harness().await;
    h.drive().await;
    let ok = h.audit(AuditFilter {
        kind: Some(AuditKind::Egress),
        ..AuditFilter::default()
    });
    let invocation = ok.last().unwrap().invocation;
    let text = std::fs::read_to_string(log_file()).unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["message"] == "outbound request" && l["span"]["invocation"] == invocation
        })
        .unwrap_or_else(|| panic!("no egress line in the span of invocation {invocation}"));
    let span = &line["span"];
    assert_eq!(span["name"], "invocation");
    assert_eq!(span["plugin"], "probe");
    assert_eq!(span["version"], "0.1.0");
    assert_eq!(span["connection"], "obs");
    assert_eq!(span["pattern"], "action");
    assert!(!text.contains(&canary()));
}

#[tokio::test]
async fn a_state_key_holding_a_secret_reaches_the_audit_trail_redacted() {
    let h = harness().await;
    let key = format!("cache/{}", canary());
    let set = h
        .call("state", json!({ "op": "set", "key": key, "value": "v" }))
        .await;
    assert_eq!(set["result"], Value::Null, "{set}");
    let writes: Vec<String> = h
        .audit(AuditFilter {
            kind: Some(AuditKind::State),
            ..AuditFilter::default()
        })
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    assert_eq!(writes, ["cache/[redacted]"], "{writes:?}");
}
