use super::*;
use switchyard_broker::observe::{BrokerEvent, BrokerObserver, BrokerUse, EgressEvent};

fn egress(connection: &str, status: Option<u16>) -> EgressEvent<'_> {
    EgressEvent {
        plugin: "probe",
        version: "1.2.3",
        connection,
        invocation: 7,
        method: "GET",
        destination: "http://127.0.0.1:8080",
        granted: true,
        status,
        error: status.is_none().then_some("connection refused"),
        bytes_out: 3,
        bytes_in: 42,
        attempts: 1,
        elapsed: Duration::from_millis(5),
    }
}

fn broker<'a>(connection: &'a str, use_: BrokerUse<'a>) -> BrokerEvent<'a> {
    BrokerEvent {
        plugin: "other",
        version: "0.1.0",
        connection,
        invocation: 9,
        use_,
    }
}

fn filled(dir: &Path) -> AuditLog {
    let log = AuditLog::open(&dir.join("audit.sqlite"), Duration::from_secs(86_400)).unwrap();
    log.egress(&egress("a", Some(200)));
    log.egress(&egress("b", None));
    let secret = BrokerUse::Secret {
        name: "api-token",
        purpose: "sign",
        destination: None,
    };
    log.broker(&broker("a", secret));
    let write = BrokerUse::StateWrite {
        key: "cursor",
        op: "compare-and-swap",
        applied: false,
    };
    log.broker(&broker("b", write));
    let wait = BrokerUse::RateLimitWait {
        bucket: "api",
        waited: Duration::from_millis(3),
        refused: false,
    };
    log.broker(&broker("b", wait));
    log.flush();
    log
}

#[test]
fn records_are_written_in_the_background_and_read_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path());
    let all = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(all.len(), 4, "rate-limit waits are not audited: {all:?}");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let state = &all[0];
    assert_eq!(state.kind, AuditKind::State);
    assert_eq!(
        (state.key.as_deref(), state.op.as_deref(), state.applied),
        (Some("cursor"), Some("compare-and-swap"), Some(false))
    );
    let ok = all.iter().find(|r| r.status == Some(200)).unwrap();
    assert_eq!(ok.destination.as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!((ok.bytes_out, ok.bytes_in), (Some(3), Some(42)));
    assert_eq!(
        (ok.plugin.as_str(), ok.version.as_str()),
        ("probe", "1.2.3")
    );
    assert_eq!(ok.invocation, 7);
    assert!(
        ok.time.ends_with('Z') && ok.time.contains('T'),
        "{}",
        ok.time
    );
    let failed = all
        .iter()
        .find(|r| r.connection == "b" && r.kind == AuditKind::Egress);
    assert_eq!(failed.unwrap().error.as_deref(), Some("connection refused"));
    let json = serde_json::to_value(&all[1]).unwrap();
    assert_eq!(json["kind"], "secret");
    assert_eq!(json["name"], "api-token");
    assert!(
        json.get("status").is_none(),
        "absent fields are left out: {json}"
    );
}

#[test]
fn filters_combine() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path());
    let q = |f: AuditFilter| log.query(&f).unwrap();
    let only_a = q(AuditFilter {
        connection: Some("a".into()),
        ..AuditFilter::default()
    });
    assert_eq!(only_a.len(), 2);
    assert!(only_a.iter().all(|r| r.connection == "a"));
    let egress_b = q(AuditFilter {
        connection: Some("b".into()),
        kind: Some(AuditKind::Egress),
        ..AuditFilter::default()
    });
    assert_eq!(egress_b.len(), 1);
    let by_plugin = q(AuditFilter {
        plugin: Some("other".into()),
        ..AuditFilter::default()
    });
    assert_eq!(by_plugin.len(), 2);
    let limited = q(AuditFilter {
        limit: Some(1),
        ..AuditFilter::default()
    });
    assert_eq!(limited.len(), 1);
    let future = q(AuditFilter {
        since_ms: Some(now_ms() + 60_000),
        ..AuditFilter::default()
    });
    assert!(future.is_empty());
    let past = q(AuditFilter {
        until_ms: Some(now_ms() - 60_000),
        ..AuditFilter::default()
    });
    assert!(past.is_empty());
    // The file is readable on its own, as the CLI reads it.
    assert_eq!(query(log.path(), &AuditFilter::default()).unwrap().len(), 4);
}

#[test]
fn retention_prunes_old_records_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    drop(filled(dir.path()));
    let db = Sqlite::open(&path).unwrap();
    // Age two records by ten days.
    db.execute(
        "UPDATE audit SET at_ms = at_ms - 864000000 WHERE connection = 'a'",
        [],
    )
    .unwrap();
    drop(db);
    let kept = AuditLog::open(&path, Duration::from_secs(5 * 86_400)).unwrap();
    let left = kept.query(&AuditFilter::default()).unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|r| r.connection == "b"));
    drop(kept);
    let db = Sqlite::open(&path).unwrap();
    assert_eq!(prune_before(&db, now_ms() + 1).unwrap(), 2);
}

#[test]
fn dropping_the_log_writes_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let log = AuditLog::open(&path, Duration::from_secs(86_400)).unwrap();
    for _ in 0..500 {
        log.egress(&egress("a", Some(204)));
    }
    drop(log);
    assert_eq!(
        query(
            &path,
            &AuditFilter {
                limit: Some(10_000),
                ..AuditFilter::default()
            }
        )
        .unwrap()
        .len(),
        500
    );
}

#[test]
fn times_parse_as_durations_or_rfc3339() {
    let now = 1_700_000_000_000;
    assert_eq!(parse_time("1h", now), Ok(now - 3_600_000));
    assert_eq!(parse_time("30m", now), Ok(now - 1_800_000));
    assert_eq!(parse_time("2d", now), Ok(now - 2 * 86_400_000));
    assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Ok(now));
    assert!(
        parse_time("yesterday", now)
            .unwrap_err()
            .contains("yesterday")
    );
    assert_eq!("state".parse::<AuditKind>(), Ok(AuditKind::State));
    assert!("nope".parse::<AuditKind>().is_err());
}

#[test]
fn a_trail_from_before_access_records_gains_their_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
            kind TEXT NOT NULL, plugin TEXT NOT NULL, version TEXT NOT NULL,
            connection TEXT NOT NULL, invocation INTEGER NOT NULL,
            method TEXT, destination TEXT, status INTEGER,
            bytes_out INTEGER, bytes_in INTEGER, error TEXT,
            name TEXT, purpose TEXT, key TEXT, op TEXT, applied INTEGER
        );",
    )
    .unwrap();
    drop(old);
    let log = AuditLog::open(&path, Duration::from_secs(86_400)).unwrap();
    log.egress(&egress("a", Some(200)));
    log.access(&AccessEvent {
        caller: "ci-bot",
        decision: "out_of_scope",
        target: "action",
        connection: "crm",
        name: "create",
    });
    log.flush();
    let filter = AuditFilter {
        kind: Some(AuditKind::Access),
        ..AuditFilter::default()
    };
    let records = log.query(&filter).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (
            r.caller.as_deref(),
            r.decision.as_deref(),
            r.name.as_deref()
        ),
        (Some("ci-bot"), Some("out_of_scope"), Some("create"))
    );
    assert_eq!(log.query(&AuditFilter::default()).unwrap().len(), 2);
}
