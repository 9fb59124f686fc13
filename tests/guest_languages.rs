//! Python and JavaScript connectors (issue 17), built from source in the
//! test run with `switchyard plugin build`'s builders (componentize-py and
//! componentize-js from `./dev setup`): the http-api example in each
//! against httpbin with the same assertions as the Rust one, and probes
//! that find the sandbox closed, keep state per connection, have their
//! SSRF attempts refused and their error kinds mapped as the Rust SDK's
//! are.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use switchyard_broker::capabilities::Grants;
use switchyard_broker::egress::BoxFuture;
use switchyard_runtime::bindings::ConnectorError;
use switchyard_runtime::{Dialer, InvokeError, Limits, Network, Runtime, StaticResolver};
use switchyard_tests::httpbin::httpbin;
use switchyard_tests::{canary, workspace_root};
use tokio::net::TcpStream;

/// Builds the Python connector in `dir` (relative to the workspace) once
/// per test binary; the component's path.
fn built(dir: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(dir.to_owned())
        .or_insert_with(|| {
            let out = workspace_root().join("target/guests-py");
            std::fs::create_dir_all(&out).unwrap();
            let source = workspace_root().join(dir);
            let build = if source.join("app.js").is_file() {
                switchyard_build::javascript::build
            } else {
                switchyard_build::python::build
            };
            let (_, path) = build(&source, &out).unwrap_or_else(|e| panic!("building {dir}: {e}"));
            path
        })
        .clone()
}

/// Copies the component into `dir` under `name` with `manifest` beside it.
fn install(dir: &Path, name: &str, component: &Path, manifest: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::copy(component, &path).unwrap();
    std::fs::write(dir.join(format!("{name}.manifest.toml")), manifest).unwrap();
    path
}

#[tokio::test]
async fn the_python_http_api_connector_calls_httpbin_with_its_bearer_secret() {
    http_api_calls_httpbin("http-api-py").await;
}

#[tokio::test]
async fn the_javascript_http_api_connector_calls_httpbin_with_its_bearer_secret() {
    http_api_calls_httpbin("http-api-js").await;
}

/// The assertions of the Rust http-api example's test, for `plugin`.
async fn http_api_calls_httpbin(plugin: &str) {
    // SAFETY: set before any runtime reads it; nothing else writes it.
    unsafe { std::env::set_var("SWITCHYARD_TEST_PY_TOKEN", canary()) };
    let hb = httpbin().origin();
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(
        workspace_root().join(format!("plugins/{plugin}/{plugin}.manifest.toml")),
    )
    .unwrap()
    .replace(
        "\"https://httpbin.org\"",
        &format!("\"https://httpbin.org\", \"{hb}\""),
    );
    let wasm = install(
        dir.path(),
        "http-api",
        &built(&format!("plugins/{plugin}")),
        &manifest,
    );
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
        secrets.api-token = {{ env = "SWITCHYARD_TEST_PY_TOKEN", destinations = ["{hb}"] }}
        rate_limits.api = {{ per_second = 50, burst = 5, destinations = ["{hb}"] }}
        [connections.paced]
        plugin = "http-api"
        config = {{ base_url = "{hb}" }}
        [connections.paced.grants]
        allow = ["{hb}"]
        secrets.api-token = {{ env = "SWITCHYARD_TEST_PY_TOKEN", destinations = ["{hb}"] }}
        rate_limits.api = {{ per_second = 0.1, burst = 2, destinations = ["{hb}"] }}
        "#,
        data = dir.path().display(),
        wasm = wasm.display(),
    );
    let config: switchyard_host::SwitchyardConfig = toml::from_str(&config).unwrap();
    let runtime = switchyard_host::Host::from_config(&config)
        .await
        .unwrap()
        .runtime;
    let call = |action: &'static str, input: Value| {
        let runtime = runtime.clone();
        async move {
            (runtime
                .call_action("httpbin", action, input.to_string().as_bytes())
                .await)
                .map(|out| serde_json::from_slice::<Value>(&out).unwrap())
        }
    };
    let out = call("get", json!({ "path": "/bearer" })).await.unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"]["authenticated"], true, "{out}");
    assert_eq!(out["body"]["token"], "[redacted]", "{out}");
    let out = call(
        "post",
        json!({ "path": "/anything", "query": { "a": [1, "x y"] }, "body": { "k": 1 } }),
    )
    .await
    .unwrap();
    assert_eq!(out["body"]["json"], json!({ "k": 1 }), "{out}");
    assert_eq!(out["body"]["args"]["a"], json!(["1", "x y"]), "{out}");
    // Error statuses become the error kinds the host acts on.
    let kind = |result: Result<Value, InvokeError>| match result {
        Err(InvokeError::Guest(e)) => match e {
            ConnectorError::Retryable(_) => "retryable",
            ConnectorError::Permanent(_) => "permanent",
            ConnectorError::RateLimited(_) => "rate-limited",
            ConnectorError::InvalidInput(_) => "invalid-input",
        },
        other => panic!("not a connector error: {other:?}"),
    };
    assert_eq!(
        kind(call("get", json!({ "path": "/status/503" })).await),
        "retryable"
    );
    assert_eq!(
        kind(call("get", json!({ "path": "/status/429" })).await),
        "rate-limited"
    );
    assert_eq!(
        kind(call("get", json!({ "path": "/status/404" })).await),
        "permanent"
    );
    assert_eq!(
        kind(call("get", json!({ "path": "nope" })).await),
        "invalid-input"
    );
    assert_eq!(kind(call("nothing", json!(null)).await), "permanent");
    // The connection's rate-limit bucket: the example's `acquire` and its
    // request to the bound destination take a permit each, so a burst of
    // two is one call; the next call's acquire waits out
    // `rate_limit_wait_ms` and reports rate-limited.
    let paced = |input: Value| {
        let runtime = runtime.clone();
        async move {
            (runtime
                .call_action("paced", "get", input.to_string().as_bytes())
                .await)
                .map(|out| serde_json::from_slice::<Value>(&out).unwrap())
        }
    };
    let first = paced(json!({ "path": "/get" })).await.unwrap();
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(kind(paced(json!({ "path": "/get" })).await), "rate-limited");
    // The component imports only what its manifest requests: no state.
    let plugin = runtime.plugin("http-api").unwrap();
    let imports = &plugin.summary().imports;
    assert!(
        !imports.iter().any(|i| i.contains("connector/state")),
        "{imports:?}"
    );
}

/// Dials only httpbin; anything else is recorded and refused, so no
/// packet leaves the machine even if the host's checks were wrong.
#[derive(Debug, Default)]
struct LoopbackOnly {
    refused: Mutex<Vec<SocketAddr>>,
}

impl Dialer for LoopbackOnly {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        if addr == httpbin().addr {
            return Box::pin(TcpStream::connect(addr));
        }
        self.refused.lock().unwrap().push(addr);
        Box::pin(async { Err(std::io::ErrorKind::ConnectionRefused.into()) })
    }
}

struct Probe {
    runtime: Runtime,
    dialer: Arc<LoopbackOnly>,
    _dir: tempfile::TempDir,
}

impl Probe {
    /// The probe of `lang` (`py` or `js`), as plugin `probe`.
    async fn new(lang: &str) -> Probe {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let resolver = StaticResolver::default()
            .with("metadata.test", &[ip("169.254.169.254")])
            .with("denied.test", &[ip("127.0.0.1")]);
        let dialer = Arc::new(LoopbackOnly::default());
        let runtime = Runtime::builder()
            .limits(Limits::default())
            .network(Network::new(Arc::new(resolver), dialer.clone()))
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let manifest = format!(
            "http = [\"{}\", \"http://metadata.test\", \"http://denied.test\"]\nsecrets = [\"api-token\"]\nstate = true\n",
            httpbin().origin()
        );
        let path = install(
            dir.path(),
            "probe",
            &built(&format!("tests/guests-{lang}/probe")),
            &manifest,
        );
        runtime.load_plugin("probe", &path).await.unwrap();
        Probe {
            runtime,
            dialer,
            _dir: dir,
        }
    }

    fn connect(&self, name: &str) {
        // SAFETY: set before any runtime reads it; nothing else writes it.
        unsafe { std::env::set_var("SWITCHYARD_TEST_PY_PROBE_TOKEN", canary()) };
        let grants: Grants = toml::from_str(&format!(
            "allow = [\"{}\", \"http://metadata.test\"]\nstate = true\nsecrets.api-token = {{ env = \"SWITCHYARD_TEST_PY_PROBE_TOKEN\", destinations = [\"{}\"] }}",
            httpbin().origin(),
            httpbin().origin()
        ))
        .unwrap();
        (self.runtime)
            .add_connection_with_grants(name, "probe", BTreeMap::new(), &grants)
            .unwrap();
    }

    async fn call(&self, connection: &str, action: &str, input: Value) -> Value {
        let out = (self.runtime)
            .call_action(connection, action, input.to_string().as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"));
        serde_json::from_slice(&out).unwrap()
    }
}

#[tokio::test]
async fn a_python_guest_finds_no_files_no_environment_and_no_sockets() {
    let probe = Probe::new("py").await;
    probe.connect("p");
    // A listener the guest would reach if sockets were open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let out = probe.call("p", "sandbox", json!({ "port": port })).await;
    assert!(out["open"]["refused"].is_string(), "{out}");
    assert!(out["listdir"]["refused"].is_string(), "{out}");
    assert_eq!(out["environ"], json!({}), "{out}");
    assert!(out["socket"]["refused"].is_string(), "{out}");
    assert!(listener.accept().is_err(), "nothing connected");
    assert!(!out.to_string().contains(&canary()), "{out}");
}

#[tokio::test]
async fn a_javascript_guest_has_no_node_or_deno_apis() {
    let probe = Probe::new("js").await;
    probe.connect("p");
    let out = probe.call("p", "sandbox", json!({})).await;
    assert_eq!(
        out,
        json!({ "process": "undefined", "require": "undefined", "deno": "undefined" })
    );
}

#[tokio::test]
async fn a_python_guest_keeps_state_per_connection_and_reaches_only_what_is_granted() {
    state_and_egress("py").await;
}

#[tokio::test]
async fn a_javascript_guest_keeps_state_per_connection_and_reaches_only_what_is_granted() {
    state_and_egress("js").await;
}

async fn state_and_egress(lang: &str) {
    let probe = Probe::new(lang).await;
    probe.connect("tenant-a");
    probe.connect("tenant-b");
    let set = json!({ "op": "set", "key": "cursor", "value": "a-42" });
    probe.call("tenant-a", "state", set).await;
    let get = json!({ "op": "get", "key": "cursor" });
    assert_eq!(
        probe.call("tenant-a", "state", get.clone()).await["result"],
        "a-42"
    );
    assert_eq!(
        probe.call("tenant-b", "state", get).await["result"],
        Value::Null
    );
    let cas = json!({ "op": "cas", "key": "cursor", "expected": "stale", "new": "x" });
    assert_eq!(probe.call("tenant-a", "state", cas).await["result"], false);
    // The bearer placeholder becomes the secret only on the way out.
    let out = probe
        .call(
            "tenant-a",
            "fetch",
            json!({ "url": httpbin().url("/bearer"), "secret": "api-token" }),
        )
        .await;
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        out["body"].as_str().unwrap().contains("[redacted]"),
        "{out}"
    );
    assert!(!out.to_string().contains(&canary()), "{out}");
    // SSRF: a granted name resolving to the metadata address, and a
    // destination the connection was not granted.
    let out = probe
        .call(
            "tenant-a",
            "fetch",
            json!({ "url": "http://metadata.test/latest" }),
        )
        .await;
    let refused = |out: &Value, code: &str| match lang {
        // The SDK names the wasi:http error code.
        "py" => assert_eq!(out["code"], code, "{out}"),
        // fetch() rejects; StarlingMonkey does not pass the code on.
        _ => assert!(out["error"].is_string() && out["status"].is_null(), "{out}"),
    };
    refused(&out, "destination-IP-prohibited");
    let out = probe
        .call("tenant-a", "fetch", json!({ "url": "http://denied.test/" }))
        .await;
    refused(&out, "HTTP-request-denied");
    assert_eq!(
        *probe.dialer.refused.lock().unwrap(),
        Vec::<SocketAddr>::new()
    );
}

#[tokio::test]
async fn python_error_kinds_map_to_the_hosts_and_a_crash_is_permanent() {
    error_kinds("py", "ZeroDivisionError", "python").await;
}

#[tokio::test]
async fn javascript_error_kinds_map_to_the_hosts_and_a_crash_is_permanent() {
    error_kinds("js", "TypeError", "javascript").await;
}

async fn error_kinds(lang: &str, crash: &str, seen_by: &str) {
    let probe = Probe::new(lang).await;
    probe.connect("p");
    let fail = |kind: &str| {
        let runtime = probe.runtime.clone();
        let input = json!({ "kind": kind }).to_string();
        async move {
            runtime
                .call_action("p", "fail", input.as_bytes())
                .await
                .unwrap_err()
        }
    };
    assert!(
        matches!(fail("retryable").await, InvokeError::Guest(ConnectorError::Retryable(m)) if m == "try again")
    );
    assert!(
        matches!(fail("permanent").await, InvokeError::Guest(ConnectorError::Permanent(m)) if m == "never")
    );
    assert!(matches!(
        fail("invalid_input").await,
        InvokeError::Guest(ConnectorError::InvalidInput(_))
    ));
    match fail("rate_limited").await {
        InvokeError::Guest(ConnectorError::RateLimited(r)) => {
            assert_eq!(r.retry_after_ms, Some(1500));
        }
        other => panic!("{other:?}"),
    }
    match fail("bug").await {
        InvokeError::Guest(ConnectorError::Permanent(m)) => {
            assert!(m.contains(crash), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // And the transform role.
    let message = switchyard_runtime::bindings::Message {
        id: "1".into(),
        stream: "s".into(),
        key: None,
        headers: Vec::new(),
        payload: br#"{"n":1}"#.to_vec(),
        timestamp_ms: 0,
    };
    let out = probe.runtime.transform("p", vec![message]).await.unwrap();
    let record: Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(record, json!({ "n": 1, "seen_by": seen_by }));
}

/// What one instance of `component` takes from the pooling allocator:
/// core instances, memories and their initial bytes, tables and their
/// initial elements, summed over its core modules.
#[derive(Debug, Default)]
struct PoolNeeds {
    core_instances: usize,
    memories: usize,
    initial_memory_bytes: u64,
    tables: usize,
    largest_table: u64,
}

fn pool_needs(component: &Path) -> PoolNeeds {
    use wasmparser::{Parser, Payload};
    let bytes = std::fs::read(component).unwrap();
    let mut needs = PoolNeeds::default();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            Payload::ComponentInstanceSection(_) | Payload::ModuleSection { .. } => {}
            Payload::InstanceSection(reader) => {
                // Bags of exports take no slot; instantiations do.
                needs.core_instances += reader
                    .into_iter()
                    .filter(|i| matches!(i, Ok(wasmparser::Instance::Instantiate { .. })))
                    .count();
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    needs.memories += 1;
                    needs.initial_memory_bytes += memory.unwrap().initial << 16;
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    needs.tables += 1;
                    needs.largest_table = needs.largest_table.max(table.unwrap().ty.initial);
                }
            }
            _ => {}
        }
    }
    needs
}

/// The pooling allocator's defaults hold a Python or JavaScript connector
/// (15–40 MB components) with room to spare: at most half of each limit.
#[test]
fn python_and_javascript_components_fit_the_default_pool_with_headroom() {
    let limits = Limits::default();
    for dir in ["plugins/http-api-py", "plugins/http-api-js"] {
        let needs = pool_needs(&built(dir));
        eprintln!("{dir}: {needs:?}");
        assert!(
            needs.core_instances * 2 <= limits.instances,
            "{dir}: {needs:?}"
        );
        assert!(needs.memories * 2 <= limits.memories, "{dir}: {needs:?}");
        assert!(needs.tables * 2 <= limits.tables, "{dir}: {needs:?}");
        assert!(
            needs.largest_table * 2 <= limits.table_elements as u64,
            "{dir}: {needs:?}"
        );
        assert!(
            needs.initial_memory_bytes * 2 <= limits.memory_bytes as u64,
            "{dir}: {needs:?}"
        );
    }
}

/// A pool too small for a Python component refuses it at load, naming
/// the `[limits]` key to raise.
#[tokio::test]
async fn a_pool_too_small_for_a_python_component_names_the_limit_to_raise() {
    let component = built("plugins/http-api-py");
    let cases = [
        (
            "table_elements",
            Limits {
                table_elements: 1_000,
                ..Limits::default()
            },
        ),
        (
            "memory_bytes",
            Limits {
                memory_bytes: 8 << 20,
                ..Limits::default()
            },
        ),
        (
            "instances",
            Limits {
                instances: 5,
                ..Limits::default()
            },
        ),
    ];
    for (key, limits) in cases {
        let runtime = Runtime::builder().limits(limits).build().unwrap();
        let err = runtime
            .load_plugin("p", &component)
            .await
            .expect_err(key)
            .to_string();
        assert!(
            err.contains(&format!("raise `{key}` under [limits]")),
            "{err}"
        );
    }
}
