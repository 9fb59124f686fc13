//! `switchyard audit` against a real audit file written by the runtime's
//! audit log.

mod common;

use std::time::Duration;
use switchyard_ops::audit::AuditLog;
use switchyard_runtime::observe::{BrokerEvent, BrokerObserver, BrokerUse, EgressEvent};

fn audit(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    common::run(dir, &[&["audit"], args].concat())
}

#[test]
fn audit_records_are_listed_filtered_and_printed_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n").unwrap();
    let (ok, text) = audit(dir.path(), &[]);
    assert!(
        !ok && text.contains("nothing has been audited yet"),
        "{text}"
    );

    let log = AuditLog::open(
        &dir.path().join("data/audit.sqlite"),
        Duration::from_secs(86_400),
    )
    .unwrap();
    log.egress(&EgressEvent {
        plugin: "stripe",
        version: "1.4.0",
        connection: "stripe-eu",
        invocation: 11,
        method: "POST",
        destination: "https://api.stripe.com:443",
        granted: true,
        status: Some(201),
        error: None,
        bytes_out: 120,
        bytes_in: 512,
        attempts: 1,
        elapsed: Duration::from_millis(80),
    });
    log.broker(&BrokerEvent {
        plugin: "crm",
        version: "0.2.0",
        connection: "crm",
        invocation: 12,
        use_: BrokerUse::StateWrite {
            key: "cursor",
            op: "set",
            applied: true,
        },
    });
    // The CLI reads while the log stays open, as with a running server.
    log.flush();

    let (ok, text) = audit(dir.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.starts_with("time"), "a table: {text}");
    assert!(
        text.contains("stripe@1.4.0")
            && text.contains("POST https://api.stripe.com:443 201 out=120B in=512B"),
        "{text}"
    );
    assert!(text.contains("set cursor"), "{text}");

    let (ok, text) = audit(dir.path(), &["--kind", "state", "--since", "1h", "--json"]);
    assert!(ok, "{text}");
    let records: serde_json::Value = serde_json::from_str(&text).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["connection"], "crm");
    assert_eq!(records[0]["key"], "cursor");

    let (ok, text) = audit(
        dir.path(),
        &["--connection", "stripe-eu", "--limit", "5", "--json"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("\"status\": 201") && !text.contains("cursor"),
        "{text}"
    );
    let (ok, text) = audit(dir.path(), &["--plugin", "nope"]);
    assert!(ok && text.contains("no audit records"), "{text}");
    let (ok, text) = audit(dir.path(), &["--since", "yesterday"]);
    assert!(!ok && text.contains("--since"), "{text}");
    let (ok, text) = audit(dir.path(), &["--kind", "nope"]);
    assert!(
        !ok && text.contains("egress, secret, state or access"),
        "{text}"
    );
}
