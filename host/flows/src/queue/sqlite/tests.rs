// Over 500 lines: one test per queue rule, and a frozen copy of the v0
// schema that the migration test opens.
use super::schema::SCHEMA_VERSION;
use super::*;
use crate::bindings::RateLimit;

fn message(id: &str) -> Message {
    Message {
        id: id.into(),
        stream: "orders".into(),
        key: None,
        headers: vec![("content-type".into(), "application/json".into())],
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        timestamp_ms: 1,
    }
}

fn assert_same(a: &Message, b: &Message) {
    assert_eq!(
        (
            &a.id,
            &a.stream,
            &a.key,
            &a.headers,
            &a.payload,
            a.timestamp_ms
        ),
        (
            &b.id,
            &b.stream,
            &b.key,
            &b.headers,
            &b.payload,
            b.timestamp_ms
        )
    );
}

const LEASE: Duration = Duration::from_secs(30);

fn no_wait() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay_ms: 0,
        max_delay_ms: 0,
    }
}

#[test]
fn pending_duplicates_are_stored_once_and_delivered_keys_come_again() {
    let q = SqliteQueue::in_memory().unwrap();
    assert_eq!(q.enqueue("p", &[message("a"), message("b")]).unwrap(), 2);
    assert_eq!(q.enqueue("p", &[message("a")]).unwrap(), 0, "still pending");
    assert_eq!(
        q.enqueue("other", &[message("a")]).unwrap(),
        1,
        "queues are separate"
    );
    let batch = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(batch.len(), 2);
    assert_same(&batch[0].message, &message("a"));
    assert_eq!(batch[0].attempt, 1);
    q.ack(&batch[..1]).unwrap();
    assert_eq!(
        q.enqueue("p", &[message("a")]).unwrap(),
        1,
        "delivered, so new"
    );
}

#[test]
fn claimed_messages_are_leased_and_come_back_when_the_lease_runs_out() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue("p", &[message("a")]).unwrap();
    let first = q.claim("p", 10, Duration::from_millis(50)).unwrap();
    assert_eq!(first.len(), 1);
    assert!(q.claim("p", 10, LEASE).unwrap().is_empty(), "leased");
    std::thread::sleep(Duration::from_millis(60));
    // The consumer "died": the message is delivered again.
    let again = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

#[test]
fn the_error_variant_decides_retry_or_dead_letter() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue("p", &[message("r"), message("x"), message("l")])
        .unwrap();
    let batch = q.claim("p", 10, LEASE).unwrap();
    let retry = q
        .fail(
            &batch[0],
            &ConnectorError::Retryable("503".into()),
            &no_wait(),
        )
        .unwrap();
    assert_eq!(retry, FailOutcome::RetryIn(Duration::ZERO));
    let dead = q
        .fail(
            &batch[1],
            &ConnectorError::Permanent("bad doc".into()),
            &no_wait(),
        )
        .unwrap();
    assert_eq!(dead, FailOutcome::DeadLettered);
    let limited = ConnectorError::RateLimited(RateLimit {
        message: "slow down".into(),
        retry_after_ms: Some(60_000),
    });
    match q.fail(&batch[2], &limited, &no_wait()).unwrap() {
        FailOutcome::RetryIn(wait) => assert_eq!(wait, Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    // Only the retryable one is due now; the rate-limited one waits.
    let due = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message.id, "r");
    let letters = q.dead_letters(Some("p"), 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, "x");
    assert_eq!(letters[0].reason, "permanent error");
    assert_eq!(letters[0].last_error, "permanent: bad doc");
}

#[test]
fn max_attempts_dead_letter_and_replay_starts_afresh() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue("p", &[message("a")]).unwrap();
    for attempt in 1..=3 {
        let batch = q.claim("p", 1, LEASE).unwrap();
        assert_eq!(batch[0].attempt, attempt);
        let outcome = q
            .fail(
                &batch[0],
                &ConnectorError::Retryable("timeout".into()),
                &no_wait(),
            )
            .unwrap();
        assert_eq!(outcome == FailOutcome::DeadLettered, attempt == 3);
    }
    let letters = q.dead_letters(None, 10).unwrap();
    assert_eq!(letters[0].reason, "gave up after 3 attempts");
    assert_eq!(letters[0].attempts, 3);
    let (letter, body) = q.dead_letter_message(letters[0].seq).unwrap().unwrap();
    assert_eq!(letter, letters[0]);
    assert_same(&body, &message("a"));
    assert_eq!(q.stats("p").unwrap().dead, 1);
    assert_eq!(q.replay(Some("p"), None).unwrap(), 1);
    let batch = q.claim("p", 1, LEASE).unwrap();
    assert_eq!(batch[0].attempt, 1);
    q.ack(&batch[..1]).unwrap();
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            done: 1,
            ..QueueStats::default()
        }
    );
}

#[test]
fn backoff_grows_and_is_jittered_within_its_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay_ms: 100,
        max_delay_ms: 1_000,
    };
    for _ in 0..200 {
        assert!(policy.backoff_ms(1) <= 100);
        assert!(policy.backoff_ms(3) <= 400);
        assert!(policy.backoff_ms(9) <= 1_000);
    }
}

#[test]
fn the_queue_survives_reopening_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    {
        let q = SqliteQueue::open(&path).unwrap();
        q.enqueue("p", &[message("a"), message("b")]).unwrap();
        let batch = q.claim("p", 1, Duration::from_millis(1)).unwrap();
        assert_eq!(batch.len(), 1);
        // Dropped without ack: as if the process was killed.
    }
    std::thread::sleep(Duration::from_millis(5));
    let q = SqliteQueue::open(&path).unwrap();
    let batch = q.claim("p", 10, LEASE).unwrap();
    let ids: Vec<&str> = batch.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn deliveries_are_remembered_for_their_window() {
    let q = SqliteQueue::in_memory().unwrap();
    let window = Duration::from_millis(50);
    assert!(q.first_delivery("hook", "msg_1", window).unwrap());
    assert!(
        !q.first_delivery("hook", "msg_1", window).unwrap(),
        "replay"
    );
    assert!(q.first_delivery("other", "msg_1", window).unwrap());
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        q.first_delivery("hook", "msg_1", window).unwrap(),
        "window passed"
    );
}

#[test]
fn concurrent_deliveries_share_commits_and_each_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = std::sync::Arc::new(SqliteQueue::open(&path).unwrap());
    let window = Duration::from_secs(600);
    // 16 threads each deliver ids 0..20, and ids 0..5 by all of them: each
    // id is fresh for exactly one caller, whichever commit it lands in.
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut fresh = Vec::new();
                for i in 0..20 {
                    let id = if i < 5 {
                        format!("shared-{i}")
                    } else {
                        format!("t{t}-{i}")
                    };
                    let outcome = q
                        .enqueue_delivery("hook:h", "webhook:h", window, &id, &message(&id))
                        .unwrap();
                    if outcome == crate::queue::DeliveryOutcome::Queued {
                        fresh.push(id);
                    }
                }
                fresh
            })
        })
        .collect();
    let mut fresh: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    fresh.sort();
    let before = fresh.len();
    fresh.dedup();
    assert_eq!(before, fresh.len(), "an id was accepted twice");
    assert_eq!(fresh.len(), 5 + 16 * 15);
    drop(q);
    // Committed: a reopened queue holds every accepted delivery.
    let q = SqliteQueue::open(&path).unwrap();
    assert_eq!(q.stats("hook:h").unwrap().ready, fresh.len() as u64);
    assert!(!q.first_delivery("webhook:h", "shared-0", window).unwrap());
}

#[test]
fn a_batch_settles_in_one_transaction_each_message_by_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    let q = SqliteQueue::open(&path).unwrap();
    let ids = ["ok-1", "retry", "dead", "ok-2", "limited"];
    q.enqueue("p", &ids.map(message)).unwrap();
    let batch = q.claim("p", 10, LEASE).unwrap();
    let outcomes = [
        Ok(()),
        Err(ConnectorError::Retryable("503".into())),
        Err(ConnectorError::InvalidInput("not JSON".into())),
        Ok(()),
        Err(ConnectorError::RateLimited(RateLimit {
            message: "slow down".into(),
            retry_after_ms: Some(60_000),
        })),
    ];
    let settled = q.settle(batch.iter().zip(&outcomes), &no_wait()).unwrap();
    assert_eq!(
        settled,
        [
            None,
            Some(FailOutcome::RetryIn(Duration::ZERO)),
            Some(FailOutcome::DeadLettered),
            None,
            Some(FailOutcome::RetryIn(Duration::from_secs(60))),
        ]
    );
    // What was committed survives reopening the file.
    drop(q);
    let q = SqliteQueue::open(&path).unwrap();
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            ready: 2,
            done: 2,
            dead: 1,
            ..QueueStats::default()
        }
    );
    let due = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(due.len(), 1, "the rate-limited one waits");
    assert_eq!((due[0].message.id.as_str(), due[0].attempt), ("retry", 2));
    let letters = q.dead_letters(Some("p"), 10).unwrap();
    assert_eq!(letters[0].id, "dead");
    assert_eq!(letters[0].reason, "invalid-input error");
    assert_eq!(letters[0].last_error, "invalid-input: not JSON");
}

#[test]
fn claims_skip_delivered_rows_and_take_the_oldest_due_first() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("queue.sqlite")).unwrap();
    let first: Vec<Message> = (0..300).map(|i| message(&format!("old-{i}"))).collect();
    q.enqueue("p", &first).unwrap();
    let batch = q.claim("p", 300, LEASE).unwrap();
    q.ack(&batch).unwrap();
    let next: Vec<Message> = (0..10).map(|i| message(&format!("new-{i}"))).collect();
    q.enqueue("p", &next).unwrap();
    q.enqueue("other", &[message("elsewhere")]).unwrap();
    let batch = q.claim("p", 4, LEASE).unwrap();
    let ids: Vec<&str> = batch.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["new-0", "new-1", "new-2", "new-3"]);
    // Claims read the index of pending rows, not the table or a sort.
    let plan: Vec<String> = q
        .with(|db| {
            let mut explain = db.prepare(
                "EXPLAIN QUERY PLAN SELECT m.seq, b.payload
                 FROM messages m CROSS JOIN message_bodies b ON b.seq = m.seq
                 WHERE m.queue = 'p' AND m.state IN ('ready', 'in-flight')
                   AND m.available_at <= 0
                 ORDER BY m.seq LIMIT 10",
            )?;
            let rows = explain.query_map([], |row| row.get::<_, String>(3))?;
            rows.collect()
        })
        .unwrap();
    assert!(
        plan.iter().any(|step| step.contains("messages_pending")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("TEMP B-TREE")),
        "{plan:?}"
    );
}

/// The schema before message bodies moved to their own table (version 0),
/// as `SqliteQueue::init` created it.
const SCHEMA_V0: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        stream TEXT NOT NULL,
        id TEXT NOT NULL,
        key TEXT,
        headers TEXT NOT NULL,
        payload BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready',
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at INTEGER NOT NULL,
        reason TEXT,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        UNIQUE (queue, stream, id)
    );
    CREATE INDEX messages_due ON messages (queue, state, available_at);
    CREATE INDEX messages_pending ON messages (queue, seq)
      WHERE state IN ('ready', 'in-flight');
    CREATE TABLE cursors (
        sync TEXT NOT NULL,
        stream TEXT NOT NULL,
        cursor TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (sync, stream)
    );
    CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sync TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (source, id)
    );";

/// id, key, state, attempts, available_at, reason, last_error
type OldRow<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    u32,
    i64,
    Option<&'a str>,
    Option<&'a str>,
);
/// seq, id, attempt, payload, key, timestamp_ms
type Claimed<'a> = (i64, &'a str, u32, &'a [u8], Option<&'a str>, u64);

#[test]
fn a_file_from_a_newer_host_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    SqliteQueue::open(&path)
        .unwrap()
        .enqueue("p", &[message("a")])
        .unwrap();
    let newer = SCHEMA_VERSION + 1;
    Sqlite::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = SqliteQueue::open(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("schema version {newer} is newer")),
        "{err}"
    );
    assert!(err.contains("data_dir"), "{err}");
    // Nothing was changed: the message is still there.
    let db = Sqlite::open(&path).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, newer);
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM message_bodies", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn a_database_of_the_inline_body_schema_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(SCHEMA_V0).unwrap();
        let mut insert = db
            .prepare(
                "INSERT INTO messages (queue, stream, id, key, headers, payload, timestamp_ms,
                   state, attempts, available_at, reason, last_error, updated_at)
                 VALUES ('p', 'orders', ?1, ?2, ?3, ?4, 7, ?5, ?6, ?7, ?8, ?9, 5)",
            )
            .unwrap();
        let headers = r#"[["content-type","application/json"]]"#;
        let rows: [OldRow; 4] = [
            ("done", None, "done", 1, 0, None, None),
            (
                "ready",
                Some("k"),
                "ready",
                2,
                0,
                None,
                Some("retryable: busy"),
            ),
            (
                "dead",
                None,
                "dead",
                3,
                0,
                Some("permanent error"),
                Some("permanent: no"),
            ),
            // Claimed by a host that has since died; its lease ran out.
            ("leased", None, "in-flight", 1, 0, None, None),
        ];
        for (id, key, state, attempts, at, reason, error) in rows {
            insert
                .execute(rusqlite::params![
                    id,
                    key,
                    headers,
                    format!("body of {id}").into_bytes(),
                    state,
                    attempts,
                    at,
                    reason,
                    error
                ])
                .unwrap();
        }
        // Rows above seq 4 existed once: their seqs stay used.
        db.execute(
            "UPDATE sqlite_sequence SET seq = 10 WHERE name = 'messages'",
            [],
        )
        .unwrap();
        db.execute("INSERT INTO cursors VALUES ('s', 'orders', 'c-1', 1)", [])
            .unwrap();
    }

    let q = SqliteQueue::open(&path).unwrap();
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            ready: 1,
            in_flight: 1,
            done: 1,
            dead: 1
        }
    );
    assert_eq!(q.cursor("s", "orders").unwrap().as_deref(), Some("c-1"));
    let (letter, body) = q.dead_letter_message(3).unwrap().unwrap();
    assert_eq!(
        (letter.id.as_str(), letter.attempts, letter.reason.as_str()),
        ("dead", 3, "permanent error")
    );
    assert_eq!(body.payload, b"body of dead");
    assert_eq!(
        body.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    // Pending keys are still deduplicated; a delivered key comes again in
    // its old row; a new key takes a seq past the old counter.
    assert_eq!(
        q.enqueue("p", &[message("ready"), message("leased")])
            .unwrap(),
        0
    );
    assert_eq!(
        q.enqueue("p", &[message("done"), message("new")]).unwrap(),
        2
    );
    let batch = q.claim("p", 10, LEASE).unwrap();
    let got: Vec<Claimed> = batch
        .iter()
        .map(|d| {
            (
                d.seq,
                d.message.id.as_str(),
                d.attempt,
                d.message.payload.as_slice(),
                d.message.key.as_deref(),
                d.message.timestamp_ms,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "done", 1, &b"{\"id\":\"done\"}"[..], None, 1),
            (2, "ready", 3, &b"body of ready"[..], Some("k"), 7),
            (4, "leased", 2, &b"body of leased"[..], None, 7),
            (batch[3].seq, "new", 1, &b"{\"id\":\"new\"}"[..], None, 1),
        ]
    );
    // (Upserts that hit a pending key use up a seq too, as before.)
    assert!(batch[3].seq > 10, "seq {} reused", batch[3].seq);
    drop(q);
    // Opening again changes nothing.
    let q = SqliteQueue::open(&path).unwrap();
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            ready: 0,
            in_flight: 4,
            done: 0,
            dead: 1
        }
    );
    assert_eq!(q.replay(Some("p"), Some(3)).unwrap(), 1);
    q.release_claims().unwrap();
    assert_eq!(q.claim("p", 10, LEASE).unwrap().len(), 5);
}

#[test]
fn claims_and_settlements_leave_message_bodies_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("queue.sqlite")).unwrap();
    q.enqueue("p", &[message("a"), message("b")]).unwrap();
    let bodies = |q: &SqliteQueue| -> Vec<(i64, Vec<u8>)> {
        q.with(|db| {
            let mut select = db.prepare("SELECT seq, payload FROM message_bodies ORDER BY seq")?;
            let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .unwrap()
    };
    let before = bodies(&q);
    assert_eq!(before.len(), 2);
    let batch = q.claim("p", 10, LEASE).unwrap();
    let outcomes = [Ok(()), Err(ConnectorError::Retryable("later".into()))];
    q.settle(batch.iter().zip(&outcomes), &no_wait()).unwrap();
    assert_eq!(bodies(&q), before);
    // The retried one still carries its body on its next delivery.
    let again = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(again.len(), 1);
    assert_same(&again[0].message, &message("b"));
    assert_eq!(again[0].attempt, 2);
}

#[test]
fn a_delivery_again_is_a_duplicate_and_its_signed_material_under_a_new_id_a_replay() {
    use crate::queue::DeliveryOutcome::{Duplicate, Queued, Replayed};
    let q = SqliteQueue::in_memory().unwrap();
    let window = Duration::from_secs(600);
    let deliver = |id: &str, key: &str| {
        q.enqueue_delivery("hook:h", "webhook:h", window, key, &message(id))
            .unwrap()
    };
    assert_eq!(deliver("gh-1", "sha256:aa"), Queued);
    assert_eq!(
        deliver("gh-1", "sha256:aa"),
        Duplicate,
        "the sender's retry"
    );
    assert_eq!(deliver("gh-forged", "sha256:aa"), Replayed, "a new id");
    assert_eq!(deliver("gh-2", "sha256:bb"), Queued);
    assert_eq!(
        q.stats("hook:h").unwrap().ready,
        2,
        "each event queued once"
    );
}

/// Issue 14: a consumer that outlived its lease cannot settle a message
/// another consumer has claimed since.
#[test]
fn a_late_settlement_after_the_lease_ran_out_changes_nothing() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue("p", &[message("a"), message("b")]).unwrap();
    let slow = q.claim("p", 10, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let fresh = q.claim("p", 10, LEASE).unwrap();
    assert_eq!(fresh.len(), 2, "the lease ran out, so both are due again");
    assert_ne!(slow[0].token, fresh[0].token);
    // The slow consumer's ack and failure both come too late.
    assert_eq!(q.ack(&slow[..1]).unwrap(), [false]);
    let late = q
        .fail(
            &slow[1],
            &ConnectorError::Permanent("late".into()),
            &no_wait(),
        )
        .unwrap();
    assert_eq!(late, FailOutcome::LeaseLost);
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            in_flight: 2,
            ..QueueStats::default()
        },
        "nothing was marked done or dead"
    );
    // The current claim settles them.
    let outcomes = [Ok(()), Err(ConnectorError::Permanent("bad".into()))];
    let settled = q.settle(fresh.iter().zip(&outcomes), &no_wait()).unwrap();
    assert_eq!(settled, [None, Some(FailOutcome::DeadLettered)]);
    // A replayed dead letter is a new claim too: the old token is spent.
    q.replay(Some("p"), None).unwrap();
    let again = q.claim("p", 10, LEASE).unwrap();
    let stale = q.settle([(&fresh[1], &Ok(()))], &no_wait()).unwrap();
    assert_eq!(stale, [Some(FailOutcome::LeaseLost)]);
    assert_eq!(q.ack(&again).unwrap(), [true]);
}

/// Issue 14: the rule for a key that was dead-lettered. A later message
/// with the same (stream, id) is queued (a newer version of a record the
/// sink refused must not vanish) and supersedes the dead letter; the
/// receiver counts only what was stored.
#[test]
fn a_later_message_with_a_dead_letters_key_is_queued_and_supersedes_it() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue("p", &[message("a")]).unwrap();
    let batch = q.claim("p", 1, LEASE).unwrap();
    q.fail(
        &batch[0],
        &ConnectorError::Permanent("v1".into()),
        &no_wait(),
    )
    .unwrap();
    assert_eq!(q.stats("p").unwrap().dead, 1);
    let mut newer = message("a");
    newer.payload = b"{\"v\":2}".to_vec();
    assert_eq!(q.enqueue("p", &[newer.clone()]).unwrap(), 1, "stored");
    assert!(q.dead_letters(Some("p"), 10).unwrap().is_empty());
    let batch = q.claim("p", 1, LEASE).unwrap();
    assert_same(&batch[0].message, &newer);
    assert_eq!(batch[0].attempt, 1, "a fresh round of attempts");
    // While it is in flight, the same key is still a duplicate.
    assert_eq!(q.enqueue("p", &[message("a")]).unwrap(), 0);
}

/// Issue 14: a record dead-lettered straight away (a sync's refused
/// record) is never claimable, and a pending message of its key is left
/// alone.
#[test]
fn enqueue_dead_is_one_step_and_leaves_a_pending_key_alone() {
    let q = SqliteQueue::in_memory().unwrap();
    q.enqueue_dead("p", &message("a"), "refused by the sink", "permanent: no")
        .unwrap();
    assert!(q.claim("p", 10, LEASE).unwrap().is_empty());
    let letters = q.dead_letters(Some("p"), 10).unwrap();
    assert_eq!(
        (
            letters[0].id.as_str(),
            letters[0].reason.as_str(),
            letters[0].attempts
        ),
        ("a", "refused by the sink", 1)
    );
    q.enqueue("p", &[message("b")]).unwrap();
    q.enqueue_dead("p", &message("b"), "refused by the sink", "x")
        .unwrap();
    assert_eq!(
        q.stats("p").unwrap(),
        QueueStats {
            ready: 1,
            dead: 1,
            ..QueueStats::default()
        }
    );
}
