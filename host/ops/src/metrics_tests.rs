use super::*;
use std::time::Duration;
use switchyard_broker::observe::{BrokerEvent, BrokerUse, EgressEvent};
use switchyard_flows::observe::RecordsEvent;
use switchyard_flows::queue::SqliteQueue;
use switchyard_runtime::InvokeError;
use switchyard_runtime::observe::InvocationEvent;

fn invocation<'a>(error: Option<&'a InvokeError>) -> InvocationEvent<'a> {
    InvocationEvent {
        plugin: "probe",
        version: "0.1.0",
        connection: "c",
        pattern: "action",
        action: Some("fetch"),
        caller: None,
        invocation: 1,
        elapsed: Duration::from_millis(3),
        error,
    }
}

fn egress(status: Option<u16>, granted: bool, attempts: u32) -> EgressEvent<'static> {
    EgressEvent {
        plugin: "probe",
        version: "0.1.0",
        connection: "c",
        invocation: 1,
        method: "GET",
        destination: "http://127.0.0.1:9",
        granted,
        status,
        error: None,
        bytes_out: 5,
        bytes_in: 100,
        attempts,
        elapsed: Duration::from_millis(1),
    }
}

#[test]
fn events_encode_as_openmetrics_series() {
    let m = Metrics::new();
    m.invocation(&invocation(None));
    let timeout = InvokeError::Timeout { deadline_ms: 10 };
    m.invocation(&invocation(Some(&timeout)));
    m.egress(&egress(Some(200), true, 1));
    m.egress(&egress(Some(503), true, 3));
    m.egress(&egress(None, false, 0));
    let wait = BrokerUse::RateLimitWait {
        bucket: "api",
        waited: Duration::from_millis(250),
        refused: true,
    };
    m.broker(&BrokerEvent {
        plugin: "probe",
        version: "0.1.0",
        connection: "c",
        invocation: 1,
        use_: wait,
    });
    m.records(&RecordsEvent {
        flow: "sync",
        name: "orders",
        stream: "orders",
        records_in: 4,
        records_out: 3,
        failed: 1,
    });
    let text = m.encode([("probe", "0.1.0")], None);
    for line in [
        r#"switchyard_invocations_total{plugin="probe",version="0.1.0",pattern="action",outcome="ok"} 1"#,
        r#"switchyard_invocations_total{plugin="probe",version="0.1.0",pattern="action",outcome="timeout"} 1"#,
        r#"switchyard_invocation_errors_total{kind="timeout"} 1"#,
        r#"switchyard_deadline_kills_total{plugin="probe"} 1"#,
        r#"switchyard_invocation_duration_seconds_count{plugin="probe",pattern="action"} 2"#,
        r#"switchyard_egress_requests_total{plugin="probe",destination="http://127.0.0.1:9",status="2xx"} 1"#,
        r#"switchyard_egress_requests_total{plugin="probe",destination="http://127.0.0.1:9",status="5xx"} 1"#,
        r#"switchyard_egress_requests_total{plugin="probe",destination="refused",status="error"} 1"#,
        r#"switchyard_egress_bytes_total{destination="http://127.0.0.1:9",direction="in"} 200"#,
        r#"switchyard_egress_retries_total{plugin="probe",destination="http://127.0.0.1:9"} 2"#,
        r#"switchyard_rate_limit_waits_total{bucket="api"} 1"#,
        r#"switchyard_rate_limit_wait_seconds_total{bucket="api"} 0.25"#,
        r#"switchyard_rate_limit_refusals_total{bucket="api"} 1"#,
        r#"switchyard_records_in_total{flow="sync",name="orders",stream="orders"} 4"#,
        r#"switchyard_records_failed_total{flow="sync",name="orders",stream="orders"} 1"#,
        r#"switchyard_plugins_loaded{plugin="probe",version="0.1.0"} 1"#,
        "# TYPE switchyard_invocation_duration_seconds histogram",
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[test]
fn queue_gauges_are_read_at_scrape() {
    let m = Metrics::new();
    let queue = SqliteQueue::in_memory().unwrap();
    let message = |id: &str| switchyard_runtime::Message {
        id: id.into(),
        stream: "s".into(),
        key: None,
        headers: Vec::new(),
        payload: b"{}".to_vec(),
        timestamp_ms: 0,
    };
    queue
        .enqueue("pipeline:p", &[message("1"), message("2")])
        .unwrap();
    let text = m.encode([], Some(queue.all_stats()));
    assert!(
        text.contains("switchyard_queue_depth{queue=\"pipeline:p\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_dlq_size{queue=\"pipeline:p\"} 0"),
        "{text}"
    );
}

#[test]
fn audit_drops_are_counted_from_the_logs_total() {
    let metrics = Metrics::new();
    metrics.observe_audit_drops(3);
    metrics.observe_audit_drops(3);
    metrics.observe_audit_drops(5);
    let text = metrics.encode([], None);
    assert!(
        text.contains("switchyard_audit_records_dropped_total 5"),
        "{text}"
    );
}
