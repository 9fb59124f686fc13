//! Guest logs and stdio reach `tracing` with the invocation's identity,
//! escaped and within budget.

use switchyard_runtime::Limits;
use switchyard_tests::logs::Captured;
use switchyard_tests::runtime_with;

/// Sends every event on this (current-thread) test to a JSON buffer
/// until the guard drops.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Runs `action` on `guest` with a JSON log subscriber installed
/// on this (current-thread) test, and returns the log lines.
async fn logs_of(guest: &str, action: &str) -> Vec<serde_json::Value> {
    let (captured, _guard) = capture_logs();
    let runtime = runtime_with(Limits::default(), &[guest]).await;
    runtime.call_action(guest, action, b"").await.unwrap();
    captured
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["target"] == "switchyard::guest")
        .collect()
}

#[tokio::test]
async fn stdout_and_stderr_are_logged_with_the_invocation_identity() {
    let logs = logs_of("guest-wasi-probe", "print").await;
    let stdout = logs
        .iter()
        .find(|l| l["fields"]["message"] == "hello from stdout")
        .expect("stdout line logged");
    assert_eq!(stdout["level"], "INFO");
    assert_eq!(stdout["fields"]["plugin"], "guest-wasi-probe");
    assert_eq!(stdout["fields"]["connection"], "guest-wasi-probe");
    assert_eq!(stdout["fields"]["plugin_version"], "0.1.0");
    assert_eq!(stdout["fields"]["fields"], "stream=stdout");
    assert!(stdout["fields"]["invocation"].as_u64().unwrap() > 0);
    let stderr = logs
        .iter()
        .find(|l| l["fields"]["message"] == "hello from stderr")
        .expect("stderr line logged");
    assert_eq!(stderr["level"], "WARN");
}

#[tokio::test]
async fn a_log_flood_is_capped_and_escaped() {
    let logs = logs_of("guest-misbehave", "log-flood").await;
    let events: Vec<_> = logs
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap()
                .starts_with("flood")
        })
        .collect();
    assert_eq!(events.len(), 1000, "the per-invocation budget");
    // The guest wrote "flood\nline": the newline arrives escaped.
    assert_eq!(events[0]["fields"]["message"], "flood\\nline");
    let dropped = logs
        .iter()
        .find(|l| l["fields"]["dropped"].is_u64())
        .expect("a summary of dropped events");
    assert_eq!(dropped["fields"]["dropped"], 4000);
}

#[tokio::test]
async fn secret_values_are_redacted_from_logs_errors_and_outputs() {
    let canary = switchyard_tests::canary();
    let canary = canary.as_str();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("api-token");
    std::fs::write(&secret_file, format!("{canary}\n")).unwrap();
    // The plugin must request the secret and the connection must grant it.
    let wasm = dir.path().join("misbehave.wasm");
    std::fs::copy(switchyard_tests::guest("guest-misbehave"), &wasm).unwrap();
    std::fs::write(
        dir.path().join("misbehave.manifest.toml"),
        "secrets = [\"api\"]\n",
    )
    .unwrap();

    let (captured, _guard) = capture_logs();

    let runtime = switchyard_runtime::Runtime::builder().build().unwrap();
    runtime.load_plugin("m", &wasm).await.unwrap();
    let grants: switchyard_broker::capabilities::Grants = toml::from_str(&format!(
        "[secrets.api]\nfile = {:?}\n",
        secret_file.display().to_string()
    ))
    .unwrap();
    let conn = runtime
        .add_connection_with_grants("m", "m", Default::default(), &grants)
        .unwrap();
    assert!(conn.rights().secrets.contains("api"));
    assert!(!format!("{conn:?}").contains(canary));

    let leaked = format!("token={canary}");
    let out = runtime
        .call_action("m", "echo", leaked.as_bytes())
        .await
        .unwrap();
    assert_eq!(out, b"token=[redacted]");
    let err = runtime
        .call_action("m", "leak", leaked.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "permanent: leaked token=[redacted]");

    let logs = captured.text();
    // Kept for the suite's canary check too.
    std::fs::write(
        switchyard_tests::log_dir().join("logging-redaction.jsonl"),
        &logs,
    )
    .unwrap();
    assert!(logs.contains("leaking token=[redacted]"), "{logs}");
    assert_eq!(logs.matches(canary).count(), 0, "{logs}");
}

/// A guest that learned a secret's value (here through a plain setting)
/// puts it in everything it says: a panic, message ids, keys, headers
/// (names and values), a cursor, per-message sink errors. The sandbox
/// hands none of it on, and no log line holds it.
#[tokio::test]
async fn everything_a_guest_says_is_redacted_at_one_point() {
    let (captured, _guard) = capture_logs();
    // SAFETY: only this test reads or writes this variable.
    unsafe { std::env::set_var("SWITCHYARD_TEST_REDACT_TOKEN", switchyard_tests::canary()) };
    let dir = tempfile::tempdir().unwrap();
    let runtime = switchyard_tests::runtime_with_a_leaky_guest(
        dir.path(),
        "m",
        "SWITCHYARD_TEST_REDACT_TOKEN",
    )
    .await;
    let leaked = |what: &str, text: String| {
        assert!(
            !text.contains(&switchyard_tests::canary()),
            "{what}: {text}"
        );
        assert!(text.contains("[redacted]"), "{what} said it: {text}");
    };

    let panic = runtime
        .call_action("m", "panic-with", switchyard_tests::canary().as_bytes())
        .await
        .unwrap_err();
    leaked("the panic", panic.to_string());

    let message = switchyard_runtime::Message {
        id: "m-1".into(),
        stream: "s".into(),
        key: None,
        headers: vec![],
        payload: b"{}".to_vec(),
        timestamp_ms: 0,
    };
    let transformed = runtime.transform("m", vec![message.clone()]).await.unwrap();
    leaked("transformed messages", format!("{transformed:?}"));

    let page = runtime
        .read(
            "m",
            switchyard_runtime::ReadRequest {
                stream: "s".into(),
                cursor: None,
                max_messages: 10,
            },
        )
        .await
        .unwrap();
    leaked("a page", format!("{page:?}"));
    assert_eq!(page.next_cursor.as_deref(), Some("cursor-[redacted]"));

    let outcomes = runtime.write("m", vec![message]).await.unwrap();
    leaked("write outcomes", format!("{outcomes:?}"));

    let logs = captured.text();
    assert!(!logs.contains(&switchyard_tests::canary()), "{logs}");
}
