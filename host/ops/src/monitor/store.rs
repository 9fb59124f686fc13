//! `<data_dir>/monitor.sqlite`: volume history and kept alerts, so
//! baselines and the alert list survive a restart.

use super::alerts::Alert;
use rusqlite::{Connection, params};
use std::path::Path;

/// One observation of a flow's volume: a sync run's stream, or a
/// webhook's or pipeline's window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumePoint {
    /// Unix milliseconds: the run's end, or the window's end.
    pub at_ms: u64,
    pub count: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    db: Connection,
    alerts_kept: usize,
}

impl Store {
    pub(crate) fn open(path: Option<&Path>, alerts_kept: usize) -> rusqlite::Result<Store> {
        let db = match path {
            Some(path) => Connection::open(path)?,
            None => Connection::open_in_memory()?,
        };
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS volume (
                 flow TEXT NOT NULL, name TEXT NOT NULL, stream TEXT NOT NULL,
                 at_ms INTEGER NOT NULL, count INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS volume_key ON volume (flow, name, stream, at_ms);
             CREATE TABLE IF NOT EXISTS alerts (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL);",
        )?;
        Ok(Store { db, alerts_kept })
    }

    /// The last `limit` counts of a flow, oldest first.
    pub(crate) fn history(&self, key: &FlowKey, limit: usize) -> rusqlite::Result<Vec<u64>> {
        let mut statement = self.db.prepare_cached(
            "SELECT count FROM volume WHERE flow = ?1 AND name = ?2 AND stream = ?3
             ORDER BY at_ms DESC, rowid DESC LIMIT ?4",
        )?;
        let mut counts = statement
            .query_map(
                params![key.flow, key.name, key.stream, limit as i64],
                |row| row.get::<_, i64>(0).map(|n| n as u64),
            )?
            .collect::<rusqlite::Result<Vec<u64>>>()?;
        counts.reverse();
        Ok(counts)
    }

    /// Records a count, keeping the last `keep` of its flow.
    pub(crate) fn record(
        &self,
        key: &FlowKey,
        at_ms: u64,
        count: u64,
        keep: usize,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO volume (flow, name, stream, at_ms, count) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.flow, key.name, key.stream, at_ms as i64, count as i64],
        )?;
        self.db.execute(
            "DELETE FROM volume WHERE flow = ?1 AND name = ?2 AND stream = ?3 AND rowid NOT IN
             (SELECT rowid FROM volume WHERE flow = ?1 AND name = ?2 AND stream = ?3
              ORDER BY at_ms DESC, rowid DESC LIMIT ?4)",
            params![key.flow, key.name, key.stream, keep as i64],
        )?;
        Ok(())
    }

    /// Every flow with history, with its points, oldest first.
    pub(crate) fn volumes(&self) -> rusqlite::Result<Vec<(FlowKey, VolumePoint)>> {
        let mut statement = self.db.prepare_cached(
            "SELECT flow, name, stream, at_ms, count FROM volume ORDER BY flow, name, stream, at_ms",
        )?;
        statement
            .query_map([], |row| {
                Ok((
                    FlowKey {
                        flow: row.get(0)?,
                        name: row.get(1)?,
                        stream: row.get(2)?,
                    },
                    VolumePoint {
                        at_ms: row.get::<_, i64>(3)? as u64,
                        count: row.get::<_, i64>(4)? as u64,
                    },
                ))
            })?
            .collect()
    }

    pub(crate) fn keep_alert(&self, alert: &Alert) -> rusqlite::Result<()> {
        let json = serde_json::to_string(alert).expect("alerts serialize");
        self.db
            .execute("INSERT INTO alerts (json) VALUES (?1)", params![json])?;
        self.db.execute(
            "DELETE FROM alerts WHERE seq <= (SELECT MAX(seq) FROM alerts) - ?1",
            params![self.alerts_kept as i64],
        )?;
        Ok(())
    }

    /// The latest `limit` alerts, newest first.
    pub(crate) fn alerts(&self, limit: usize) -> rusqlite::Result<Vec<Alert>> {
        let mut statement = self
            .db
            .prepare_cached("SELECT json FROM alerts ORDER BY seq DESC LIMIT ?1")?;
        let rows = statement.query_map(params![limit as i64], |row| row.get::<_, String>(0))?;
        let mut alerts = Vec::new();
        for json in rows {
            if let Ok(alert) = serde_json::from_str(&json?) {
                alerts.push(alert);
            }
        }
        Ok(alerts)
    }
}

/// A flow's stream: (`sync`|`pipeline`|`webhook`, name, stream).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct FlowKey {
    pub flow: String,
    pub name: String,
    pub stream: String,
}

impl FlowKey {
    pub(crate) fn subject(&self) -> String {
        format!("{}:{}/{}", self.flow, self.name, self.stream)
    }
}
