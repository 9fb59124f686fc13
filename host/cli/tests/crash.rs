//! Kill -9 the host in the middle of a sync and of a queue drain, start it
//! again on the same data dir, and check that the sink ends up with
//! exactly the source's records: nothing lost, nothing written twice.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::pouchdb::pouchdb;
use switchyard_tests::{couchdb_plugins, workspace_root};

const ADMIN_TOKEN: &str = "crash-test-admin-token";
const ADMIN: (&str, &str) = ("Authorization", "Bearer crash-test-admin-token");

/// Writes the plugin dir and `switchyard.toml` (`extra` appended).
fn configure(dir: &Path, port: u16, extra: &str) {
    couchdb_plugins::install(&dir.join("plugins"), &[pouchdb().origin()]);
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\n\
         [admin]\ntoken = {{ env = \"SWITCHYARD_TEST_ADMIN_TOKEN\" }}\n{extra}"
    );
    std::fs::write(dir.join("switchyard.toml"), config).unwrap();
}

fn connection(name: &str, plugin: &str, database: &str) -> String {
    couchdb_plugins::connection(name, plugin, &pouchdb().origin(), database)
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Starts `switchyard serve` in `dir` and waits until it answers.
fn start(dir: &Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .current_dir(dir)
        .env("SWITCHYARD_LOG", "warn")
        .env(couchdb_plugins::AUTH_ENV, "dXNlcjpwYXNz")
        .env("SWITCHYARD_TEST_WEBHOOK_SECRET", SECRET)
        .env("SWITCHYARD_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/healthz", &[], "").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn kill_9(mut child: Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

/// One HTTP/1.1 exchange: `(status, JSON body)`, or `None` if the server
/// is not there.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, Value)> {
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
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Polls `check` every 10 ms for up to `limit`.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_sync_killed_midway_resumes_from_its_committed_cursor() {
    let couch = pouchdb();
    let (src, dst) = (couch.fresh_db("crash-src"), couch.fresh_db("crash-dst"));
    let docs: Vec<Value> = (0..10_000)
        .map(|i| json!({ "_id": format!("doc-{i:05}"), "n": i }))
        .collect();
    couch.bulk_insert(&src, &docs);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        "{}{}\n[syncs.copy]\nsource = \"src\"\nstreams = [\"{src}\"]\nsink = \"dst\"\npage_size = 100\n",
        connection("src", "couchdb-source", &src),
        connection("dst", "couchdb-sink", &dst)
    );
    configure(dir.path(), port, &extra);

    let server = start(dir.path(), port);
    // The run request never answers: the server dies under it.
    std::thread::spawn(move || http(port, "POST", "/v1/syncs/copy/run", &[ADMIN], ""));
    wait_for("the first pages", Duration::from_secs(60), || {
        couch.doc_count(&dst) >= 1_000
    });
    kill_9(server);
    let copied = couch.doc_count(&dst);
    assert!(copied < 10_000, "killed midway ({copied} copied)");

    let server = start(dir.path(), port);
    let (_, before) = http(port, "GET", "/v1/syncs", &[ADMIN], "").unwrap();
    let cursor = &before["syncs"]["copy"]["cursors"][&src];
    assert!(
        !cursor.is_null(),
        "a cursor was committed before the kill: {before}"
    );
    let (status, run) = http(port, "POST", "/v1/syncs/copy/run", &[ADMIN], "").unwrap();
    assert_eq!(status, 200, "{run}");
    let read = run["report"]["read"].as_u64().unwrap();
    assert!(read < 10_000, "resumed, not restarted: read {read}");
    assert!(
        read as i64 >= 10_000 - copied as i64,
        "read at least what was missing"
    );
    assert_eq!(couch.doc_count(&dst), 10_000);
    assert_eq!(
        pouchdb().snapshot(&src),
        pouchdb().snapshot(&dst),
        "exactly the source's documents"
    );
    kill_9(server);
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn a_queue_drain_killed_midway_loses_nothing_and_writes_nothing_twice() {
    let couch = pouchdb();
    let db = couch.fresh_db("crash-events");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        r#"
        [connections.receiver]
        plugin = "webhook-receiver"
        {sink}
        [webhooks.bulk]
        connection = "receiver"
        pipeline = "events"
        signature = {{ scheme = "standard-webhooks", secret = {{ env = "SWITCHYARD_TEST_WEBHOOK_SECRET" }} }}
        [pipelines.events]
        sink = "events"
        batch_size = 10
        "#,
        sink = connection("events", "couchdb-sink", &db)
    );
    configure(dir.path(), port, &extra);
    let events: Vec<Value> = (0..3_000).map(|i| json!({ "n": i })).collect();
    let body = Value::from(events).to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = Command::new(workspace_root().join(".switchyard/venv/bin/python"))
        .arg(workspace_root().join("tests/sign_webhook.py"))
        .args([SECRET, "bulk-1", &now.to_string(), &body])
        .output()
        .unwrap();
    let headers: Value = serde_json::from_slice(&signed.stdout).unwrap();
    let headers: Vec<(&str, &str)> = headers
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();

    let server = start(dir.path(), port);
    let (status, accepted) = http(port, "POST", "/v1/hooks/bulk", &headers, &body).unwrap();
    assert_eq!(status, 202, "{accepted}");
    wait_for("the drain to start", Duration::from_secs(60), || {
        couch.doc_count(&db) >= 200
    });
    kill_9(server);
    let written = couch.doc_count(&db);
    assert!(written < 3_000, "killed midway ({written} written)");

    let server = start(dir.path(), port);
    wait_for("the drain to finish", Duration::from_secs(120), || {
        couch.doc_count(&db) == 3_000
    });
    wait_for(
        "every message acknowledged",
        Duration::from_secs(30),
        || {
            http(port, "GET", "/v1/pipelines", &[ADMIN], "")
                .is_some_and(|(_, p)| p["pipelines"]["events"]["done"] == 3_000)
        },
    );
    let (_, pipelines) = http(port, "GET", "/v1/pipelines", &[ADMIN], "").unwrap();
    assert_eq!(pipelines["pipelines"]["events"]["dead"], 0, "{pipelines}");
    // Every document was created once: a second write of the same event
    // would have been refused as a conflict, never a second revision.
    let docs = couch.all_docs(&db);
    assert_eq!(docs.len(), 3_000);
    assert!(
        docs.iter()
            .all(|d| d["_rev"].as_str().unwrap().starts_with("1-"))
    );
    kill_9(server);
}
