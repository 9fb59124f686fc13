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
    /// (stream, id) is still waiting or in flight is skipped, one that was
    /// delivered or dead-lettered comes again (see the module docs).
    /// Returns how many were stored.
    pub fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<usize, QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            let added = enqueue_in(&tx, queue, messages, "ready", now)?;
            tx.commit()?;
            Ok(added)
        })
    }
}

/// Inserts `messages` as `state` rows inside `tx`; how many were stored.
fn enqueue_in(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    messages: &[Message],
    state: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    let mut added = 0;
    let mut insert = tx.prepare_cached(
        // A key still waiting or in flight is a duplicate (no row comes
        // back); a key delivered or dead-lettered comes again as a new
        // message in its old row.
        "INSERT INTO messages (queue, stream, id, state, available_at, updated_at)
         VALUES (?1, ?2, ?3, ?5, ?4, ?4)
         ON CONFLICT (queue, stream, id) DO UPDATE SET
           state = excluded.state, attempts = 0, available_at = excluded.available_at,
           reason = NULL, last_error = NULL, updated_at = excluded.updated_at, claim_token = 0
         WHERE messages.state IN ('done', 'dead')
         RETURNING seq",
    )?;
    let mut body = tx.prepare_cached(BODY_INSERT)?;
    for m in messages {
        let seq: Option<i64> = insert
            .query_row(params![queue, m.stream, m.id, now, state], |row| row.get(0))
            .optional()?;
        if let Some(seq) = seq {
            insert_body(&mut body, seq, m)?;
            added += 1;
        }
    }
    Ok(added)
}

impl SqliteQueue {
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
        // Any other claim's token differs, so its settlements miss.
        let token = fastrand::i64(1..);
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
                        token,
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
                     available_at = ?2, updated_at = ?3, claim_token = ?4 WHERE seq = ?1",
                )?;
                for d in &claimed {
                    lease_row.execute(params![d.seq, until, now, token])?;
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

    /// Marks deliveries done, in one transaction; `false` for each whose
    /// claim had lost its lease (see [`FailOutcome::LeaseLost`]).
    pub fn ack(&self, deliveries: &[Delivery]) -> Result<Vec<bool>, QueueError> {
        let plans: Vec<(i64, i64, Settlement)> = (deliveries.iter())
            .map(|d| (d.seq, d.token, Settlement::Done))
            .collect();
        self.apply_plans(&plans)
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
        let plans: Vec<(i64, i64, Settlement)> = outcomes
            .into_iter()
            .map(|(delivery, outcome)| {
                let plan = Settlement::plan(delivery, outcome, policy);
                (delivery.seq, delivery.token, plan)
            })
            .collect();
        let applied = self.apply_plans(&plans)?;
        Ok(outcomes_of(&plans, &applied))
    }

    /// Writes settlement plans (seq, claim token, plan) in one
    /// transaction; whether each still held its lease.
    pub(super) fn apply_plans(
        &self,
        plans: &[(i64, i64, Settlement)],
    ) -> Result<Vec<bool>, QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            let mut applied = Vec::with_capacity(plans.len());
            for (seq, token, plan) in plans {
                applied.push(apply(&tx, *seq, *token, plan, now)?);
            }
            tx.commit()?;
            Ok(applied)
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
                 reason = NULL, updated_at = ?3, claim_token = 0
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
    /// (a sync's record the sink refused), in one transaction: the row is
    /// born dead, so no consumer can claim it on the way. A message of the
    /// same key still waiting or in flight is left as it is.
    pub fn enqueue_dead(
        &self,
        queue: &str,
        message: &Message,
        reason: &str,
        last_error: &str,
    ) -> Result<(), QueueError> {
        let now = now_ms();
        self.with(|db| {
            let tx = db.transaction()?;
            if enqueue_in(&tx, queue, std::slice::from_ref(message), "dead", now)? == 1 {
                tx.execute(
                    "UPDATE messages SET reason = ?4, last_error = ?5, attempts = 1
                     WHERE queue = ?1 AND stream = ?2 AND id = ?3",
                    params![queue, message.stream, message.id, reason, last_error],
                )?;
            }
            tx.commit()
        })?;
        Ok(())
    }
}

/// What each plan did, given whether it still held its lease.
pub(super) fn outcomes_of(
    plans: &[(i64, i64, Settlement)],
    applied: &[bool],
) -> Vec<Option<FailOutcome>> {
    plans
        .iter()
        .zip(applied)
        .map(|((_, _, plan), applied)| {
            if *applied {
                plan.outcome()
            } else {
                Some(FailOutcome::LeaseLost)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
