//! The `switchyard` binary, run as an operator would.

mod common;

use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::guest;

use common::{switchyard, text};

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["call", "--help"],
        &["plugin", "--help"],
        &["plugin", "inspect", "--help"],
        &["plugin", "build", "--help"],
    ] {
        let out = switchyard(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn call_prints_the_json_result() {
    let dir = tempfile::tempdir().unwrap();
    let echo = guest("echo");
    let out = switchyard(
        dir.path(),
        &[
            "call",
            echo.to_str().unwrap(),
            "greet",
            "--input",
            r#"{"name":"Ada"}"#,
            "--set",
            "greeting=Hi",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value, serde_json::json!({"message": "Hi, Ada!"}));
}

#[test]
fn call_failures_exit_non_zero_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let echo = guest("echo");
    let echo = echo.to_str().unwrap();
    let out = switchyard(dir.path(), &["call", echo, "greet", "--input", "{}"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error (invalid_input)") && stderr.contains("missing field `name`"),
        "{stderr}"
    );

    let out = switchyard(dir.path(), &["call", echo, "greet", "--input", "{oops"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--input is not valid JSON"));

    let out = switchyard(dir.path(), &["call", "no-such-connection", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no connection named `no-such-connection`"));
}

#[test]
fn inspect_reports_version_exports_imports_size_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let echo = guest("echo");
    let out = switchyard(
        dir.path(),
        &["plugin", "inspect", echo.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = std::fs::read(&echo).unwrap();
    assert_eq!(report["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(report["size"], bytes.len());
    assert_eq!(report["wit_version"], "0.1.1");
    assert_eq!(report["exports"][0], "switchyard:connector/connector@0.1.1");
    assert!(
        report["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "switchyard:connector/config@0.1.1")
    );
    assert_eq!(report["loadable"], true);
    assert_eq!(report["connector"]["actions"][0], "echo");

    let out = switchyard(dir.path(), &["plugin", "inspect", echo.to_str().unwrap()]);
    let human = text(&out.stdout);
    assert!(
        human.contains("wit:         switchyard:connector@0.1.1"),
        "{human}"
    );
    assert!(human.contains("loadable:    yes"), "{human}");
}

#[test]
fn inspect_explains_unloadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = guest("guest-wrong-world");
    let out = switchyard(dir.path(), &["plugin", "inspect", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("loadable:    no: "),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = switchyard(dir.path(), &["plugin", "inspect", "core.wasm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("core.wasm: this is a core WebAssembly module"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn build_produces_a_loadable_component_and_prints_where() {
    let dir = tempfile::tempdir().unwrap();
    let root = switchyard_tests::workspace_root();
    let out_dir = dir.path().join("out");
    let out = switchyard(
        &root,
        &[
            "plugin",
            "build",
            "plugins/echo",
            "--target-dir",
            root.join("target/guests").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout).trim().to_owned();
    assert_eq!(Path::new(&printed), out_dir.join("echo.wasm"));
    let inspect = switchyard(dir.path(), &["plugin", "inspect", &printed]);
    assert!(inspect.status.success(), "{}", text(&inspect.stdout));

    let out = switchyard(dir.path(), &["plugin", "build", "."]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("expected Cargo.toml (Rust), app.py (Python) or app.js (JavaScript)"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 17: from an empty folder to a running connector, in Python and
/// in Rust: `plugin new`, its own test, `plugin build`, `call`.
#[test]
fn a_scaffolded_connector_builds_and_answers_in_python_javascript_and_rust() {
    let dir = tempfile::tempdir().unwrap();
    let root = switchyard_tests::workspace_root();
    let guests = root.join("target/guests");
    for (lang, extra) in [
        ("python", vec![]),
        ("js", vec![]),
        ("rust", vec!["--target-dir", guests.to_str().unwrap()]),
    ] {
        let name = format!("hello-{lang}");
        let (ok, out) = common::run(dir.path(), &["plugin", "new", &name, "--lang", lang]);
        assert!(ok, "{out}");
        let folder = dir.path().join(&name);
        assert!(folder.join(format!("{name}.manifest.toml")).is_file());
        // Its test runs natively.
        let native = match lang {
            "python" => Some(("python3", "test_app.py")),
            "js" => Some(("node", "test_app.mjs")),
            _ => None,
        };
        if let Some((program, test)) = native {
            let test = Command::new(program)
                .arg(test)
                .current_dir(&folder)
                .output()
                .unwrap();
            assert!(test.status.success(), "{}", text(&test.stderr));
        }
        let mut args = vec!["plugin", "build", name.as_str(), "--out", "out"];
        args.extend(extra.iter().copied());
        let (ok, out) = common::run(dir.path(), &args);
        assert!(ok, "{out}");
        let wasm = format!("out/{name}.wasm");
        let answer = switchyard(
            dir.path(),
            &["call", &wasm, "greet", "-i", r#"{"name": "Ada"}"#],
        );
        assert!(answer.status.success(), "{}", text(&answer.stderr));
        let value: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
        assert_eq!(value["message"], "Hello, Ada!", "{lang}");
    }
    let (ok, out) = common::run(dir.path(), &["plugin", "new", "Bad_Name"]);
    assert!(!ok && out.contains("lowercase letters"), "{out}");
    let (ok, out) = common::run(dir.path(), &["plugin", "new", "hello-python"]);
    assert!(!ok && out.contains("already exists"), "{out}");
}

#[test]
fn serve_answers_over_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\n\n[connections.echo-fr]\nplugin = \"echo\"\nconfig = {{ greeting = \"Bonjour\" }}\n\
         [access.keys.tester]\nsecret = {{ env = \"SWITCHYARD_TEST_CALLER_KEY\" }}\nconnections = [\"echo-fr\"]\n"
    );
    std::fs::write(dir.path().join("switchyard.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .current_dir(dir.path())
        .env("SWITCHYARD_LOG", "warn")
        .env("SWITCHYARD_TEST_CALLER_KEY", "caller-key-1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let health = loop {
        if let Some(response) = http(port, "GET", "/healthz", "") {
            break response;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The config names echo-fr, so echo gets no default connection.
    assert!(
        health.ends_with(r#"{"connections":1,"status":"ok"}"#),
        "{health}"
    );
    // Default-deny: no key, no call.
    let path = "/v1/connectors/echo-fr/actions/greet";
    let response = http(port, "POST", path, r#"{"name":"Ada"}"#).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.contains("missing_key"), "{response}");
    let response = http_with_key(port, path, "caller-key-1", r#"{"name":"Ada"}"#).unwrap();
    assert!(
        response.ends_with(r#"{"message":"Bonjour, Ada!"}"#),
        "{response}"
    );
    assert!(
        dir.path().join("data/cache").is_dir(),
        "compile cache under data_dir"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}: {stderr}");
}

/// One HTTP/1.1 request on a fresh connection; `None` if nothing listens.
/// A POST of `body` to `path` with `key` as the bearer token.
fn http_with_key(port: u16, path: &str, key: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn inspect_shows_requests_grants_and_what_a_new_version_adds() {
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("plugins");
    let incoming = dir.path().join("incoming");
    std::fs::create_dir_all(&installed).unwrap();
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::copy(guest("echo"), installed.join("echo.wasm")).unwrap();
    std::fs::copy(guest("echo"), incoming.join("echo.wasm")).unwrap();
    std::fs::write(
        installed.join("echo.manifest.toml"),
        "http = [\"https://api.example.com\"]\n",
    )
    .unwrap();
    std::fs::write(
        incoming.join("echo.manifest.toml"),
        "http = [\"https://api.example.com\", \"https://hooks.example.net\"]\nsecrets = [\"token\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("switchyard.toml"),
        "plugin_dir = \"plugins\"\n[connections.echo-a]\nplugin = \"echo\"\ngrants = { allow = [\"https://*.example.com\"] }\n",
    )
    .unwrap();
    let out = switchyard(dir.path(), &["plugin", "inspect", "incoming/echo.wasm"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(
        report.contains("  http https://hooks.example.net\n  secret token"),
        "{report}"
    );
    assert!(
        report.contains("plugins/echo.wasm: http https://hooks.example.net, secret token"),
        "{report}"
    );
    assert!(
        report.contains("connection echo-a: not granted: allow = [\"https://hooks.example.net\"], secret `token`"),
        "{report}"
    );

    let out = switchyard(
        dir.path(),
        &["plugin", "inspect", "incoming/echo.wasm", "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["requests"]["secrets"][0], "token");
    assert_eq!(
        json["beyond_installed"]["requests"]["http"][0],
        "https://hooks.example.net"
    );

    std::fs::write(
        incoming.join("echo.manifest.toml"),
        "http = [\"gopher://x\"]\n",
    )
    .unwrap();
    let out = switchyard(dir.path(), &["plugin", "inspect", "incoming/echo.wasm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("echo.manifest.toml"),
        "{}",
        text(&out.stderr)
    );
}
