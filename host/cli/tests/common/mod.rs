//! Running the `switchyard` binary, as the CLI's integration tests do.
// Each test file uses some of these.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Runs `switchyard args…` in `cwd` with warnings-only logging.
pub fn switchyard(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(cwd)
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("running switchyard")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether it succeeded, and stdout followed by stderr.
pub fn run(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = switchyard(cwd, args);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// Runs and expects success; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = switchyard(cwd, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and expects exit code 1; returns stderr.
pub fn refused(cwd: &Path, args: &[&str]) -> String {
    let out = switchyard(cwd, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A free loopback port, never handed out twice by one test process
/// ([`switchyard_tests::free_port`]).
pub fn free_port() -> u16 {
    switchyard_tests::free_port()
}

/// SIGKILL, then reaps it; a child that already exited is only reaped
/// (this runs in destructors, so it must not panic).
pub fn kill_9(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.wait();
}

/// One HTTP/1.1 exchange: `(status, JSON body)`, or `None` if the server
/// is not there.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Value)> {
    let (status, text) = http_text(port, method, path, headers, body)?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// One HTTP/1.1 exchange: `(status, body text)`, or `None` if the server
/// is not there.
pub fn http_text(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Some((status, body.to_owned()))
}

/// Polls `check` every 10 ms for up to `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Standard Webhooks signature headers for `body` as delivery `id`, now,
/// made by the official `standardwebhooks` library (tests/sign_webhook.py).
pub fn sign_webhook(secret: &str, id: &str, body: &str) -> Vec<(String, String)> {
    let root = switchyard_tests::workspace_root();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = Command::new(root.join(".switchyard/venv/bin/python"))
        .arg(root.join("tests/sign_webhook.py"))
        .args([secret, id, &now.to_string(), body])
        .output()
        .unwrap();
    let headers: Value = serde_json::from_slice(&signed.stdout).unwrap();
    (headers.as_object().unwrap().iter())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}
