//! Connection state: the [`StateBackend`] seam, and its embedded default,
//! a key-value store on SQLite.
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
    /// The connection's state would pass its quota.
    #[error(
        "state quota: the write would give this connection {wanted} {what}; the limit is {limit} ({key})"
    )]
    Quota {
        what: &'static str,
        wanted: u64,
        limit: u64,
        key: &'static str,
    },
    /// A shared store refused a write as over the connection's quota.
    #[error("state quota: {0}")]
    Full(String),
    #[error("state database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A remote store could not be reached or answered an error.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Where connection state lives: one namespace per connection. The SQLite
/// [`StateStore`] is the default; the cluster backend keeps it on NATS
/// JetStream so every host sees the same keys. Keys and values reach an
/// implementation already checked against [`MAX_KEY_BYTES`] and
/// [`MAX_VALUE_BYTES`]; quotas are the implementation's.
#[async_trait::async_trait]
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// The value of `key`, if set.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key` to `value`.
    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Deletes `key`; `true` if it existed.
    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StateError>;
    /// Replaces `key`'s value when it is currently `expected` (`None`:
    /// absent), atomically; `new = None` deletes. Whether it swapped.
    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError>;
    /// Keys starting with `prefix`, sorted, at most `limit`.
    async fn keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StateError>;
}

/// One connection's keys in any [`StateBackend`]: what the `state`
/// interface holds. Checks key and value sizes before the backend sees
/// them.
#[derive(Debug, Clone)]
pub struct ConnectionState {
    backend: Arc<dyn StateBackend>,
    ns: Arc<str>,
}

impl ConnectionState {
    /// The keys of `connection` in `backend`.
    pub fn new(backend: Arc<dyn StateBackend>, connection: &str) -> Self {
        ConnectionState {
            backend,
            ns: connection.into(),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        self.backend.get(&self.ns, key).await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_key(key)?;
        check_value(value)?;
        self.backend.set(&self.ns, key, value).await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        self.backend.delete(&self.ns, key).await
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_key(key)?;
        if let Some(value) = new {
            check_value(value)?;
        }
        (self.backend)
            .compare_and_swap(&self.ns, key, expected, new)
            .await
    }

    pub async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        self.backend.keys(&self.ns, prefix, limit).await
    }
}

#[async_trait::async_trait]
impl StateBackend for StateStore {
    // SQLite calls are short transactions, run on the invoking task.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.in_ns(ns).get(key)
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.in_ns(ns).set(key, value)
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StateError> {
        self.in_ns(ns).delete(key)
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        self.in_ns(ns).compare_and_swap(key, expected, new)
    }

    async fn keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        self.in_ns(ns).keys(prefix, limit)
    }
}

/// How much state one connection may keep. Defaults: 100 000 keys,
/// 256 MiB of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuota {
    /// `limits.state_keys_per_connection`.
    pub max_keys: u64,
    /// `limits.state_bytes_per_connection` (key plus value bytes).
    pub max_bytes: u64,
}

impl Default for StateQuota {
    fn default() -> Self {
        StateQuota {
            max_keys: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

/// The host's state database.
#[derive(Debug)]
pub struct StateStore {
    db: Mutex<Sqlite>,
    quota: StateQuota,
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
        // Each connection's usage, kept with every write so a quota check
        // costs a lookup, not a scan. A file from before it is counted once.
        let counted: bool = db.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'kv_usage')",
            [],
            |row| row.get(0),
        )?;
        if !counted {
            db.execute_batch(
                "BEGIN;
                 CREATE TABLE kv_usage (
                     ns TEXT PRIMARY KEY, keys INTEGER NOT NULL, bytes INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 INSERT INTO kv_usage SELECT ns, COUNT(*), SUM(LENGTH(key) + LENGTH(value))
                   FROM kv GROUP BY ns;
                 COMMIT;",
            )?;
        }
        Ok(Arc::new(StateStore {
            db: Mutex::new(db),
            quota: StateQuota::default(),
        }))
    }

    /// The same store with `quota` per connection. Default:
    /// [`StateQuota::default`].
    pub fn with_quota(self: Arc<Self>, quota: StateQuota) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut store) => {
                store.quota = quota;
                Arc::new(store)
            }
            Err(shared) => shared,
        }
    }

    /// The namespace of one connection.
    pub fn namespace(self: &Arc<Self>, connection: &str) -> StateNamespace<'_> {
        self.in_ns(connection)
    }

    fn in_ns<'a>(&'a self, connection: &str) -> StateNamespace<'a> {
        StateNamespace {
            store: self,
            ns: connection.to_owned(),
        }
    }

    /// Runs `write` (which leaves `key` of `ns` at `new`, or deletes it
    /// for `None`, when it changes anything) in one transaction with the
    /// quota check and the usage bookkeeping. `write` returns the rows it
    /// changed; nothing is counted when it changed none.
    fn write(
        &self,
        ns: &str,
        key: &str,
        new: Option<&[u8]>,
        write: impl FnOnce(&Sqlite) -> rusqlite::Result<usize>,
    ) -> Result<usize, StateError> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.unchecked_transaction()?;
        let old: Option<i64> = tx
            .query_row(
                "SELECT LENGTH(value) FROM kv WHERE ns = ?1 AND key = ?2",
                params![ns, key],
                |row| row.get(0),
            )
            .optional()?;
        let (keys, bytes): (i64, i64) = tx
            .query_row(
                "SELECT keys, bytes FROM kv_usage WHERE ns = ?1",
                params![ns],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        let entry = |len: i64| key.len() as i64 + len;
        let keys_after = keys - i64::from(old.is_some()) + i64::from(new.is_some());
        let bytes_after = bytes - old.map_or(0, entry) + new.map_or(0, |v| entry(v.len() as i64));
        // Writes that shrink are always allowed, so a connection over a
        // lowered quota can clean up.
        let quota = self.quota;
        let over = |what, before: i64, after: i64, limit: u64, key| {
            // Only growth is refused.
            (after > before && after as u64 > limit).then_some(StateError::Quota {
                what,
                wanted: after as u64,
                limit,
                key,
            })
        };
        let keys_over = over(
            "keys",
            keys,
            keys_after,
            quota.max_keys,
            "limits.state_keys_per_connection",
        );
        let bytes_over = over(
            "bytes",
            bytes,
            bytes_after,
            quota.max_bytes,
            "limits.state_bytes_per_connection",
        );
        if let Some(error) = keys_over.or(bytes_over) {
            return Err(error);
        }
        let changed = write(&tx)?;
        if changed > 0 {
            tx.execute(
                "INSERT INTO kv_usage (ns, keys, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ns) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
                params![ns, keys_after, bytes_after],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    fn with<T>(&self, f: impl FnOnce(&Sqlite) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&db)?)
    }
}

/// The keys of one connection in the SQLite store.
#[derive(Debug, Clone)]
pub struct StateNamespace<'a> {
    store: &'a StateStore,
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

impl StateNamespace<'_> {
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

    /// Sets `key` to `value`, within the connection's [`StateQuota`].
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_key(key)?;
        check_value(value)?;
        self.store.write(&self.ns, key, Some(value), |db| {
            db.execute(
                "INSERT INTO kv (ns, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                params![self.ns, key, value, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Deletes `key`; `true` if it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        let deleted = self.store.write(&self.ns, key, None, |db| {
            db.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2",
                params![self.ns, key],
            )
        })?;
        Ok(deleted > 0)
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
        self.store.write(&self.ns, key, new, |db| {
            // One statement per case, inside the write's transaction.
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
            Ok(changed)
        })
        .map(|changed| changed > 0)
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
