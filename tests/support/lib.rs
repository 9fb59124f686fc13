//! Test support: builds every guest component once per test process, from
//! source, with the same tooling `switchyard plugin build` uses.

pub mod browser;
pub mod couchdb_plugins;
pub mod httpbin;
pub mod logs;
pub mod nats;
pub mod oidc;
pub mod pouchdb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use switchyard_build::{BuildRequest, Toolchain};
use switchyard_runtime::{Limits, Runtime, RuntimeBuilder};

/// Every guest crate the tests use, by package name.
pub const GUEST_PACKAGES: &[&str] = &[
    "echo",
    "field-mapper",
    "guest-misbehave",
    "guest-wrong-world",
    "guest-future-version",
    "guest-extra-import",
    "guest-missing-export",
    "guest-wasi-probe",
    "guest-forged-describe",
    "guest-http-probe",
    "guest-v010-compat",
    "guest-greeter-v1",
    "guest-greeter-v2",
    "http-api",
    "couchdb-source",
    "couchdb-sink",
    "webhook-receiver",
    "bench-transform",
];

/// A free loopback port, never handed out twice by one test process.
///
/// Asking the kernel for port 0 and releasing it can give two tests that
/// start hosts at once the same port; the second host then fails to bind
/// while the first answers its health check, and the test talks to the
/// wrong host. So ports come from a counter, below the kernel's ephemeral
/// range (32768 and up, which nothing else is handed), from an offset by
/// process id, each checked free when handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// The canary secret value of this test run: every test that hands a
/// guest a secret uses it, and the suite's last step greps every captured
/// log for it. `./dev test` sets a fresh one per run.
pub fn canary() -> String {
    std::env::var("SWITCHYARD_TEST_CANARY").unwrap_or_else(|_| "sk_canary_7f3a9c2e41".into())
}

/// Where tests write captured logs for the canary check.
pub fn log_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("test-logs");
    std::fs::create_dir_all(&dir).expect("create target/test-logs");
    dir
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Paths of the built guest components, by package name.
pub fn guests() -> &'static BTreeMap<String, PathBuf> {
    static GUESTS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let root = workspace_root();
        let toolchain = Toolchain::detect().unwrap_or_else(|e| panic!("{e}"));
        let request = BuildRequest {
            manifest_path: root.join("Cargo.toml"),
            packages: GUEST_PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
            // One shared target dir: std is built once for every guest.
            target_dir: Some(root.join("target").join("guests")),
            verbose: std::env::var_os("SWITCHYARD_TEST_VERBOSE").is_some(),
        };
        let built = switchyard_build::build(&request, &toolchain)
            .unwrap_or_else(|e| panic!("building guest components failed: {e}"));
        built.into_iter().map(|c| (c.package, c.path)).collect()
    })
}

/// The component built from `package`.
pub fn guest(package: &str) -> PathBuf {
    guests()
        .get(package)
        .unwrap_or_else(|| panic!("no guest component `{package}`; is it in GUEST_PACKAGES?"))
        .clone()
}

/// A runtime with `limits` and each named guest loaded with a default
/// connection of the same name.
pub async fn runtime_with(limits: Limits, packages: &[&str]) -> Runtime {
    let guests: Vec<(&str, &str)> = packages.iter().map(|p| (*p, *p)).collect();
    runtime_from(Runtime::builder().limits(limits), &guests).await
}

/// `builder`'s runtime with each `(guest package, connection)` loaded (as a
/// plugin named after the package) and connected with no settings.
pub async fn runtime_from(builder: RuntimeBuilder, guests: &[(&str, &str)]) -> Runtime {
    let runtime = builder.build().expect("runtime");
    for (package, connection) in guests {
        runtime
            .load_plugin(package, &guest(package))
            .await
            .unwrap_or_else(|e| panic!("loading {package}: {e}"));
        runtime
            .add_connection(connection, package, BTreeMap::new())
            .expect("connection");
    }
    runtime
}

/// A runtime with connection `connection` of `guest-misbehave`: granted
/// secret `token` from environment variable `env`, and told the same value
/// as its plain `leak` setting, so it plays a guest that learned a secret's
/// value and says it everywhere. The component and its manifest are put in
/// `dir`.
pub async fn runtime_with_a_leaky_guest(dir: &Path, connection: &str, env: &str) -> Runtime {
    use switchyard_runtime::broker::capabilities::Grants;
    use switchyard_runtime::broker::secrets::SecretGrant;
    let wasm = dir.join("misbehave.wasm");
    std::fs::copy(guest("guest-misbehave"), &wasm).expect("copy the guest");
    std::fs::write(
        dir.join("misbehave.manifest.toml"),
        "secrets = [\"token\"]\n",
    )
    .expect("write its manifest");
    let runtime = Runtime::builder().build().expect("runtime");
    runtime.load_plugin("misbehave", &wasm).await.expect("load");
    let token = SecretGrant {
        env: Some(env.to_owned()),
        ..SecretGrant::default()
    };
    let grants = Grants {
        secrets: BTreeMap::from([("token".to_owned(), token)]),
        ..Grants::default()
    };
    let config = BTreeMap::from([("leak".to_owned(), canary())]);
    runtime
        .add_connection_with_grants(connection, "misbehave", config, &grants)
        .expect("connection");
    runtime
}

/// Serves `app` on 127.0.0.1 (an ephemeral port) for the rest of the
/// test; returns its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serving") });
    addr
}
