//! The durable queue between pipeline stages, on SQLite (WAL), the
//! embedded default.
//!
//! Delivery is at least once. A consumer *claims* a batch, which leases the
//! rows for a while; it then *acks* what succeeded and *fails* the rest
//! with the connector's error, which decides what happens next:
//! `retryable` retries after exponential backoff with jitter,
//! `rate-limited` retries after the upstream's `retry-after`, `permanent`
//! and `invalid-input` go to the dead-letter queue at once, and so does
//! anything past `max_attempts`. A process killed mid-batch leaves rows
//! claimed; their lease runs out and they are delivered again.
//!
//! Every message is keyed by (queue, stream, id): enqueueing a key that is
//! still pending stores it once, and the key travels to the sink as the
//! `idempotency-key` header so a sink can drop duplicates of a redelivery.

use crate::bindings::{ConnectorError, Message};
use rusqlite::{Connection as Sqlite, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[error("queue database: {0}")]
pub struct QueueError(#[from] rusqlite::Error);

/// How often and how patiently a queue retries. Defaults: 5 attempts,
/// 500 ms doubling to at most 60 s, full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Deliveries in all before a message is dead-lettered.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 500,
            max_delay_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before delivery `attempt + 1`, jittered over [0, cap].
    pub(crate) fn backoff_ms(&self, attempt: u32) -> u64 {
        let cap = self
            .base_delay_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay_ms);
        fastrand::u64(0..=cap)
    }
}

/// A claimed message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The row, for `ack` and `fail`.
    pub seq: i64,
    /// This delivery's number, 1 for the first.
    pub attempt: u32,
    pub message: Message,
}

/// What `fail` did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Delivered again after this long.
    RetryIn(Duration),
    /// Moved to the dead-letter queue.
    DeadLettered,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub seq: i64,
    pub queue: String,
    pub id: String,
    pub stream: String,
    pub attempts: u32,
    /// Why it was dead-lettered (`permanent`, `max attempts`, …).
    pub reason: String,
    /// The last error the consumer reported.
    pub last_error: String,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub failed_at_ms: i64,
}

/// A dead letter with its message, as the admin API and CLI show it
/// (payload as text, lossily decoded).
pub fn dead_letter_view(letter: &DeadLetter, message: &Message) -> serde_json::Value {
    serde_json::json!({
        "dead_letter": letter,
        "message": {
            "id": message.id,
            "stream": message.stream,
            "key": message.key,
            "headers": message.headers,
            "payload": String::from_utf8_lossy(&message.payload),
            "timestamp_ms": message.timestamp_ms,
        }
    })
}

/// Message counts of one queue by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub ready: u64,
    pub in_flight: u64,
    pub done: u64,
    pub dead: u64,
}

/// The host's queue database.
#[derive(Debug)]
pub struct Queue {
    db: Mutex<Sqlite>,
    /// Webhook deliveries waiting to be committed together (see
    /// [`enqueue_delivery`](Queue::enqueue_delivery)).
    pending: Mutex<Vec<Arc<PendingDelivery>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Queue {
    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        Self::init(Sqlite::open(path)?)
    }

    /// A private in-memory queue, for tests and embedders.
    pub fn in_memory() -> Result<Self, QueueError> {
        Self::init(Sqlite::open_in_memory()?)
    }

    fn init(mut db: Sqlite) -> Result<Self, QueueError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: an acknowledged enqueue survives a power cut, not only a
        // killed process; webhooks answer 202 only after this commit.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut db)?;
        Ok(Queue {
            db: Mutex::new(db),
            pending: Mutex::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sqlite) -> rusqlite::Result<T>) -> Result<T, QueueError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut db)?)
    }

    /// Stores `messages` on `queue` in one transaction; a message whose
    /// (stream, id) is still pending (waiting, in flight or dead) is
    /// skipped. Returns how many were stored.
    pub fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<usize, QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            let mut added = 0;
            {
                let mut insert = tx.prepare_cached(
                    // A key still waiting, in flight or dead is a duplicate
                    // (no row comes back); a key already delivered comes
                    // again as a new message in its old row.
                    "INSERT INTO messages (queue, stream, id, available_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)
                     ON CONFLICT (queue, stream, id) DO UPDATE SET
                       state = 'ready', attempts = 0, available_at = excluded.available_at,
                       reason = NULL, last_error = NULL, updated_at = excluded.updated_at
                     WHERE messages.state = 'done'
                     RETURNING seq",
                )?;
                let mut body = tx.prepare_cached(BODY_INSERT)?;
                for m in messages {
                    let seq: Option<i64> = insert
                        .query_row(params![queue, m.stream, m.id, now], |row| row.get(0))
                        .optional()?;
                    if let Some(seq) = seq {
                        insert_body(&mut body, seq, m)?;
                        added += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(added)
        })
    }

    /// Leases up to `max` due messages of `queue` for `lease`, oldest
    /// first. Messages claimed earlier whose lease ran out (a consumer
    /// died) are due again.
    pub fn claim(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        self.with(|db| {
            let tx = db.transaction()?;
            let claimed = {
                // CROSS JOIN: walk the pending index, then look each body
                // up by seq.
                let mut select = tx.prepare_cached(
                    "SELECT m.seq, m.stream, m.id, b.key, b.headers, b.payload, b.timestamp_ms,
                            m.attempts
                     FROM messages m CROSS JOIN message_bodies b ON b.seq = m.seq
                     WHERE m.queue = ?1 AND m.state IN ('ready', 'in-flight')
                       AND m.available_at <= ?2
                     ORDER BY m.seq LIMIT ?3",
                )?;
                let rows = select.query_map(params![queue, now, max as i64], |row| {
                    let headers: String = row.get(4)?;
                    let attempts: u32 = row.get(7)?;
                    Ok(Delivery {
                        seq: row.get(0)?,
                        attempt: attempts + 1,
                        message: Message {
                            stream: row.get(1)?,
                            id: row.get(2)?,
                            key: row.get(3)?,
                            headers: serde_json::from_str(&headers).unwrap_or_default(),
                            payload: row.get(5)?,
                            timestamp_ms: row.get::<_, i64>(6)? as u64,
                        },
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            {
                let mut lease_row = tx.prepare_cached(
                    "UPDATE messages SET state = 'in-flight', attempts = attempts + 1,
                     available_at = ?2, updated_at = ?3 WHERE seq = ?1",
                )?;
                for d in &claimed {
                    lease_row.execute(params![d.seq, until, now])?;
                }
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    /// Makes every claimed message due again. For a host that is the only
    /// consumer of its queue (the embedded default) and is starting up:
    /// nothing can still be working on them, so there is no need to wait
    /// for their leases to run out.
    pub fn release_claims(&self) -> Result<usize, QueueError> {
        let now = now_ms();
        self.with(|db| {
            db.execute(
                "UPDATE messages SET state = 'ready', available_at = ?1, updated_at = ?1
                 WHERE state = 'in-flight'",
                params![now],
            )
        })
    }

    /// Marks deliveries done, in one transaction.
    pub fn ack(&self, seqs: &[i64]) -> Result<(), QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            for seq in seqs {
                apply(&tx, *seq, &Settlement::Done, now)?;
            }
            tx.commit()
        })
    }

    /// Records a failed delivery and schedules what the error calls for.
    pub fn fail(
        &self,
        delivery: &Delivery,
        error: &ConnectorError,
        policy: &RetryPolicy,
    ) -> Result<FailOutcome, QueueError> {
        let outcome = Err(error.clone());
        let settled = self.settle([(delivery, &outcome)], policy)?;
        Ok(settled
            .into_iter()
            .next()
            .flatten()
            .expect("a failure settles as one"))
    }

    /// Settles a consumer's batch in one transaction (one fsync): each
    /// `Ok` is acked as [`ack`](Queue::ack) would, each error scheduled as
    /// [`fail`](Queue::fail) would, one by one by its own error. All or
    /// nothing: if the commit fails, none is settled and every delivery
    /// comes again when its lease runs out. Returns, in order, `None` for
    /// an ack and what happened to each failure.
    pub fn settle<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (&'a Delivery, &'a Result<(), ConnectorError>)>,
        policy: &RetryPolicy,
    ) -> Result<Vec<Option<FailOutcome>>, QueueError> {
        let now = now_ms();
        let plans: Vec<(i64, Settlement)> = outcomes
            .into_iter()
            .map(|(delivery, outcome)| {
                let plan = match outcome {
                    Ok(()) => Settlement::Done,
                    Err(error) => Settlement::after_failure(delivery, error, policy),
                };
                (delivery.seq, plan)
            })
            .collect();
        self.with(|db| {
            let tx = db.transaction()?;
            for (seq, plan) in &plans {
                apply(&tx, *seq, plan, now)?;
            }
            tx.commit()
        })?;
        Ok(plans
            .into_iter()
            .map(|(_, plan)| match plan {
                Settlement::Done => None,
                Settlement::Retry { wait_ms, .. } => {
                    Some(FailOutcome::RetryIn(Duration::from_millis(wait_ms)))
                }
                Settlement::Dead { .. } => Some(FailOutcome::DeadLettered),
            })
            .collect())
    }

    /// Dead letters, oldest first, of one queue or all.
    pub fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.with(|db| {
            let mut select = db.prepare_cached(
                "SELECT seq, queue, id, stream, attempts, reason, last_error, updated_at
                 FROM messages WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1)
                 ORDER BY seq LIMIT ?2",
            )?;
            let rows = select.query_map(params![queue, limit as i64], dead_letter_row)?;
            rows.collect()
        })
    }

    /// One dead letter with its message, in one query.
    pub fn dead_letter_message(
        &self,
        seq: i64,
    ) -> Result<Option<(DeadLetter, Message)>, QueueError> {
        self.with(|db| {
            db.query_row(
                "SELECT m.seq, m.queue, m.id, m.stream, m.attempts, m.reason, m.last_error,
                        m.updated_at, b.key, b.headers, b.payload, b.timestamp_ms
                 FROM messages m JOIN message_bodies b ON b.seq = m.seq
                 WHERE m.seq = ?1 AND m.state = 'dead'",
                params![seq],
                |row| {
                    let letter = dead_letter_row(row)?;
                    let headers: String = row.get(9)?;
                    let message = Message {
                        stream: letter.stream.clone(),
                        id: letter.id.clone(),
                        key: row.get(8)?,
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        payload: row.get(10)?,
                        timestamp_ms: row.get::<_, i64>(11)? as u64,
                    };
                    Ok((letter, message))
                },
            )
            .optional()
        })
    }

    /// Puts dead letters back on their queue for a fresh round of
    /// attempts: one (`Some(seq)`) or every one of `queue`. Returns how
    /// many were replayed.
    pub fn replay(&self, queue: Option<&str>, seq: Option<i64>) -> Result<usize, QueueError> {
        let now = now_ms();
        self.with(|db| {
            db.execute(
                "UPDATE messages SET state = 'ready', attempts = 0, available_at = ?3,
                 reason = NULL, updated_at = ?3
                 WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR seq = ?2)",
                params![queue, seq, now],
            )
        })
    }

    /// Counts by state.
    pub fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        self.with(|db| {
            let mut stats = QueueStats::default();
            let mut select = db.prepare_cached(
                "SELECT state, COUNT(*) FROM messages WHERE queue = ?1 GROUP BY state",
            )?;
            let rows = select.query_map(params![queue], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?;
            for row in rows {
                let (state, n) = row?;
                match state.as_str() {
                    "ready" => stats.ready = n,
                    "in-flight" => stats.in_flight = n,
                    "done" => stats.done = n,
                    "dead" => stats.dead = n,
                    _ => {}
                }
            }
            Ok(stats)
        })
    }

    /// Counts by state of every queue that holds messages, by queue name
    /// (one query, for the metrics scrape).
    pub fn all_stats(&self) -> Result<Vec<(String, QueueStats)>, QueueError> {
        self.with(|db| {
            let mut select = db.prepare_cached(
                "SELECT queue, state, COUNT(*) FROM messages GROUP BY queue, state ORDER BY queue",
            )?;
            let rows = select.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)? as u64,
                ))
            })?;
            let mut all: Vec<(String, QueueStats)> = Vec::new();
            for row in rows {
                let (queue, state, n) = row?;
                if all.last().is_none_or(|(q, _)| *q != queue) {
                    all.push((queue, QueueStats::default()));
                }
                let stats = &mut all.last_mut().expect("pushed above").1;
                match state.as_str() {
                    "ready" => stats.ready = n,
                    "in-flight" => stats.in_flight = n,
                    "done" => stats.done = n,
                    "dead" => stats.dead = n,
                    _ => {}
                }
            }
            Ok(all)
        })
    }

    /// When the next message of `queue` is due, if any is waiting.
    pub fn next_due_in(&self, queue: &str) -> Result<Option<Duration>, QueueError> {
        let next: Option<i64> = self.with(|db| {
            db.query_row(
                "SELECT MIN(available_at) FROM messages
                 WHERE queue = ?1 AND state IN ('ready', 'in-flight')",
                params![queue],
                |row| row.get(0),
            )
            .optional()
            .map(Option::flatten)
        })?;
        Ok(next.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64)))
    }

    /// Remembers delivery `id` from `source` for `window`; `false` if it
    /// was already seen within it (a replay). Older entries are pruned.
    pub fn first_delivery(
        &self,
        source: &str,
        id: &str,
        window: Duration,
    ) -> Result<bool, QueueError> {
        self.with(|db| {
            let tx = db.transaction()?;
            let fresh = remember_delivery(&tx, source, id, window)?;
            tx.commit()?;
            Ok(fresh)
        })
    }

    /// [`first_delivery`](Queue::first_delivery) and, if it is the first,
    /// enqueues `message`, in one transaction: an event is either both
    /// remembered and queued or neither, so a sender's retry after a crash
    /// is not mistaken for a replay.
    ///
    /// Returns once that transaction is committed (durably: the database
    /// runs with `synchronous=FULL`). Concurrent callers share commits
    /// (group commit): whoever holds the database next writes every
    /// delivery waiting by then, each in a savepoint of its own, and
    /// commits once; the others find their result written when they get
    /// the database. One fsync then covers many webhook requests, and none
    /// is answered before its own delivery is on disk.
    pub fn enqueue_delivery(
        &self,
        queue: &str,
        source: &str,
        window: Duration,
        message: &Message,
    ) -> Result<bool, QueueError> {
        let mine = Arc::new(PendingDelivery {
            queue: queue.to_owned(),
            source: source.to_owned(),
            window,
            message: message.clone(),
            result: Mutex::new(None),
        });
        lock(&self.pending).push(mine.clone());
        let mut db = lock(&self.db);
        if let Some(result) = lock(&mine.result).take() {
            // An earlier holder of the database committed it.
            return result;
        }
        let batch = std::mem::take(&mut *lock(&self.pending));
        debug_assert!(batch.iter().any(|p| Arc::ptr_eq(p, &mine)));
        let results = commit_deliveries(&mut db, &batch);
        for (pending, result) in batch.iter().zip(results) {
            *lock(&pending.result) = Some(result);
        }
        drop(db);
        lock(&mine.result)
            .take()
            .expect("this batch held our delivery")
    }
}

/// A delivery waiting for a group commit, and then its result.
#[derive(Debug)]
struct PendingDelivery {
    queue: String,
    source: String,
    window: Duration,
    message: Message,
    result: Mutex<Option<Result<bool, QueueError>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers and enqueues each of `batch` in one transaction, each in a
/// savepoint so that one failing leaves the others; one result each, in
/// order. If the commit fails, every one fails.
fn commit_deliveries(
    db: &mut Sqlite,
    batch: &[Arc<PendingDelivery>],
) -> Vec<Result<bool, QueueError>> {
    let now = now_ms();
    let mut results = Vec::with_capacity(batch.len());
    let committed = (|| {
        let mut tx = db.transaction()?;
        for pending in batch {
            let mut savepoint = tx.savepoint()?;
            match store_delivery(&savepoint, pending, now) {
                Ok(fresh) => {
                    savepoint.commit()?;
                    results.push(Ok(fresh));
                }
                Err(e) => {
                    savepoint.rollback()?;
                    drop(savepoint);
                    results.push(Err(QueueError(e)));
                }
            }
        }
        tx.commit()
    })();
    match committed {
        Ok(()) => results,
        Err(e) => batch
            .iter()
            .map(|_| Err(QueueError(copy_error(&e))))
            .collect(),
    }
}

/// One delivery of a group commit: `Ok(false)` if it is a replay.
fn store_delivery(tx: &Sqlite, pending: &PendingDelivery, now: i64) -> rusqlite::Result<bool> {
    let message = &pending.message;
    if !remember_delivery(tx, &pending.source, &message.id, pending.window)? {
        return Ok(false);
    }
    let seq: Option<i64> = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO messages (queue, stream, id, available_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING seq",
        )?
        .query_row(
            params![pending.queue, message.stream, message.id, now],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(seq) = seq {
        insert_body(&mut tx.prepare_cached(BODY_INSERT)?, seq, message)?;
    }
    Ok(true)
}

/// The same error for every delivery of a failed group commit
/// (`rusqlite::Error` is not `Clone`).
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

impl Queue {
    /// The committed cursor of a sync's stream.
    pub fn cursor(&self, sync: &str, stream: &str) -> Result<Option<String>, QueueError> {
        self.with(|db| {
            db.query_row(
                "SELECT cursor FROM cursors WHERE sync = ?1 AND stream = ?2",
                params![sync, stream],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// Commits a sync stream's cursor; call only once the sink has
    /// acknowledged everything read up to it.
    pub fn commit_cursor(&self, sync: &str, stream: &str, cursor: &str) -> Result<(), QueueError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO cursors (sync, stream, cursor, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sync, stream) DO UPDATE SET cursor = excluded.cursor,
                 updated_at = excluded.updated_at",
                params![sync, stream, cursor, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Forgets a sync stream's cursor (a full refresh starts over).
    pub fn reset_cursor(&self, sync: &str, stream: &str) -> Result<(), QueueError> {
        self.with(|db| {
            db.execute(
                "DELETE FROM cursors WHERE sync = ?1 AND stream = ?2",
                params![sync, stream],
            )
        })?;
        Ok(())
    }

    /// Records a finished sync run (its report as JSON).
    pub fn record_run(&self, sync: &str, report: &str) -> Result<(), QueueError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO sync_runs (sync, report) VALUES (?1, ?2)",
                params![sync, report],
            )
        })?;
        Ok(())
    }

    /// The latest `limit` run reports of a sync, newest first.
    pub fn runs(&self, sync: &str, limit: usize) -> Result<Vec<String>, QueueError> {
        self.with(|db| {
            let mut select = db.prepare_cached(
                "SELECT report FROM sync_runs WHERE sync = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = select.query_map(params![sync, limit as i64], |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Puts `message` straight into the dead-letter queue of `queue`
    /// (a sync's record the sink refused).
    pub fn enqueue_dead(
        &self,
        queue: &str,
        message: &Message,
        reason: &str,
        last_error: &str,
    ) -> Result<(), QueueError> {
        self.enqueue(queue, std::slice::from_ref(message))?;
        self.with(|db| {
            db.execute(
                "UPDATE messages SET state = 'dead', reason = ?4, last_error = ?5, attempts = 1,
                 updated_at = ?6 WHERE queue = ?1 AND stream = ?2 AND id = ?3",
                params![
                    queue,
                    message.stream,
                    message.id,
                    reason,
                    last_error,
                    now_ms()
                ],
            )
        })?;
        Ok(())
    }
}

/// The schema version `init` brings a database to (`PRAGMA user_version`).
/// 0: `messages` held each message's body inline (before this version);
/// 1: bodies live in `message_bodies`, written once, so that claims and
/// settlements rewrite only a small row of state.
const SCHEMA_VERSION: i64 = 1;

/// The tables and indexes of [`SCHEMA_VERSION`]; idempotent.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        stream TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready',
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at INTEGER NOT NULL,
        reason TEXT,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        UNIQUE (queue, stream, id)
    );
    -- What a message carries, keyed by its row in `messages`: written when
    -- it is enqueued and never touched by claims or settlements.
    CREATE TABLE IF NOT EXISTS message_bodies (
        seq INTEGER PRIMARY KEY,
        key TEXT,
        headers TEXT NOT NULL,
        payload BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, state, available_at);
    -- Claims walk this in seq order and stop after a batch: neither
    -- delivered rows nor a long backlog (which the index above
    -- would sort in full on every claim) slows them.
    CREATE INDEX IF NOT EXISTS messages_pending ON messages (queue, seq)
      WHERE state IN ('ready', 'in-flight');
    CREATE TABLE IF NOT EXISTS cursors (
        sync TEXT NOT NULL,
        stream TEXT NOT NULL,
        cursor TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (sync, stream)
    );
    CREATE TABLE IF NOT EXISTS sync_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sync TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS deliveries (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (source, id)
    );
    -- Every delivery prunes those past their window: a range, not a scan.
    CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen_at);";

/// Brings the database to [`SCHEMA_VERSION`] in one transaction: a fresh
/// file gets the schema; a version-0 file has its messages split into
/// state and body rows (same seq, same states, attempts and errors) and
/// keeps its seq counter, so no seq is ever reused.
fn migrate(db: &mut Sqlite) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        // Its tables may mean something this host would misread.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the file's schema version {version} is newer than this host's \
                 ({SCHEMA_VERSION}): it was written by a newer Switchyard; run that \
                 version, or point data_dir at a new directory"
            )),
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let inline_bodies: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = 'payload')",
        [],
        |row| row.get(0),
    )?;
    if inline_bodies {
        tx.execute_batch(
            "DROP INDEX IF EXISTS messages_due;
             DROP INDEX IF EXISTS messages_pending;
             ALTER TABLE messages RENAME TO messages_v0;",
        )?;
    }
    tx.execute_batch(SCHEMA)?;
    if inline_bodies {
        tx.execute_batch(
            "INSERT INTO messages (seq, queue, stream, id, state, attempts, available_at,
                                   reason, last_error, updated_at)
               SELECT seq, queue, stream, id, state, attempts, available_at,
                      reason, last_error, updated_at FROM messages_v0;
             INSERT INTO message_bodies (seq, key, headers, payload, timestamp_ms)
               SELECT seq, key, headers, payload, timestamp_ms FROM messages_v0;
             -- The old counter, not the highest surviving seq.
             DELETE FROM sqlite_sequence WHERE name = 'messages';
             UPDATE sqlite_sequence SET name = 'messages' WHERE name = 'messages_v0';
             DROP TABLE messages_v0;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Stores a message's body for its row `seq` (replacing the body of a
/// delivered message whose key came again).
const BODY_INSERT: &str = "INSERT OR REPLACE INTO message_bodies
     (seq, key, headers, payload, timestamp_ms) VALUES (?1, ?2, ?3, ?4, ?5)";

fn insert_body(
    statement: &mut rusqlite::CachedStatement<'_>,
    seq: i64,
    m: &Message,
) -> rusqlite::Result<()> {
    let headers = serde_json::to_string(&m.headers).expect("strings serialize");
    statement.execute(params![
        seq,
        m.key,
        headers,
        m.payload,
        m.timestamp_ms as i64
    ])?;
    Ok(())
}

/// A dead letter from the first eight columns of a `messages` row:
/// seq, queue, id, stream, attempts, reason, last_error, updated_at.
fn dead_letter_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        seq: row.get(0)?,
        queue: row.get(1)?,
        id: row.get(2)?,
        stream: row.get(3)?,
        attempts: row.get(4)?,
        reason: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
        last_error: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
        failed_at_ms: row.get(7)?,
    })
}

fn remember_delivery(
    db: &Sqlite,
    source: &str,
    id: &str,
    window: Duration,
) -> rusqlite::Result<bool> {
    let now = now_ms();
    let oldest = now - window.as_millis() as i64;
    db.prepare_cached("DELETE FROM deliveries WHERE seen_at < ?1")?
        .execute(params![oldest])?;
    let added = db
        .prepare_cached(
            "INSERT OR IGNORE INTO deliveries (source, id, seen_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![source, id, now])?;
    Ok(added == 1)
}

/// What settling one delivery writes.
#[derive(Debug)]
enum Settlement {
    Done,
    Retry { wait_ms: u64, last_error: String },
    Dead { reason: String, last_error: String },
}

impl Settlement {
    /// What the connector's error calls for (see the module docs).
    fn after_failure(delivery: &Delivery, error: &ConnectorError, policy: &RetryPolicy) -> Self {
        let message = crate::error::guest_error_message(error);
        let (kind, retry_after) = match error {
            ConnectorError::Retryable(_) => ("retryable", None),
            ConnectorError::RateLimited(r) => ("rate-limited", r.retry_after_ms),
            ConnectorError::Permanent(_) => ("permanent", None),
            ConnectorError::InvalidInput(_) => ("invalid-input", None),
        };
        let last_error = format!("{kind}: {message}");
        let permanent = matches!(kind, "permanent" | "invalid-input");
        if permanent || delivery.attempt >= policy.max_attempts {
            let reason = if permanent {
                format!("{kind} error")
            } else {
                format!("gave up after {} attempts", delivery.attempt)
            };
            return Settlement::Dead { reason, last_error };
        }
        let wait_ms = retry_after
            .unwrap_or(0)
            .max(policy.backoff_ms(delivery.attempt));
        Settlement::Retry {
            wait_ms,
            last_error,
        }
    }
}

/// Writes one settlement inside a transaction.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    plan: &Settlement,
    now: i64,
) -> rusqlite::Result<()> {
    match plan {
        Settlement::Done => {
            tx.prepare_cached(
                "UPDATE messages SET state = 'done', updated_at = ?2, last_error = NULL
                 WHERE seq = ?1",
            )?
            .execute(params![seq, now])?;
        }
        Settlement::Retry {
            wait_ms,
            last_error,
        } => {
            tx.prepare_cached(
                "UPDATE messages SET state = 'ready', available_at = ?2, last_error = ?3,
                 updated_at = ?4 WHERE seq = ?1",
            )?
            .execute(params![seq, now + *wait_ms as i64, last_error, now])?;
        }
        Settlement::Dead { reason, last_error } => {
            tx.prepare_cached(
                "UPDATE messages SET state = 'dead', reason = ?2, last_error = ?3, updated_at = ?4
                 WHERE seq = ?1",
            )?
            .execute(params![seq, reason, last_error, now])?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
