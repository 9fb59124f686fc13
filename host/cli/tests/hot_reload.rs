//! Runtime loading against the real `switchyard serve`: versions swapped
//! through the admin API and the watched plugin dir while a load generator
//! calls the action non-stop, side-by-side versions, failed loads, removal
//! and the admin token.

mod common;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_tests::guest;
use switchyard_tests::pouchdb::{Response, request_with};

const TOKEN: &str = "admin-token-for-tests";

struct Host {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    plugins: std::path::PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// `switchyard serve` with greeter 1.0.0 as `plugins/greeter.wasm`.
    fn start() -> Host {
        Host::start_with("", |_| {})
    }

    /// [`Host::start`] with `extra` config, after `prepare` ran in the dir.
    fn start_with(extra: &str, prepare: impl FnOnce(&Path)) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(guest("guest-greeter-v1"), plugins.join("greeter.wasm")).unwrap();
        prepare(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\n\
             [admin]\ntoken = {{ env = \"SWITCHYARD_TEST_ADMIN_TOKEN\" }}\n\
             [access]\npublic = [\"greeter\"]\n{extra}"
        );
        std::fs::write(dir.path().join("switchyard.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("serve")
            .current_dir(dir.path())
            .env("SWITCHYARD_LOG", "warn")
            .env("SWITCHYARD_TEST_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SWITCHYARD_TEST_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let host = Host {
            child,
            addr,
            _dir: dir,
            plugins,
        };
        host.wait_for("the server to answer", || {
            request_with(addr, "GET", "/healthz", &[], None).is_ok()
        });
        host
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let started = Instant::now();
        while !check() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Response {
        let auth = format!("Bearer {TOKEN}");
        request_with(self.addr, method, path, &[("Authorization", &auth)], body).unwrap()
    }

    /// Uploads `package` as a version of `greeter`.
    fn upload(&self, package: &str, mode: &str) -> Response {
        let component = std::fs::read(guest(package)).unwrap();
        let (content_type, body) = multipart(&[("component", &component)]);
        let path = format!("/admin/v1/plugins/greeter?mode={mode}");
        self.admin("POST", &path, Some((&content_type, &body)))
    }

    /// The version that answered `greeter`'s `version` action at `address`.
    fn call_version(&self, address: &str) -> Result<String, String> {
        let path = format!("/v1/connectors/{address}/actions/version");
        match request_with(
            self.addr,
            "POST",
            &path,
            &[],
            Some(("application/json", b"{}")),
        ) {
            Ok(r) if r.status == 200 => Ok(r.json()["version"].as_str().unwrap().to_owned()),
            Ok(r) => Err(format!("{}: {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A multipart/form-data body of `(field, bytes)` parts.
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "switchyard-test-boundary-7d1c";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn versions_swap_under_continuous_load_without_a_failed_request() {
    let host = Host::start();
    assert_eq!(host.call_version("greeter").unwrap(), "1.0.0");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let seen_v2 = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, seen_v2) = (stop.clone(), ok.clone(), seen_v2.clone());
        let addr = host.addr;
        load.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = request_with(
                    addr,
                    "POST",
                    "/v1/connectors/greeter/actions/version",
                    &[],
                    Some(("application/json", b"{}")),
                );
                match r {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.json()["version"] == "2.0.0" {
                            seen_v2.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => failures.push(format!("{}: {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }

    // Swap through the admin API, then through the plugin dir.
    for round in 0..6 {
        let package = if round % 2 == 0 {
            "guest-greeter-v2"
        } else {
            "guest-greeter-v1"
        };
        let r = host.upload(package, "replace");
        assert_eq!(r.status, 201, "{}", r.text());
        let want = if round % 2 == 0 { "2.0.0" } else { "1.0.0" };
        assert_eq!(r.json()["plugin"]["version"], want);
        assert_eq!(host.call_version("greeter").unwrap(), want);
    }
    for round in 0..4 {
        let (package, want) = if round % 2 == 0 {
            ("guest-greeter-v2", "2.0.0")
        } else {
            ("guest-greeter-v1", "1.0.0")
        };
        // Atomic: write beside, then rename into the watched dir.
        let tmp = host.plugins.join(".greeter.wasm.tmp");
        std::fs::copy(guest(package), &tmp).unwrap();
        std::fs::rename(&tmp, host.plugins.join("greeter.wasm")).unwrap();
        host.wait_for("the watcher to load the new version", || {
            host.call_version("greeter").as_deref() == Ok(want)
        });
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "{ok} requests during 10 swaps, {} answered by 2.0.0, {} failed",
        seen_v2.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 100, "the load generator ran ({ok} requests)");
    assert!(seen_v2.load(Ordering::Relaxed) > 0);
}

#[test]
fn versions_run_side_by_side_and_failed_loads_change_nothing() {
    let host = Host::start();
    let r = host.upload("guest-greeter-v2", "side-by-side");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["retired"], serde_json::json!([]));
    // The default route is the newest; each version is addressable.
    assert_eq!(host.call_version("greeter").unwrap(), "2.0.0");
    assert_eq!(host.call_version("greeter@1.0.0").unwrap(), "1.0.0");
    assert_eq!(host.call_version("greeter@2.0.0").unwrap(), "2.0.0");
    let list = host.admin("GET", "/admin/v1/plugins", None).json();
    let versions: Vec<(String, bool)> = list["plugins"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["default"] == true,
            )
        })
        .collect();
    assert_eq!(
        versions,
        [("2.0.0".to_owned(), true), ("1.0.0".to_owned(), false)]
    );
    assert!(host.plugins.join("greeter@2.0.0.wasm").is_file());

    // Garbage, a core module and the wrong world: refused with the reason,
    // the loaded versions keep serving.
    let not_wasm = multipart(&[("component", b"hello, not wasm")]);
    let r = host.admin(
        "POST",
        "/admin/v1/plugins/greeter",
        Some((&not_wasm.0, &not_wasm.1)),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("not \\0asm"), "{message}");
    assert!(message.contains("keep serving"), "{message}");
    let wrong_world = std::fs::read(guest("guest-wrong-world")).unwrap();
    let body = multipart(&[("component", &wrong_world)]);
    let r = host.admin(
        "POST",
        "/admin/v1/plugins/greeter",
        Some((&body.0, &body.1)),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(host.call_version("greeter").unwrap(), "2.0.0");
    assert_eq!(host.call_version("greeter@1.0.0").unwrap(), "1.0.0");
    let staged: Vec<_> = std::fs::read_dir(host.plugins.join(".incoming"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "staging dir cleaned up");

    // A broken file dropped into the plugin dir: reported, nothing changes.
    std::fs::write(host.plugins.join("broken.wasm"), b"\0asm garbage").unwrap();
    host.wait_for("the failure to be reported", || {
        let list = host.admin("GET", "/admin/v1/plugins", None).json();
        list["failures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["plugin"] == "broken"))
    });

    // Remove one version: its address is gone, the other is the default.
    let r = host.admin("DELETE", "/admin/v1/plugins/greeter@2.0.0", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !host.plugins.join("greeter@2.0.0.wasm").exists(),
        "{}",
        r.text()
    );
    let r = request_with(
        host.addr,
        "POST",
        "/v1/connectors/greeter@2.0.0/actions/version",
        &[],
        Some(("application/json", b"{}")),
    )
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(host.call_version("greeter").unwrap(), "1.0.0");
    let r = host.admin("GET", "/admin/v1/plugins/greeter@2.0.0", None);
    assert_eq!(r.status, 404);
}

#[test]
fn the_admin_api_needs_the_token() {
    let host = Host::start();
    let r = request_with(host.addr, "GET", "/admin/v1/plugins", &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong = [("Authorization", "Bearer not-the-token")];
    let r = request_with(host.addr, "GET", "/admin/v1/plugins", &wrong, None).unwrap();
    assert_eq!(r.status, 401);
    let r = request_with(
        host.addr,
        "DELETE",
        "/admin/v1/plugins/greeter",
        &wrong,
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(host.call_version("greeter").unwrap(), "1.0.0");
    let ok: Value = host.admin("GET", "/admin/v1/plugins", None).json();
    assert_eq!(ok["plugins"][0]["name"], "greeter");
}

/// Runs the CLI in `dir` and expects success.
fn cli(dir: &Path, args: &[&str]) {
    common::ok(dir, args);
}

#[test]
fn uploads_to_a_host_requiring_signatures_need_a_trusted_signature() {
    let extra = "[trust]\nrequire_signatures = true\n[trust.publishers]\nacme = \"acme.pub\"\n";
    let host = Host::start_with(extra, |dir| {
        cli(dir, &["key", "generate", "--out", "acme"]);
        cli(
            dir,
            &[
                "plugin",
                "sign",
                "plugins/greeter.wasm",
                "--key",
                "acme.key",
            ],
        );
        std::fs::copy(guest("guest-greeter-v2"), dir.join("v2.wasm")).unwrap();
        cli(dir, &["plugin", "sign", "v2.wasm", "--key", "acme.key"]);
    });
    let dir = host.plugins.parent().unwrap().to_owned();
    let v2 = std::fs::read(dir.join("v2.wasm")).unwrap();
    let v2_sig = std::fs::read(dir.join("v2.sig")).unwrap();

    // Unsigned: refused before compilation, with the fix in the message.
    let unsigned = multipart(&[("component", &v2)]);
    let r = host.admin(
        "POST",
        "/admin/v1/plugins/greeter",
        Some((&unsigned.0, &unsigned.1)),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("not signed"), "{message}");
    // v2's signature on v1's bytes: tampered.
    let v1 = std::fs::read(guest("guest-greeter-v1")).unwrap();
    let swapped = multipart(&[("component", &v1), ("signature", &v2_sig)]);
    let r = host.admin(
        "POST",
        "/admin/v1/plugins/greeter",
        Some((&swapped.0, &swapped.1)),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(host.call_version("greeter").unwrap(), "1.0.0");

    let signed = multipart(&[("component", &v2), ("signature", &v2_sig)]);
    let r = host.admin(
        "POST",
        "/admin/v1/plugins/greeter",
        Some((&signed.0, &signed.1)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["plugin"]["publisher"], "acme");
    assert_eq!(host.call_version("greeter").unwrap(), "2.0.0");
    assert!(host.plugins.join("greeter@2.0.0.sig").is_file());
}
