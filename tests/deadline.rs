//! The deadline stops a spinning guest: it is the configured deadline that
//! fires (not the default, not never), and the plugin serves on. How close
//! to the deadline it fires is a figure for the benchmark, not a timed
//! assertion here (a loaded CI machine would make it flaky).

use std::time::{Duration, Instant};
use switchyard_runtime::{InvokeError, Limits};
use switchyard_tests::runtime_with;

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_its_deadline() {
    let deadline = Duration::from_millis(300);
    let limits = Limits {
        deadline_ms: deadline.as_millis() as u64,
        ..Limits::default()
    };
    let runtime = runtime_with(limits, &["guest-misbehave"]).await;
    let started = Instant::now();
    let err = runtime
        .call_action("guest-misbehave", "loop", b"")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, InvokeError::Timeout { deadline_ms: 300 }),
        "{err:?}"
    );
    // Well below the 5 s default deadline: the configured one fired.
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    assert!(
        elapsed >= deadline - Duration::from_millis(20),
        "stopped early: {elapsed:?}"
    );
    let out = runtime
        .call_action("guest-misbehave", "echo", b"alive")
        .await
        .unwrap();
    assert_eq!(out, b"alive");
}
