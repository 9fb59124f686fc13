//! Connection state: a key-value store on SQLite, the embedded default.
//!
//! One database file serves the whole host; every key lives in the
//! namespace of the connection that wrote it, and a [`StateNamespace`] is
//! the only way in, so no connection can name another's keys. The file uses
//! WAL journaling with synchronous=NORMAL: a committed write survives a
//! killed process, though a power cut may lose the last commits.

use rusqlite::{Connection as Sqlite, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Longest key accepted. Default: 1 KiB.
pub const MAX_KEY_BYTES: usize = 1 << 10;
/// Largest value accepted. Default: 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state key is {0} bytes; the limit is {MAX_KEY_BYTES}")]
    KeyTooLong(usize),
    #[error("state value is {0} bytes; the limit is {MAX_VALUE_BYTES}")]
    ValueTooLarge(usize),
    #[error("state key must not be empty")]
    EmptyKey,
    #[error("state database: {0}")]
    Database(#[from] rusqlite::Error),
}

/// The host's state database.
#[derive(Debug)]
pub struct StateStore {
    db: Mutex<Sqlite>,
}

impl StateStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Arc<Self>, StateError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        Self::init(Sqlite::open(path)?)
    }

    /// A private in-memory database, for tests and embedders.
    pub fn in_memory() -> Result<Arc<Self>, StateError> {
        Self::init(Sqlite::open_in_memory()?)
    }

    fn init(db: Sqlite) -> Result<Arc<Self>, StateError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                ns TEXT NOT NULL,
                key TEXT NOT NULL,
                value BLOB NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (ns, key)
            ) WITHOUT ROWID;",
        )?;
        Ok(Arc::new(StateStore { db: Mutex::new(db) }))
    }

    /// The namespace of one connection.
    pub fn namespace(self: &Arc<Self>, connection: &str) -> StateNamespace {
        StateNamespace {
            store: self.clone(),
            ns: connection.to_owned(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Sqlite) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&db)?)
    }
}

/// The keys of one connection.
#[derive(Debug, Clone)]
pub struct StateNamespace {
    store: Arc<StateStore>,
    ns: String,
}

fn check_key(key: &str) -> Result<(), StateError> {
    match key.len() {
        0 => Err(StateError::EmptyKey),
        n if n > MAX_KEY_BYTES => Err(StateError::KeyTooLong(n)),
        _ => Ok(()),
    }
}

fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::ValueTooLarge(value.len()));
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl StateNamespace {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        self.store.with(|db| {
            db.query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND key = ?2",
                params![self.ns, key],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_key(key)?;
        check_value(value)?;
        self.store.with(|db| {
            db.execute(
                "INSERT INTO kv (ns, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                params![self.ns, key, value, now_ms()],
            )
            .map(|_| ())
        })
    }

    /// Deletes `key`; `true` if it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        self.store.with(|db| {
            db.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2",
                params![self.ns, key],
            )
            .map(|n| n > 0)
        })
    }

    /// Atomically replaces `key`'s value when it is currently `expected`
    /// (`None`: absent). `new = None` deletes. Returns whether it swapped.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_key(key)?;
        if let Some(value) = new {
            check_value(value)?;
        }
        self.store.with(|db| {
            // One statement per case keeps each swap atomic without a
            // transaction held across calls.
            let changed = match (expected, new) {
                (None, Some(value)) => db.execute(
                    "INSERT INTO kv (ns, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (ns, key) DO NOTHING",
                    params![self.ns, key, value, now_ms()],
                )?,
                (Some(old), Some(value)) => db.execute(
                    "UPDATE kv SET value = ?3, updated_ms = ?5 WHERE ns = ?1 AND key = ?2 AND value = ?4",
                    params![self.ns, key, value, old, now_ms()],
                )?,
                (Some(old), None) => db.execute(
                    "DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND value = ?3",
                    params![self.ns, key, old],
                )?,
                (None, None) => {
                    let exists: Option<i64> = db
                        .query_row(
                            "SELECT 1 FROM kv WHERE ns = ?1 AND key = ?2",
                            params![self.ns, key],
                            |row| row.get(0),
                        )
                        .optional()?;
                    usize::from(exists.is_none())
                }
            };
            Ok(changed > 0)
        })
    }

    /// Keys starting with `prefix`, sorted, at most `limit`.
    pub fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        self.store.with(|db| {
            let mut stmt = db.prepare(
                "SELECT key FROM kv WHERE ns = ?1 AND key LIKE ?2 ESCAPE '\\' ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![self.ns, pattern, limit as i64], |row| row.get(0))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
