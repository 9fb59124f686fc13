//! [`SqliteQueue`]: the queue on one SQLite file, the embedded default.
//!
//! Split by what each part does: this file claims and settles, `deliveries`
//! takes webhook deliveries with group commit, `cursors` keeps sync
//! cursors and run reports, `schema` creates and migrates the tables, and
//! `blocking` runs all of it off the async workers for the [`Queue`]
//! trait.

mod blocking;
mod cursors;
mod deliveries;
mod schema;

#[cfg(doc)]
use super::Queue;
use super::{
    DeadLetter, Delivery, FailOutcome, QueueError, QueueStats, RetryPolicy, Settlement, now_ms,
};
use crate::bindings::{ConnectorError, Message};
use deliveries::PendingDelivery;
use rusqlite::{Connection as Sqlite, OptionalExtension, params};
use schema::{BODY_INSERT, apply, dead_letter_row, insert_body, migrate};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The queue on one SQLite file (WAL, `synchronous=FULL`). Cheap to
/// clone; clones share the database.
///
/// Its inherent methods block on SQLite (and on fsync); the [`Queue`] impl
/// runs them on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: Arc<Mutex<Sqlite>>,
    /// Webhook deliveries waiting to be committed together (see
    /// [`enqueue_delivery`](SqliteQueue::enqueue_delivery)).
    pending: Arc<Mutex<Vec<Arc<PendingDelivery>>>>,
}

impl SqliteQueue {
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
        Ok(SqliteQueue {
            db: Arc::new(Mutex::new(db)),
            pending: Arc::default(),
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
    /// `Ok` is acked as [`ack`](SqliteQueue::ack) would, each error scheduled as
    /// [`fail`](SqliteQueue::fail) would, one by one by its own error. All or
    /// nothing: if the commit fails, none is settled and every delivery
    /// comes again when its lease runs out. Returns, in order, `None` for
    /// an ack and what happened to each failure.
    pub fn settle<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (&'a Delivery, &'a Result<(), ConnectorError>)>,
        policy: &RetryPolicy,
    ) -> Result<Vec<Option<FailOutcome>>, QueueError> {
        let plans: Vec<(i64, Settlement)> = outcomes
            .into_iter()
            .map(|(delivery, outcome)| (delivery.seq, Settlement::plan(delivery, outcome, policy)))
            .collect();
        self.apply_plans(&plans)?;
        Ok(plans.iter().map(|(_, plan)| plan.outcome()).collect())
    }

    /// Writes settlement plans in one transaction.
    pub(super) fn apply_plans(&self, plans: &[(i64, Settlement)]) -> Result<(), QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            for (seq, plan) in plans {
                apply(&tx, *seq, plan, now)?;
            }
            tx.commit()
        })
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

#[cfg(test)]
mod tests;
