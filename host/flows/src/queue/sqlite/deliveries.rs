//! Webhook deliveries: remembered for replay detection and enqueued in
//! one transaction, many requests sharing one commit (group commit).

use super::SqliteQueue;
use super::schema::{BODY_INSERT, insert_body};
use crate::bindings::Message;
use crate::queue::{DeliveryOutcome, QueueError, now_ms};
use rusqlite::{Connection as Sqlite, OptionalExtension, params};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl SqliteQueue {
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

    /// Remembers delivery `message.id` under `replay_key` (what its
    /// signature covers, canonically) from `source` for `window` and, if
    /// the key is new, enqueues `message`, in one transaction: an event is
    /// either both remembered and queued or neither, so a sender's retry
    /// after a crash is not mistaken for a replay. The same id with the
    /// same key again is the sender retrying ([`DeliveryOutcome::Duplicate`],
    /// nothing queued); the same key under another id is a replay of
    /// captured material ([`DeliveryOutcome::Replayed`]).
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
        replay_key: &str,
        message: &Message,
    ) -> Result<DeliveryOutcome, QueueError> {
        let mine = Arc::new(PendingDelivery {
            queue: queue.to_owned(),
            source: source.to_owned(),
            window,
            replay_key: replay_key.to_owned(),
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
pub(super) struct PendingDelivery {
    queue: String,
    source: String,
    window: Duration,
    replay_key: String,
    message: Message,
    result: Mutex<Option<Result<DeliveryOutcome, QueueError>>>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers and enqueues each of `batch` in one transaction, each in a
/// savepoint so that one failing leaves the others; one result each, in
/// order. If the commit fails, every one fails.
fn commit_deliveries(
    db: &mut Sqlite,
    batch: &[Arc<PendingDelivery>],
) -> Vec<Result<DeliveryOutcome, QueueError>> {
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
                    results.push(Err(QueueError::from(e)));
                }
            }
        }
        tx.commit()
    })();
    match committed {
        Ok(()) => results,
        Err(e) => batch
            .iter()
            .map(|_| Err(QueueError::from(copy_error(&e))))
            .collect(),
    }
}

/// One delivery of a group commit.
fn store_delivery(
    tx: &Sqlite,
    pending: &PendingDelivery,
    now: i64,
) -> rusqlite::Result<DeliveryOutcome> {
    let message = &pending.message;
    // The key with the id it came with, so a retry is told from a replay.
    let pair = format!("{} {}", pending.replay_key, message.id);
    if delivery_seen(tx, &pending.source, &pair, pending.window)? {
        return Ok(DeliveryOutcome::Duplicate);
    }
    if !remember_delivery(tx, &pending.source, &pending.replay_key, pending.window)? {
        return Ok(DeliveryOutcome::Replayed);
    }
    remember_delivery(tx, &pending.source, &pair, pending.window)?;
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
    Ok(DeliveryOutcome::Queued)
}

/// Whether `id` from `source` was remembered within `window`.
fn delivery_seen(db: &Sqlite, source: &str, id: &str, window: Duration) -> rusqlite::Result<bool> {
    let oldest = now_ms() - window.as_millis() as i64;
    db.prepare_cached("SELECT 1 FROM deliveries WHERE source = ?1 AND id = ?2 AND seen_at >= ?3")?
        .query_row(params![source, id, oldest], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
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
