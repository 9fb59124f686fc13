//! Several `switchyard serve` processes sharing one nats-server
//! (JetStream, file storage, loopback): signed webhooks sent to every
//! host delivered once to an idempotent CouchDB sink (pouchdb-server), the
//! work spread across hosts, hosts killed with -9 mid-drain, the NATS
//! server restarted mid-run, and a sync taken over from a killed host.

mod common;

use common::{free_port, http, http_text, kill_9, sign_webhook, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::couchdb_plugins;
use switchyard_tests::nats::NatsServer;
use switchyard_tests::pouchdb::pouchdb;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_TOKEN: &str = "cluster-test-admin-token";
const ADMIN: (&str, &str) = ("Authorization", "Bearer cluster-test-admin-token");

/// One host of the cluster: its own directory, data dir and port.
struct Host {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Host {
    /// Writes the host's plugin dir and config: `[cluster]` on `nats`,
    /// then `flows`.
    fn new(root: &Path, name: &str, nats: &NatsServer, flows: &str) -> Host {
        let dir = root.join(name);
        let port = free_port();
        couchdb_plugins::install(&dir.join("plugins"), &[pouchdb().origin()]);
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\n\
             [admin]\ntoken = {{ env = \"SWITCHYARD_TEST_ADMIN_TOKEN\" }}\n\
             [cluster]\nnats = [\"{}\"]\nhost_id = \"{name}\"\nack_wait_ms = 2000\nsync_lease_ms = 3000\n{flows}",
            nats.url()
        );
        std::fs::write(dir.join("switchyard.toml"), config).unwrap();
        Host {
            dir,
            port,
            child: None,
        }
    }

    /// Starts `switchyard serve` and waits until it answers.
    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("serve")
            .current_dir(&self.dir)
            .env("SWITCHYARD_LOG", "warn")
            .env(couchdb_plugins::AUTH_ENV, "dXNlcjpwYXNz")
            .env("SWITCHYARD_TEST_WEBHOOK_SECRET", SECRET)
            .env("SWITCHYARD_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while http(self.port, "GET", "/healthz", &[], "").is_none() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("host exited ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "host did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_9(child);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Records this host's pipeline `name` delivered, from its metrics.
    fn delivered(&self, pipeline: &str) -> u64 {
        let Some((_, text)) = http_text(self.port, "GET", "/metrics", &[], "") else {
            return 0;
        };
        let series = format!("switchyard_records_out_total{{flow=\"pipeline\",name=\"{pipeline}\"");
        text.lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Posts a signed webhook; the status, or `None` when the host is down.
    fn send(&self, hook: &str, id: &str, body: &str) -> Option<u16> {
        let signed = sign_webhook(SECRET, id, body);
        let headers: Vec<(&str, &str)> = signed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http(
            self.port,
            "POST",
            &format!("/v1/hooks/{hook}"),
            &headers,
            body,
        )
        .map(|(s, _)| s)
    }
}

/// Waits like [`wait_for`], and on time-out panics with what each host
/// saw: its pipeline counts and the end of its log.
fn wait_on(hosts: &[Host], what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        if started.elapsed() >= limit {
            let report: Vec<String> = hosts
                .iter()
                .map(|h| {
                    let pipelines = http(h.port, "GET", "/v1/pipelines", &[ADMIN], "")
                        .map(|(_, p)| p["pipelines"].to_string())
                        .unwrap_or_else(|| "down".into());
                    let log = h.log();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("{}: {pipelines}\n{}", h.dir.display(), tail.join("\n"))
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", report.join("\n\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A webhook into a pipeline whose sink is CouchDB database `db`.
fn webhook_flows(db: &str) -> String {
    format!(
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
        workers = 2
        "#,
        sink = couchdb_plugins::connection("events", "couchdb-sink", &pouchdb().origin(), db)
    )
}

/// Every document of `db` written once: a second write of the same event
/// is refused by CouchDB as a conflict, never a second revision.
fn assert_each_written_once(db: &str, expected: usize) {
    let docs = pouchdb().all_docs(db);
    assert_eq!(docs.len(), expected);
    let twice: Vec<&Value> = docs
        .iter()
        .filter(|d| !d["_rev"].as_str().unwrap().starts_with("1-"))
        .collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
}

fn events(batch: usize, size: usize) -> String {
    let events: Vec<Value> = (0..size)
        .map(|i| json!({ "batch": batch, "n": i }))
        .collect();
    Value::from(events).to_string()
}

#[test]
fn three_hosts_deliver_webhooks_sent_to_all_of_them_once_and_share_the_work() {
    let nats = NatsServer::start();
    let db = pouchdb().fresh_db("cluster-three");
    let root = tempfile::tempdir().unwrap();
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| Host::new(root.path(), name, &nats, &webhook_flows(&db)))
        .collect();
    for host in &mut hosts {
        host.start();
    }
    // Each delivery goes to every host, as a sender retrying through a
    // load balancer would: accepted by each, queued once.
    let (deliveries, size) = (30, 20);
    for d in 0..deliveries {
        let body = events(d, size);
        for i in 0..3 {
            let host = &hosts[(d + i) % 3];
            let status = host.send("bulk", &format!("msg_{d}"), &body);
            assert_eq!(status, Some(202), "delivery {d} on host {i}");
        }
    }
    let total = deliveries * size;
    wait_for("every event in the sink", Duration::from_secs(120), || {
        pouchdb().doc_count(&db) as usize >= total
    });
    assert_each_written_once(&db, total);
    wait_for("the metrics to count it", Duration::from_secs(10), || {
        hosts.iter().map(|h| h.delivered("events")).sum::<u64>() >= total as u64
    });
    let shares: Vec<u64> = hosts.iter().map(|h| h.delivered("events")).collect();
    assert_eq!(shares.iter().sum::<u64>(), total as u64, "{shares:?}");
    assert!(
        shares.iter().filter(|&&n| n > 0).count() >= 2,
        "the work was spread across hosts: {shares:?}"
    );
    // The shared dead letters: none, as seen from any host.
    let (_, pipelines) = http(hosts[2].port, "GET", "/v1/pipelines", &[ADMIN], "").unwrap();
    assert_eq!(pipelines["pipelines"]["events"]["dead"], 0, "{pipelines}");
}

#[test]
fn killing_hosts_mid_drain_ten_times_loses_nothing() {
    let nats = NatsServer::start();
    let db = pouchdb().fresh_db("cluster-kill");
    let root = tempfile::tempdir().unwrap();
    // Each host writes at most 5 batches of 10 a second, so the drain
    // takes 20 s or more however fast the machine: the ten kills below
    // land mid-drain instead of racing it.
    let paced = format!(
        "{}\n[limits]\nhttp_destination_per_second_per_connection = 5\n",
        webhook_flows(&db)
    );
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| Host::new(root.path(), name, &nats, &paced))
        .collect();
    for host in &mut hosts {
        host.start();
    }
    let total = 3_000;
    assert_eq!(
        hosts[0].send("bulk", "bulk-1", &events(0, total)),
        Some(202)
    );
    // Kills spread over the first half of the drain, each after some
    // progress since the last (waiting for progress past the end of the
    // drain would never return).
    let mut last = 0;
    for round in 0..10u64 {
        let mark = (total as u64 * (round + 1) / 20).max(last + 1);
        let what = format!("{mark} written (round {round})");
        wait_on(&hosts, &what, Duration::from_secs(120), || {
            pouchdb().doc_count(&db) >= mark
        });
        let victim = &mut hosts[round as usize % 3];
        victim.kill();
        last = pouchdb().doc_count(&db);
        eprintln!(
            "round {round}: {last} written when host {} was killed",
            round % 3
        );
        victim.start();
    }
    assert!(last < total as u64, "killed mid-drain ({last} written)");
    wait_on(
        &hosts,
        "every event in the sink",
        Duration::from_secs(180),
        || pouchdb().doc_count(&db) as usize >= total,
    );
    assert_each_written_once(&db, total);
    wait_for("the queue drained", Duration::from_secs(30), || {
        http(hosts[1].port, "GET", "/v1/pipelines", &[ADMIN], "").is_some_and(|(_, p)| {
            p["pipelines"]["events"]["ready"] == 0 && p["pipelines"]["events"]["in_flight"] == 0
        })
    });
    let (_, pipelines) = http(hosts[1].port, "GET", "/v1/pipelines", &[ADMIN], "").unwrap();
    assert_eq!(pipelines["pipelines"]["events"]["dead"], 0, "{pipelines}");
}

#[test]
fn a_nats_restart_mid_run_loses_nothing() {
    let mut nats = NatsServer::start();
    let db = pouchdb().fresh_db("cluster-nats-restart");
    let root = tempfile::tempdir().unwrap();
    let mut hosts: Vec<Host> = ["a", "b"]
        .iter()
        .map(|name| Host::new(root.path(), name, &nats, &webhook_flows(&db)))
        .collect();
    for host in &mut hosts {
        host.start();
    }
    let (deliveries, size) = (20, 50);
    // A sender that retries until accepted, as webhook senders do.
    let send = |hosts: &[Host], d: usize| {
        let started = Instant::now();
        loop {
            let status = hosts[d % 2].send("bulk", &format!("r_{d}"), &events(d, size));
            if status == Some(202) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "delivery {d} never accepted"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for d in 0..deliveries / 2 {
        send(&hosts, d);
    }
    wait_for("the drain to start", Duration::from_secs(60), || {
        pouchdb().doc_count(&db) > 0
    });
    nats.kill();
    std::thread::sleep(Duration::from_secs(1));
    nats.restart();
    for d in deliveries / 2..deliveries {
        send(&hosts, d);
    }
    let total = deliveries * size;
    wait_for("every event in the sink", Duration::from_secs(180), || {
        pouchdb().doc_count(&db) as usize >= total
    });
    assert_each_written_once(&db, total);
    for host in &hosts {
        assert!(host.child.is_some());
    }
}

#[test]
fn a_sync_whose_host_is_killed_is_resumed_by_another_from_the_committed_cursor() {
    let nats = NatsServer::start();
    let couch = pouchdb();
    let (src, dst) = (couch.fresh_db("cluster-src"), couch.fresh_db("cluster-dst"));
    let docs: Vec<Value> = (0..6_000)
        .map(|i| json!({ "_id": format!("doc-{i:05}"), "n": i }))
        .collect();
    couch.bulk_insert(&src, &docs);
    let flows = format!(
        "{}{}\n[syncs.copy]\nsource = \"src\"\nstreams = [\"{src}\"]\nsink = \"dst\"\npage_size = 20\nschedule = \"*/2 * * * * *\"\n",
        couchdb_plugins::connection("src", "couchdb-source", &couch.origin(), &src),
        couchdb_plugins::connection("dst", "couchdb-sink", &couch.origin(), &dst)
    );
    let root = tempfile::tempdir().unwrap();
    let mut a = Host::new(root.path(), "a", &nats, &flows);
    let mut b = Host::new(root.path(), "b", &nats, &flows);
    a.start();
    wait_for("a's first pages", Duration::from_secs(60), || {
        couch.doc_count(&dst) >= 200
    });
    // b starts while a holds the sync: its schedule finds the lease held.
    b.start();
    let before_kill = couch.doc_count(&dst);
    assert!(before_kill < 6_000, "a was still running when killed");
    a.kill();
    // b takes the sync over within the lease's time to live and finishes.
    wait_for("b to finish the copy", Duration::from_secs(120), || {
        couch.doc_count(&dst) >= 6_000
    });
    assert_eq!(
        couch.snapshot(&src),
        couch.snapshot(&dst),
        "source equals sink"
    );
    let (_, syncs) = http(b.port, "GET", "/v1/syncs", &[ADMIN], "").unwrap();
    let runs = syncs["syncs"]["copy"]["runs"].as_array().unwrap().clone();
    let resumed = runs
        .iter()
        .find(|r| {
            r["written"].as_u64() > Some(0)
                && r["error"].is_null()
                && r["finished_at_ms"].as_u64() > Some(0)
        })
        .unwrap_or_else(|| panic!("a completed run: {runs:?}"));
    assert!(
        resumed["read"].as_u64().unwrap() < 6_000,
        "b resumed from the cursor, it did not start over: {resumed}"
    );
    assert!(b.log().is_empty() || !b.log().contains("panicked"));
}

/// The loopback OTLP/HTTP receiver (tests/otlp_receiver.py, decoding with
/// the official opentelemetry-proto bindings); its spans file.
struct OtlpReceiver {
    port: u16,
    spans: PathBuf,
    child: Child,
}

impl OtlpReceiver {
    fn start(dir: &Path) -> OtlpReceiver {
        use std::io::BufRead;
        let root = switchyard_tests::workspace_root();
        let spans = dir.join("spans.jsonl");
        let mut child = Command::new(root.join(".switchyard/venv/bin/python"))
            .arg(root.join("tests/otlp_receiver.py"))
            .arg(&spans)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        OtlpReceiver {
            port: line.trim().parse().unwrap(),
            spans,
            child,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook accepted on host a and delivered by host b is one trace,
/// exported by both hosts over OTLP.
#[test]
fn a_webhook_accepted_on_one_host_and_delivered_by_another_is_one_trace() {
    let nats = NatsServer::start();
    let db = pouchdb().fresh_db("cluster-trace");
    let root = tempfile::tempdir().unwrap();
    let otlp = OtlpReceiver::start(root.path());
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\n",
        otlp.port
    );
    // a only accepts (no pipeline workers): b delivers.
    let ingress = webhook_flows(&db).replace("workers = 2", "workers = 0");
    let mut a = Host::new(root.path(), "a", &nats, &format!("{ingress}{telemetry}"));
    let mut b = Host::new(
        root.path(),
        "b",
        &nats,
        &format!("{}{telemetry}", webhook_flows(&db)),
    );
    a.start();
    b.start();
    // One delivery carries the sender's own trace context.
    let sender_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = events(0, 5);
    let mut signed = sign_webhook(SECRET, "traced", &body);
    signed.push((
        "traceparent".into(),
        format!("00-{sender_trace}-00f067aa0ba902b7-01"),
    ));
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _) = http(a.port, "POST", "/v1/hooks/bulk", &headers, &body).unwrap();
    assert_eq!(status, 202);
    for d in 1..5 {
        assert_eq!(a.send("bulk", &format!("t_{d}"), &events(d, 5)), Some(202));
    }
    wait_for("every event in the sink", Duration::from_secs(60), || {
        pouchdb().doc_count(&db) >= 25
    });
    wait_for("the spans to arrive", Duration::from_secs(30), || {
        otlp.spans()
            .iter()
            .filter(|s| s["name"] == "pipeline deliver")
            .count()
            >= 25
    });
    let spans = otlp.spans();
    let accepts: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "webhook accept")
        .collect();
    assert_eq!(accepts.len(), 5, "{spans:?}");
    assert!(
        accepts
            .iter()
            .all(|s| s["host"] == "a" && s["service"] == "switchyard")
    );
    let delivers: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "pipeline deliver")
        .collect();
    assert!(
        delivers.iter().all(|s| s["host"] == "b"),
        "b delivers: {delivers:?}"
    );
    // Each delivered message hangs, through its receive span, off the
    // accept span of its webhook: five traces, one per delivery.
    let by_id: std::collections::HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    for deliver in &delivers {
        let receive = by_id[deliver["parent_span_id"].as_str().unwrap()];
        assert_eq!(receive["name"], "webhook receive");
        let accept = by_id[receive["parent_span_id"].as_str().unwrap()];
        assert_eq!(accept["name"], "webhook accept");
        assert_eq!(deliver["trace_id"], accept["trace_id"]);
    }
    let traces: std::collections::BTreeSet<&str> = delivers
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 5);
    // The sender's trace is continued, not replaced.
    assert!(traces.contains(sender_trace), "{traces:?}");
    let traced = accepts
        .iter()
        .find(|s| s["trace_id"] == sender_trace)
        .unwrap();
    assert_eq!(traced["parent_span_id"], "00f067aa0ba902b7");
}
