//! Kill -9 the host in the middle of a sync and of a queue drain, start it
//! again on the same data dir, and check that the sink ends up with
//! exactly the source's records: nothing lost, nothing written twice.

mod common;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::couchdb_plugins;
use switchyard_tests::pouchdb::pouchdb;

use common::{free_port, http, kill_9, sign_webhook, wait_for};

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
    let signed = sign_webhook(SECRET, "bulk-1", &body);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
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
