//! `switchyard dlq list | show | replay` against a real queue file.

mod common;

use std::time::Duration;
use switchyard_flows::queue::{RetryPolicy, SqliteQueue};
use switchyard_runtime::ConnectorError;

fn dlq(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    common::run(dir, &[&["dlq"], args].concat())
}

#[test]
fn dead_letters_are_listed_shown_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.toml"), "data_dir = \"data\"\n").unwrap();
    let (ok, text) = dlq(dir.path(), &["list"]);
    assert!(
        !ok && text.contains("nothing has been queued yet"),
        "{text}"
    );

    let queue = SqliteQueue::open(&dir.path().join("data/queue.sqlite")).unwrap();
    let message = switchyard_runtime::Message {
        id: "order-7".into(),
        stream: "orders".into(),
        key: None,
        headers: vec![],
        payload: br#"{"total":7}"#.to_vec(),
        timestamp_ms: 0,
    };
    queue.enqueue("pipeline:orders", &[message]).unwrap();
    let claimed = queue
        .claim("pipeline:orders", 1, Duration::from_secs(30))
        .unwrap();
    let refused = ConnectorError::Permanent("crm rejected the order".into());
    queue
        .fail(&claimed[0], &refused, &RetryPolicy::default())
        .unwrap();
    let seq = claimed[0].seq.to_string();

    let (ok, text) = dlq(dir.path(), &["list"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("pipeline:orders") && text.contains("order-7"),
        "{text}"
    );
    assert!(text.contains("permanent: crm rejected the order"), "{text}");
    let (ok, text) = dlq(dir.path(), &["show", &seq]);
    assert!(ok && text.contains(r#"{\"total\":7}"#), "{text}");
    let (ok, text) = dlq(dir.path(), &["show", "999"]);
    assert!(!ok && text.contains("no dead letter 999"), "{text}");
    let (ok, text) = dlq(dir.path(), &["replay", &seq]);
    assert!(ok && text.contains("replayed 1"), "{text}");
    let (ok, text) = dlq(dir.path(), &["list", "--json"]);
    assert!(ok && text.trim() == "[]", "{text}");
    assert_eq!(queue.stats("pipeline:orders").unwrap().ready, 1);
}
