//! Sync cursors and run reports, in the queue's database (the
//! [`CursorStore`](crate::cursors::CursorStore) of the embedded default).

use super::SqliteQueue;
use crate::queue::{QueueError, now_ms};
use rusqlite::{OptionalExtension, params};

impl SqliteQueue {
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

    /// Records a sync run's report (JSON) over what the same run recorded
    /// before.
    pub fn record_run(
        &self,
        sync: &str,
        started_at_ms: u64,
        report: &str,
    ) -> Result<(), QueueError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO sync_runs (sync, started_at, report) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sync, started_at) DO UPDATE SET report = excluded.report",
                params![sync, started_at_ms as i64, report],
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
}
