// Over 500 lines: one shared httpbin harness and a test per egress rule;
// split, each file would repeat it.
//! Outbound HTTP from real guest components through the egress policy,
//! against a real httpbin on 127.0.0.1 (and small axum upstreams for
//! throttling and retries).
//!
//! No test here can send a packet off the machine: the runtime's dialer
//! connects only to the loopback upstreams the test started and diverts
//! every other address to a loopback sinkhole that counts connections, so
//! a policy bug would show up as a sinkhole hit, never as traffic.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use switchyard_broker::capabilities::Grants;
use switchyard_broker::egress::BoxFuture;
use switchyard_runtime::{Dialer, Limits, LoadError, Network, Runtime, StaticResolver};
use switchyard_tests::httpbin::httpbin;
use switchyard_tests::{canary, guest, log_dir};
use tokio::net::{TcpListener, TcpStream};

/// Every event of this test binary goes to target/test-logs/egress.jsonl
/// (for assertions and the suite's canary check).
fn log_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = log_dir().join("egress.jsonl");
        let file = std::fs::File::create(&path).expect("create egress log");
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(Mutex::new(file))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        path
    })
}

/// Log events about `connection`.
fn logs_of(connection: &str) -> Vec<Value> {
    std::fs::read_to_string(log_file())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["connection"] == connection)
        .collect()
}

/// Accepts and counts connections; anything reaching it is a leak.
struct Sinkhole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn sinkhole() -> Sinkhole {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    Sinkhole { addr, accepted }
}

/// Connects to the upstreams a test started; diverts anything else to
/// the sinkhole and remembers where it was meant to go.
#[derive(Debug)]
struct SinkholeDialer {
    upstreams: Mutex<Vec<SocketAddr>>,
    sink: SocketAddr,
    diverted: Mutex<Vec<SocketAddr>>,
}

impl Dialer for SinkholeDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        let target = if self.upstreams.lock().unwrap().contains(&addr) {
            addr
        } else {
            self.diverted.lock().unwrap().push(addr);
            self.sink
        };
        Box::pin(TcpStream::connect(target))
    }
}

/// Names the tests use, each mapped to the kind of address it stands for.
fn resolver() -> StaticResolver {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    StaticResolver::default()
        .with("allowed.test", &[ip("93.184.216.34")])
        .with("private.test", &[ip("10.0.0.5")])
        .with("metadata.test", &[ip("169.254.169.254")])
        .with("rebind.test", &[ip("93.184.216.34"), ip("127.0.0.1")])
        .with("mapped.test", &[ip("::ffff:127.0.0.1")])
        .with("nat64.test", &[ip("64:ff9b::a9fe:a9fe")])
        .with("ula.test", &[ip("fd00::1")])
        .with("linklocal6.test", &[ip("fe80::1")])
        .with("cgnat.test", &[ip("100.64.0.1")])
        .with("unspecified.test", &[ip("0.0.0.0")])
        .with("ec2v6.test", &[ip("fd00:ec2::254")])
        .with("localhost6.test", &[ip("::1")])
        .with("httpbin.test", &[ip("127.0.0.1")])
}

/// The probe's manifest: it asks for everything the tests might grant.
fn manifest(upstreams: &[SocketAddr]) -> String {
    let hb = httpbin().addr.port();
    let extra: String = upstreams
        .iter()
        .map(|a| format!(", \"http://{a}\", \"https://{a}\""))
        .collect();
    format!(
        r#"
        http = ["http://127.0.0.1:{hb}", "https://127.0.0.1:{hb}", "http://allowed.test", "https://allowed.test",
                "http://private.test", "http://metadata.test", "http://rebind.test", "http://mapped.test",
                "http://nat64.test", "http://ula.test", "http://linklocal6.test", "http://cgnat.test",
                "http://unspecified.test", "http://ec2v6.test", "http://localhost6.test",
                "http://httpbin.test:{hb}"{extra}]
        secrets = ["api-token", "other-token", "base-token"]
        rate_limits = ["api", "spare"]
        state = true
        "#
    )
}

struct Harness {
    runtime: Runtime,
    dialer: Arc<SinkholeDialer>,
    sink: Sinkhole,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(limits: Limits) -> Harness {
        Harness::with_upstreams(limits, &[]).await
    }

    /// A harness whose probe may also reach `upstreams` (test servers).
    async fn with_upstreams(limits: Limits, upstreams: &[SocketAddr]) -> Harness {
        log_file();
        // SAFETY: set before any runtime reads it, to the same value by
        // every test; nothing else in this binary writes it.
        unsafe { std::env::set_var("SWITCHYARD_TEST_BASE_TOKEN", "base-token-value") };
        let sink = sinkhole().await;
        let dialer = Arc::new(SinkholeDialer {
            upstreams: Mutex::new([&[httpbin().addr], upstreams].concat()),
            sink: sink.addr,
            diverted: Mutex::default(),
        });
        let runtime = Runtime::builder()
            .limits(limits)
            .network(Network::new(Arc::new(resolver()), dialer.clone()))
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.wasm");
        std::fs::copy(guest("guest-http-probe"), &path).unwrap();
        std::fs::write(dir.path().join("probe.manifest.toml"), manifest(upstreams)).unwrap();
        runtime.load_plugin("probe", &path).await.unwrap();
        Harness {
            runtime,
            dialer,
            sink,
            _dir: dir,
        }
    }

    /// Adds connection `name` with grants written as TOML. The probe
    /// imports every brokered interface, so each needs some grant: what a
    /// test leaves out defaults to httpbin, state, a `base-token` secret
    /// bound nowhere and a generous `spare` bucket pacing nothing.
    fn connect(&self, name: &str, grants: &str) {
        let mut table: toml::Table = toml::from_str(grants).unwrap();
        let defaults: toml::Table = toml::from_str(&format!(
            r#"allow = ["{}"]
            state = true
            secrets.base-token = {{ env = "SWITCHYARD_TEST_BASE_TOKEN" }}
            rate_limits.spare = {{ per_second = 1000, burst = 1000 }}"#,
            httpbin().origin()
        ))
        .unwrap();
        for (key, value) in defaults {
            table.entry(key).or_insert(value);
        }
        let grants: Grants = table.try_into().unwrap();
        self.runtime
            .add_connection_with_grants(name, "probe", BTreeMap::new(), &grants)
            .unwrap();
    }

    async fn call(&self, connection: &str, action: &str, input: Value) -> Value {
        let out = self
            .runtime
            .call_action(connection, action, input.to_string().as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{action} on {connection}: {e}"));
        serde_json::from_slice(&out).unwrap()
    }

    fn leaks(&self) -> (usize, Vec<SocketAddr>) {
        (
            self.sink.accepted.load(Ordering::SeqCst),
            self.dialer.diverted.lock().unwrap().clone(),
        )
    }
}

fn httpbin_grant() -> String {
    format!("allow = [\"{}\"]\n", httpbin().origin())
}

#[tokio::test]
async fn an_allowed_destination_answers_and_the_exchange_is_logged() {
    let h = Harness::new(Limits::default()).await;
    h.connect("allowed", &httpbin_grant());
    let out = h
        .call(
            "allowed",
            "fetch",
            json!({ "url": httpbin().url("/get?x=1") }),
        )
        .await;
    assert_eq!(out["status"], 200, "{out}");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["args"]["x"], "1");
    let logged = logs_of("allowed");
    assert!(
        logged
            .iter()
            .any(|l| l["fields"]["message"] == "outbound request" && l["fields"]["status"] == 200),
        "{logged:?}"
    );
    assert_eq!(h.leaks(), (0, vec![]));
}

#[tokio::test]
async fn destinations_not_granted_are_denied_with_an_http_error_code() {
    let h = Harness::new(Limits::default()).await;
    h.connect("narrow", &httpbin_grant());
    // Requested by the manifest but not granted to this connection.
    let out = h
        .call("narrow", "fetch", json!({ "url": "http://allowed.test/" }))
        .await;
    assert_eq!(out["code"], "HTTP-request-denied", "{out}");
    // Granted host, other port.
    let other = format!("http://127.0.0.1:{}/", httpbin().addr.port() + 1);
    let out = h.call("narrow", "fetch", json!({ "url": other })).await;
    assert_eq!(out["code"], "HTTP-request-denied", "{out}");
    let logged = logs_of("narrow");
    assert!(
        logged.iter().any(|l| l["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not granted"))),
        "the log says why: {logged:?}"
    );
    assert_eq!(h.leaks(), (0, vec![]));
}

#[tokio::test]
async fn ssrf_vectors_are_refused_and_nothing_is_connected() {
    let h = Harness::new(Limits::default()).await;
    let hb = httpbin().origin();
    // Every name below is granted, so only the address rules stand in the way.
    h.connect(
        "ssrf",
        &format!(
            r#"allow = ["{hb}", "http://allowed.test", "https://allowed.test", "http://private.test",
               "http://metadata.test", "http://rebind.test", "http://mapped.test", "http://nat64.test",
               "http://ula.test", "http://linklocal6.test", "http://cgnat.test", "http://unspecified.test",
               "http://ec2v6.test", "http://localhost6.test"]"#
        ),
    );
    let hb_port = httpbin().addr.port();
    let vectors = [
        // Literal addresses: metadata, private, loopback, odd encodings.
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".into(),
        "http://[fd00:ec2::254]/latest/meta-data/".into(),
        "http://192.168.1.1/".into(),
        "http://172.16.0.1/".into(),
        "http://100.64.0.1/".into(),
        "http://0.0.0.0/".into(),
        "http://[::]/".into(),
        "http://[::1]/".into(),
        "http://2130706433/".into(),
        "http://0x7f000001/".into(),
        "http://0177.0.0.1/".into(),
        "http://127.1/".into(),
        "http://0x7f.0.0.1/".into(),
        format!("http://127.0.0.1:{}/", hb_port + 2),
        "http://[::ffff:127.0.0.1]/".into(),
        "http://[::ffff:169.254.169.254]/".into(),
        "http://[64:ff9b::a9fe:a9fe]/".into(),
        "http://[fe80::1]/".into(),
        "http://[fd12:3456::1]/".into(),
        // Granted names that resolve to forbidden addresses.
        "http://private.test/".into(),
        "http://metadata.test/".into(),
        "http://rebind.test/".into(),
        "http://mapped.test/".into(),
        "http://nat64.test/".into(),
        "http://ula.test/".into(),
        "http://linklocal6.test/".into(),
        "http://cgnat.test/".into(),
        "http://unspecified.test/".into(),
        "http://ec2v6.test/".into(),
        "http://localhost6.test/".into(),
        // User info, suffix and port tricks, other schemes.
        "http://allowed.test@169.254.169.254/".into(),
        "http://allowed.test:80@10.0.0.1/".into(),
        "http://allowed.test.evil.test/".into(),
        "http://evilallowed.test/".into(),
        "http://allowed.test:8080/".into(),
        "ftp://allowed.test/".into(),
        "gopher://127.0.0.1:70/".into(),
        "file:///etc/passwd".into(),
    ];
    assert!(vectors.len() >= 30);
    for url in &vectors {
        let out = h.call("ssrf", "fetch", json!({ "url": url })).await;
        // Refused by policy, or by wasi:http itself for other schemes.
        let refused = [
            "HTTP-request-denied",
            "destination-IP-prohibited",
            "HTTP-protocol-error",
        ];
        let code = out["code"].as_str().unwrap_or_default();
        let other_scheme = !url.starts_with("http://");
        // A URL without a host never becomes a request at all.
        let hostless = url.starts_with("file:") && out["error"].is_string();
        assert!(
            out["status"].is_null() && (refused.contains(&code) || hostless),
            "{url} must be refused: {out}"
        );
        assert!(
            other_scheme || code != "HTTP-protocol-error",
            "{url} reached the network layer: {out}"
        );
    }
    // A redirect from an allowed host to the metadata address: the first
    // hop is fine, the followed hop is checked like a new request.
    // The literal IP is not granted; the granted name resolves to it.
    for (target, code) in [
        (
            "http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F",
            "HTTP-request-denied",
        ),
        (
            "http%3A%2F%2Fmetadata.test%2Flatest%2Fmeta-data%2F",
            "destination-IP-prohibited",
        ),
    ] {
        let redirect = format!("{hb}/redirect-to?url={target}&status_code=302");
        let out = h
            .call(
                "ssrf",
                "fetch",
                json!({ "url": redirect, "max_redirects": 5 }),
            )
            .await;
        assert_eq!(out["code"], code, "{out}");
    }
    let denials = logs_of("ssrf")
        .iter()
        .filter(|l| l["fields"]["message"] == "outbound request refused or failed")
        .count();
    assert!(denials >= 30, "each refusal is logged: {denials}");
    assert_eq!(h.leaks(), (0, vec![]), "no connection left the policy");
}

#[tokio::test]
async fn the_bearer_secret_reaches_the_upstream_but_never_the_guest() {
    let h = Harness::new(Limits::default()).await;
    // SAFETY: tests in this binary read but never write this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_EGRESS_TOKEN", canary()) };
    let hb = httpbin().origin();
    h.connect(
        "bearer",
        &format!(
            r#"allow = ["{hb}"]
            secrets.api-token = {{ env = "SWITCHYARD_TEST_EGRESS_TOKEN", destinations = ["{hb}"] }}"#
        ),
    );
    let out = h
        .call(
            "bearer",
            "fetch",
            json!({ "url": httpbin().url("/bearer"), "bearer_secret": "api-token" }),
        )
        .await;
    // httpbin's /bearer answers 200 only with a bearer token, and echoes
    // it: the host redacts the echo before the guest's output leaves.
    assert_eq!(out["status"], 200, "{out}");
    let text = out.to_string();
    assert!(!text.contains(&canary()), "{text}");
    assert!(
        text.contains("[redacted]"),
        "the echoed token was the secret: {text}"
    );
    assert!(
        !text.contains("{{secret:"),
        "the placeholder was replaced: {text}"
    );
    // The guest only ever saw the placeholder.
    let placeholder = h
        .call("bearer", "placeholder", json!({ "name": "api-token" }))
        .await;
    assert_eq!(placeholder["placeholder"], "{{secret:api-token}}");
}

#[tokio::test]
async fn secrets_are_refused_where_they_are_not_granted_or_bound() {
    let h = Harness::new(Limits::default()).await;
    // SAFETY: tests in this binary read but never write this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_EGRESS_TOKEN", canary()) };
    let hb = httpbin().origin();
    h.connect(
        "unbound",
        &format!(
            r#"allow = ["{hb}"]
            secrets.api-token = {{ env = "SWITCHYARD_TEST_EGRESS_TOKEN", destinations = ["https://allowed.test"] }}"#
        ),
    );
    let ungranted = h
        .call("unbound", "placeholder", json!({ "name": "other-token" }))
        .await;
    let err = ungranted["error"].as_str().unwrap();
    assert!(
        err.contains("other-token")
            && err.contains("[connections.unbound.grants.secrets.other-token]"),
        "{err}"
    );
    // Bound to another destination: the request is refused, not sent with
    // the placeholder or the value.
    let out = h
        .call(
            "unbound",
            "fetch",
            json!({ "url": httpbin().url("/headers"), "bearer_secret": "api-token" }),
        )
        .await;
    assert_eq!(out["code"], "HTTP-request-denied", "{out}");
    // Bodies need `in_body`.
    let out = h
        .call(
            "unbound",
            "fetch",
            json!({ "method": "POST", "url": httpbin().url("/post"), "body": "token=", "body_secret": "api-token" }),
        )
        .await;
    assert_eq!(out["code"], "HTTP-request-denied", "{out}");
    // Signing works without the value ever leaving the host.
    let signed = h
        .call(
            "unbound",
            "sign",
            json!({ "name": "api-token", "message": "payload" }),
        )
        .await;
    let signature = signed["signature"].as_str().unwrap().to_owned();
    assert_eq!(signature.len(), 64);
    let verified = h
        .call(
            "unbound",
            "verify",
            json!({ "name": "api-token", "message": "payload", "signature": signature }),
        )
        .await;
    assert_eq!(verified["valid"], true);
    let forged = h
        .call(
            "unbound",
            "verify",
            json!({ "name": "api-token", "message": "payload!", "signature": signature }),
        )
        .await;
    assert_eq!(forged["valid"], false);
}

#[tokio::test]
async fn timeouts_and_size_caps_end_requests_with_error_codes() {
    let limits = Limits {
        http_first_byte_timeout_ms: 500,
        http_response_bytes: 1024,
        http_request_bytes: 1024,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    h.connect("capped", &httpbin_grant());
    let started = std::time::Instant::now();
    let out = h
        .call(
            "capped",
            "fetch",
            json!({ "url": httpbin().url("/delay/3") }),
        )
        .await;
    assert_eq!(out["code"], "connection-read-timeout", "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let out = h
        .call(
            "capped",
            "fetch",
            json!({ "url": httpbin().url("/bytes/4096") }),
        )
        .await;
    assert_eq!(out["code"], "HTTP-response-body-size", "{out}");
    let out = h
        .call(
            "capped",
            "fetch",
            json!({ "url": httpbin().url("/bytes/512") }),
        )
        .await;
    assert_eq!(out["body_len"], 512, "{out}");
    let out = h
        .call(
            "capped",
            "fetch",
            json!({ "method": "POST", "url": httpbin().url("/post"), "body": "x".repeat(5000) }),
        )
        .await;
    assert_eq!(out["code"], "HTTP-request-body-size", "{out}");
}

#[tokio::test]
async fn requests_per_invocation_are_capped() {
    let limits = Limits {
        http_requests_per_invocation: 3,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    h.connect("many", &httpbin_grant());
    let out = h
        .call(
            "many",
            "fetch_many",
            json!({ "url": httpbin().url("/status/204"), "count": 5 }),
        )
        .await;
    let statuses = out["statuses"].as_array().unwrap();
    assert_eq!(
        &statuses[..3],
        &[json!(204), json!(204), json!(204)],
        "{out}"
    );
    for refused in &statuses[3..] {
        assert!(
            refused
                .as_str()
                .unwrap()
                .contains("connection-limit-reached"),
            "{out}"
        );
    }
    // The cap is per invocation: the next one starts afresh.
    let out = h
        .call(
            "many",
            "fetch",
            json!({ "url": httpbin().url("/status/204") }),
        )
        .await;
    assert_eq!(out["status"], 204);
}

#[tokio::test]
async fn rate_limit_buckets_pace_egress_and_acquire() {
    let limits = Limits {
        rate_limit_wait_ms: 50,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    let hb = httpbin().origin();
    h.connect(
        "paced",
        &format!(
            r#"allow = ["{hb}"]
            rate_limits.api = {{ per_second = 0.2, burst = 1, destinations = ["{hb}"] }}"#
        ),
    );
    let first = h
        .call("paced", "fetch", json!({ "url": httpbin().url("/get") }))
        .await;
    assert_eq!(first["status"], 200);
    let second = h
        .call("paced", "fetch", json!({ "url": httpbin().url("/get") }))
        .await;
    assert_eq!(second["status"], 429, "{second}");
    let headers = second["headers"].to_string();
    assert!(headers.contains("x-switchyard-rate-limited") && headers.contains("retry-after"));
    let acquired = h.call("paced", "acquire", json!({ "bucket": "api" })).await;
    assert!(acquired["error"].is_string(), "bucket is empty: {acquired}");
    let unknown = h
        .call("paced", "acquire", json!({ "bucket": "nope" }))
        .await;
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("rate_limits.nope"),
        "{unknown}"
    );
}

/// An upstream that answers the first `fail` requests with `status` (and
/// `Retry-After: 2`), then 200, counting requests.
async fn flaky_upstream(status: u16, fail: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    use axum::http::StatusCode;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            if n < fail {
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("retry-after", "2")],
                    "slow down",
                )
            } else {
                (StatusCode::OK, [("retry-after", "0")], "ok")
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

#[tokio::test]
async fn retry_after_pauses_the_destination_for_the_plugin() {
    let (addr, hits) = flaky_upstream(429, 1).await;
    let h = Harness::with_upstreams(Limits::default(), &[addr]).await;
    h.connect("throttled", &format!("allow = [\"http://{addr}\"]"));
    let first = h
        .call(
            "throttled",
            "fetch",
            json!({ "url": format!("http://{addr}/") }),
        )
        .await;
    assert_eq!(first["status"], 429);
    // Within the upstream's Retry-After the host answers for it.
    let second = h
        .call(
            "throttled",
            "fetch",
            json!({ "url": format!("http://{addr}/") }),
        )
        .await;
    assert_eq!(second["status"], 429, "{second}");
    assert!(
        second["headers"]
            .to_string()
            .contains("x-switchyard-rate-limited")
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the paused upstream was not called"
    );
}

#[tokio::test]
async fn idempotent_requests_are_retried_when_the_grant_asks() {
    let (addr, hits) = flaky_upstream(503, 2).await;
    let (post_addr, post_hits) = flaky_upstream(503, 5).await;
    let h = Harness::with_upstreams(Limits::default(), &[addr, post_addr]).await;
    h.connect(
        "retrying",
        &format!("allow = [\"http://{addr}\"]\nretry = {{ attempts = 3, base_delay_ms = 10 }}"),
    );
    // 503 without a long pause: Retry-After 2 s is honoured between tries.
    let out = h
        .call(
            "retrying",
            "fetch",
            json!({ "url": format!("http://{addr}/") }),
        )
        .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    h.connect(
        "post-once",
        &format!(
            "allow = [\"http://{post_addr}\"]\nretry = {{ attempts = 3, base_delay_ms = 10 }}"
        ),
    );
    let out = h
        .call(
            "post-once",
            "fetch",
            json!({ "method": "POST", "url": format!("http://{post_addr}/"), "body": "x" }),
        )
        .await;
    assert_eq!(out["status"], 503);
    assert_eq!(post_hits.load(Ordering::SeqCst), 1, "POST is never retried");
}

#[tokio::test]
async fn state_and_secrets_are_isolated_between_connections_of_one_plugin() {
    let h = Harness::new(Limits::default()).await;
    // SAFETY: tests in this binary read but never write this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_EGRESS_TOKEN", canary()) };
    h.connect(
        "tenant-a",
        r#"state = true
        secrets.api-token = { env = "SWITCHYARD_TEST_EGRESS_TOKEN" }"#,
    );
    h.connect("tenant-b", "state = true");
    let set = json!({ "op": "set", "key": "cursor", "value": "a-42" });
    assert_eq!(
        h.call("tenant-a", "state", set).await["result"],
        Value::Null
    );
    let get = json!({ "op": "get", "key": "cursor" });
    assert_eq!(
        h.call("tenant-a", "state", get.clone()).await["result"],
        "a-42"
    );
    assert_eq!(
        h.call("tenant-b", "state", get.clone()).await["result"],
        Value::Null
    );
    let keys = json!({ "op": "keys", "prefix": "", "limit": 10 });
    assert_eq!(h.call("tenant-b", "state", keys).await["result"], json!([]));
    // Compare-and-swap only wins against the current value.
    let cas = |expected: Value, new: &str| json!({ "op": "cas", "key": "cursor", "expected": expected, "new": new });
    assert_eq!(
        h.call("tenant-a", "state", cas(json!("stale"), "x")).await["result"],
        false
    );
    assert_eq!(
        h.call("tenant-a", "state", cas(json!("a-42"), "a-43"))
            .await["result"],
        true
    );
    assert_eq!(h.call("tenant-a", "state", get).await["result"], "a-43");
    // One connection's secret is not another's.
    let sign = json!({ "name": "api-token", "message": "m" });
    assert!(h.call("tenant-a", "sign", sign.clone()).await["signature"].is_string());
    assert!(h.call("tenant-b", "sign", sign).await["error"].is_string());
}

#[tokio::test]
async fn importing_an_interface_without_its_grant_is_refused_at_load() {
    let h = Harness::new(Limits::default()).await;
    let err = h
        .runtime
        .add_connection_with_grants("bare", "probe", BTreeMap::new(), &Grants::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::NotGranted { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("connection `bare`") && text.contains("[connections.bare.grants"),
        "{text}"
    );
}

#[tokio::test]
async fn a_plugin_built_against_0_1_0_still_loads_and_runs() {
    let runtime = switchyard_tests::runtime_with(Limits::default(), &["guest-v010-compat"]).await;
    let plugin = runtime.plugin("guest-v010-compat").unwrap();
    assert_eq!(plugin.summary().wit_version.as_deref(), Some("0.1.0"));
    let out = runtime
        .call_action("guest-v010-compat", "echo", b"{\"v\":1}")
        .await
        .unwrap();
    assert_eq!(out, b"{\"v\":1}");
}

#[tokio::test]
async fn the_example_rest_connector_calls_httpbin_with_its_bearer_secret() {
    log_file();
    // SAFETY: tests in this binary read but never write this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_EGRESS_TOKEN", canary()) };
    let hb = httpbin().origin();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
        data_dir = "{data}"
        [plugins.http-api]
        path = "{wasm}"
        [connections.httpbin]
        plugin = "http-api"
        config = {{ base_url = "{hb}" }}
        [connections.httpbin.grants]
        allow = ["{hb}"]
        secrets.api-token = {{ env = "SWITCHYARD_TEST_EGRESS_TOKEN", destinations = ["{hb}"] }}
        rate_limits.api = {{ per_second = 50, burst = 5, destinations = ["{hb}"] }}
        "#,
        data = dir.path().display(),
        wasm = guest("http-api").display(),
    );
    // The example ships its manifest beside the source; install both.
    let wasm = dir.path().join("http-api.wasm");
    std::fs::copy(guest("http-api"), &wasm).unwrap();
    let manifest =
        switchyard_tests::workspace_root().join("plugins/http-api/http-api.manifest.toml");
    let manifest = std::fs::read_to_string(manifest).unwrap().replace(
        "\"https://httpbin.org\"",
        &format!("\"https://httpbin.org\", \"{hb}\""),
    );
    std::fs::write(dir.path().join("http-api.manifest.toml"), manifest).unwrap();
    let config = config.replace(
        &guest("http-api").display().to_string(),
        &wasm.display().to_string(),
    );
    let config: switchyard_host::SwitchyardConfig = toml::from_str(&config).unwrap();
    let runtime = switchyard_host::Host::from_config(&config)
        .await
        .unwrap()
        .runtime;
    let out = runtime
        .call_action("httpbin", "get", br#"{"path": "/bearer"}"#)
        .await
        .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"]["authenticated"], true, "{out}");
    assert_eq!(out["body"]["token"], "[redacted]", "{out}");
}

#[tokio::test]
async fn a_plugin_shares_one_bucket_per_destination_across_connections() {
    let limits = Limits {
        http_destination_per_second: 1,
        rate_limit_wait_ms: 50,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    h.connect("first", "");
    h.connect("second", "");
    let url = json!({ "url": httpbin().url("/get") });
    assert_eq!(h.call("first", "fetch", url.clone()).await["status"], 200);
    let paced = h.call("second", "fetch", url).await;
    assert_eq!(paced["status"], 429, "{paced}");
    assert!(
        paced["headers"]
            .to_string()
            .contains("x-switchyard-rate-limited")
    );
}

#[tokio::test]
async fn https_goes_through_rustls_and_proxy_variables_are_ignored() {
    // A server that answers a TLS client with plain text.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = plain.accept().await {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let h = Harness::with_upstreams(Limits::default(), &[plain_addr]).await;
    let proxy = format!("http://{}", h.sink.addr);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        // SAFETY: only this test writes these; nothing in the host reads them.
        unsafe { std::env::set_var(var, &proxy) };
    }
    h.connect(
        "tls",
        &format!(
            "allow = [\"{}\", \"https://{plain_addr}\"]",
            httpbin().origin()
        ),
    );
    let out = h
        .call(
            "tls",
            "fetch",
            json!({ "url": format!("https://{plain_addr}/") }),
        )
        .await;
    assert_eq!(out["code"], "TLS-protocol-error", "{out}");
    let out = h
        .call("tls", "fetch", json!({ "url": httpbin().url("/get") }))
        .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(h.leaks(), (0, vec![]), "the proxy variables were not used");
}

/// An upstream that records every byte of every request it gets: target,
/// headers and body.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let mut seen = record.lock().unwrap();
            seen.extend_from_slice(parts.uri.to_string().as_bytes());
            for (name, value) in &parts.headers {
                seen.extend_from_slice(name.as_str().as_bytes());
                seen.extend_from_slice(value.as_bytes());
            }
            seen.extend_from_slice(&body);
            "recorded"
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// A harness with connection `name` granted httpbin and a recording
/// upstream, its `api-token` secret (the canary) bound to httpbin only.
async fn with_recorder(name: &str) -> (Harness, SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let (recorder, seen) = recording_upstream().await;
    let h = Harness::with_upstreams(Limits::default(), &[recorder]).await;
    // SAFETY: tests in this binary read but never write this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_EGRESS_TOKEN", canary()) };
    let hb = httpbin().origin();
    h.connect(
        name,
        &format!(
            r#"allow = ["{hb}", "http://{recorder}"]
            secrets.api-token = {{ env = "SWITCHYARD_TEST_EGRESS_TOKEN", destinations = ["{hb}"] }}"#
        ),
    );
    (h, recorder, seen)
}

/// The canary as a hostile guest would re-encode it to smuggle it out.
fn smuggled_forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    vec![
        secret.to_owned(),
        secret.chars().rev().collect(),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        secret
            .chars()
            .flat_map(|c| [c, ' '])
            .collect::<String>()
            .trim_end()
            .to_owned(),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ]
}

fn holds_any(haystack: &[u8], forms: &[String]) -> Option<String> {
    forms
        .iter()
        .find(|f| haystack.windows(f.len()).any(|w| w == f.as_bytes()))
        .cloned()
}

#[tokio::test]
async fn an_echoed_secret_never_reaches_the_guest_another_upstream_or_a_log() {
    let (h, recorder, seen) = with_recorder("relay").await;
    let forms = smuggled_forms(&canary());
    // httpbin echoes the request's headers (and /bearer the token itself).
    for path in ["/headers", "/anything", "/bearer"] {
        let out = h
            .call(
                "relay",
                "relay",
                json!({
                    "from": httpbin().url(path),
                    "to": format!("http://{recorder}/in"),
                    "bearer_secret": "api-token",
                }),
            )
            .await;
        assert_eq!(out["sent"], json!([200, 200, 200, 200]), "{path}: {out}");
        let got = out["got"].as_str().unwrap();
        assert!(got.contains("[redacted]"), "{path} echoed the token: {got}");
        let leaked = holds_any(out.to_string().as_bytes(), &forms);
        assert_eq!(leaked, None, "{path}: the guest held the secret");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the recorder got the relays");
    assert_eq!(holds_any(&seen, &forms), None, "the second upstream got it");
    let logs = std::fs::read(log_file()).unwrap();
    assert_eq!(holds_any(&logs, &forms), None, "a log line holds it");
}

#[tokio::test]
async fn a_secret_value_is_refused_on_its_way_to_a_destination_it_is_not_bound_to() {
    let (h, recorder, seen) = with_recorder("exfil").await;
    // A guest that got hold of the value (however) tries to send it, raw
    // or encoded, in the URL, a header or the body.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(canary());
    let to = format!("http://{recorder}");
    let attempts = [
        json!({ "url": format!("{to}/?t={}", canary()) }),
        json!({ "url": format!("{to}/"), "headers": [["x-token", canary()]] }),
        json!({ "method": "POST", "url": format!("{to}/"), "body": format!("{{\"t\":\"{encoded}\"}}") }),
    ];
    for attempt in attempts {
        let out = h.call("exfil", "fetch", attempt.clone()).await;
        assert_eq!(out["code"], "HTTP-request-denied", "{attempt}: {out}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the recorder"
    );
    let refusals: Vec<Value> = logs_of("exfil")
        .into_iter()
        .filter(|l| l["fields"]["message"] == "outbound request refused or failed")
        .collect();
    assert_eq!(refusals.len(), 3, "each refusal is logged");
    assert!(
        refusals[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("secret `api-token`"),
        "{:?}",
        refusals[0]
    );
    // The same value still goes where it is bound.
    let out = h
        .call(
            "exfil",
            "fetch",
            json!({ "url": httpbin().url("/bearer"), "bearer_secret": "api-token" }),
        )
        .await;
    assert_eq!(out["status"], 200, "{out}");
}

#[tokio::test]
async fn other_schemes_are_refused_by_the_policy_with_a_logged_reason() {
    let h = Harness::new(Limits::default()).await;
    h.connect("schemes", "");
    for url in [
        "ftp://allowed.test/",
        "gopher://127.0.0.1:70/",
        "ws://allowed.test/",
    ] {
        let out = h.call("schemes", "fetch", json!({ "url": url })).await;
        assert_eq!(out["code"], "HTTP-request-denied", "{url}: {out}");
    }
    let reasons: Vec<String> = logs_of("schemes")
        .iter()
        .filter(|l| l["fields"]["message"] == "outbound request refused or failed")
        .map(|l| {
            l["fields"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(reasons.len(), 3, "each refusal is logged: {reasons:?}");
    for (reason, scheme) in reasons.iter().zip(["ftp", "gopher", "ws"]) {
        assert!(reason.contains(scheme), "{reason}");
    }
    assert_eq!(h.leaks(), (0, vec![]), "nothing was dialled");
}

/// A malformed authority never becomes a request: wasi:http's
/// `set-authority` refuses it. The host answers that call itself so the
/// refusal is logged with its reason like every other, and the guest's
/// error names the part refused.
#[tokio::test]
async fn a_malformed_authority_is_refused_with_a_logged_reason() {
    let h = Harness::new(Limits::default()).await;
    h.connect("authorities", "");
    let urls = [
        "http://exa mple.test/",
        "http://[::1/",
        "http://a\u{1b}[31mb.test/",
    ];
    for url in urls {
        let out = h.call("authorities", "fetch", json!({ "url": url })).await;
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("refused its authority"),
            "{url}: the guest is told which part: {out}"
        );
    }
    let reasons: Vec<String> = logs_of("authorities")
        .iter()
        .filter(|l| l["fields"]["message"] == "outbound request refused or failed")
        .map(|l| {
            l["fields"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        reasons.len(),
        urls.len(),
        "each refusal is logged: {reasons:?}"
    );
    for reason in &reasons {
        assert!(reason.starts_with("malformed authority"), "{reason}");
        assert!(!reason.contains('\u{1b}'), "quoted, escaped: {reason}");
    }
    assert_eq!(h.leaks(), (0, vec![]), "nothing was dialled");
}

/// Issue 14: a per-invocation egress byte budget. httpbin's
/// `/bytes/600` answers 600 bytes: the first two requests spend 1,200 of
/// a 1,000-byte budget (the exchange that spends it completes), the rest
/// are refused with a logged reason; the next invocation starts afresh.
#[tokio::test]
async fn an_invocation_moves_at_most_its_egress_byte_budget() {
    let limits = Limits {
        http_bytes_per_invocation: 1_000,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    h.connect("bytes", &httpbin_grant());
    let url = httpbin().url("/bytes/600");
    let out = h
        .call("bytes", "fetch_many", json!({ "url": url, "count": 4 }))
        .await;
    let statuses = out["statuses"].as_array().unwrap();
    assert_eq!(&statuses[..2], &[json!(200), json!(200)], "{out}");
    for refused in &statuses[2..] {
        assert!(
            refused.as_str().unwrap().contains("HTTP-request-denied"),
            "{out}"
        );
    }
    let reasons: Vec<String> = logs_of("bytes")
        .iter()
        .filter_map(|l| l["fields"]["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("limits.http_bytes_per_invocation")),
        "{reasons:?}"
    );
    let out = h.call("bytes", "fetch", json!({ "url": url })).await;
    assert_eq!(out["status"], 200, "a new invocation, a new budget");
}

/// Issue 14: a connection's share of its plugin's pace to a destination.
/// A spends its 3 permits and is paced (the host's 429) while the
/// plugin's own bucket still has room, which B then uses.
#[tokio::test]
async fn one_connection_cannot_spend_its_plugins_whole_pace() {
    let limits = Limits {
        http_destination_per_second: 10,
        http_destination_per_second_per_connection: 3,
        rate_limit_wait_ms: 0,
        ..Limits::default()
    };
    let h = Harness::new(limits).await;
    h.connect("share-a", &httpbin_grant());
    h.connect("share-b", &httpbin_grant());
    let url = httpbin().url("/status/204");
    let out = h
        .call("share-a", "fetch_many", json!({ "url": url, "count": 6 }))
        .await;
    let statuses = out["statuses"].as_array().unwrap();
    assert_eq!(
        &statuses[..3],
        &[json!(204), json!(204), json!(204)],
        "{out}"
    );
    assert!(statuses[3..].iter().all(|s| s == 429), "{out}");
    let out = h.call("share-b", "fetch", json!({ "url": url })).await;
    assert_eq!(out["status"], 204, "B still has the plugin's pace: {out}");
}
