//! The deadline bound, alone in its binary so no other test competes for
//! the CPU while it is measured.

use std::time::{Duration, Instant};
use switchyard_runtime::{InvokeError, Limits};
use switchyard_tests::runtime_with;

#[tokio::test]
async fn an_infinite_loop_is_stopped_within_deadline_plus_100ms() {
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
    assert!(
        elapsed < deadline + Duration::from_millis(100),
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
