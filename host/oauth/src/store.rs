//! Where tokens live between uses and restarts: a small seam, sealed bytes
//! in, sealed bytes out, compare-and-swap by revision, plus an expiring
//! lock per record so one holder refreshes at a time, and the pending
//! connect flows (so the authorization server's callback may reach any
//! host sharing the store).
//!
//! [`SqliteTokenStore`] (`<data_dir>/oauth.sqlite`) is the embedded
//! default; the cluster backend keeps the same records in a JetStream
//! key-value bucket so hosts share them.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A stored record and the revision a compare-and-swap names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub sealed: Vec<u8>,
    pub revision: u64,
}

/// Why the store failed. Never holds a record's bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token store: {0}")]
pub struct StoreError(pub String);

/// Sealed token records by name, with per-record locks.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + std::fmt::Debug + 'static {
    /// The record `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes `sealed` if the record is still at `expected` (`None`: must
    /// not exist yet). The new revision, or `None` when another writer
    /// got there first. Durable when it returns.
    async fn save(
        &self,
        key: &str,
        sealed: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<u64>, StoreError>;

    /// Takes the lock on `key` for `ttl` as `holder` (again, if it holds
    /// it already); `false` while someone else holds it.
    async fn lock(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lock up if `holder` still holds it.
    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// Keeps pending connect flow `id` (sealed) for `ttl`. Durable when
    /// it returns.
    async fn put_flow(&self, id: &str, sealed: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Takes flow `id` out: its bytes for exactly one caller, `None` when
    /// unknown, expired or taken already.
    async fn take_flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Most flows the SQLite store keeps pending; the oldest go beyond it.
const MAX_FLOWS: i64 = 256;

/// The embedded default: one SQLite file, written with full sync.
#[derive(Debug)]
pub struct SqliteTokenStore {
    db: Mutex<rusqlite::Connection>,
}

fn failed(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

fn now_ms() -> i64 {
    crate::unix_ms() as i64
}

impl SqliteTokenStore {
    /// Opens (creating) the store at `path`, mode 0600.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = rusqlite::Connection::open(path)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS tokens (
                 key TEXT PRIMARY KEY,
                 revision INTEGER NOT NULL,
                 sealed BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS locks (
                 key TEXT PRIMARY KEY,
                 holder TEXT NOT NULL,
                 until_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS flows (
                 id TEXT PRIMARY KEY,
                 sealed BLOB NOT NULL,
                 until_ms INTEGER NOT NULL
             );",
        )
        .map_err(failed)?;
        Ok(SqliteTokenStore { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl TokenStore for SqliteTokenStore {
    async fn load(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        use rusqlite::OptionalExtension;
        self.db()
            .query_row(
                "SELECT sealed, revision FROM tokens WHERE key = ?1",
                [key],
                |row| {
                    Ok(Versioned {
                        sealed: row.get(0)?,
                        revision: row.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(failed)
    }

    async fn save(
        &self,
        key: &str,
        sealed: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let db = self.db();
        let changed = match expected {
            None => db.execute(
                "INSERT INTO tokens (key, revision, sealed) VALUES (?1, 1, ?2)
                 ON CONFLICT (key) DO NOTHING",
                rusqlite::params![key, sealed],
            ),
            Some(revision) => db.execute(
                "UPDATE tokens SET sealed = ?2, revision = revision + 1
                 WHERE key = ?1 AND revision = ?3",
                rusqlite::params![key, sealed, revision as i64],
            ),
        }
        .map_err(failed)?;
        Ok((changed == 1).then(|| expected.map_or(1, |r| r + 1)))
    }

    async fn lock(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let changed = self
            .db()
            .execute(
                "INSERT INTO locks (key, holder, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE locks.until_ms < ?4 OR locks.holder = excluded.holder",
                rusqlite::params![key, holder, now + ttl.as_millis() as i64, now],
            )
            .map_err(failed)?;
        Ok(changed == 1)
    }

    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "DELETE FROM locks WHERE key = ?1 AND holder = ?2",
                [key, holder],
            )
            .map_err(failed)?;
        Ok(())
    }

    async fn put_flow(&self, id: &str, sealed: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = now_ms();
        let mut db = self.db();
        let tx = db.transaction().map_err(failed)?;
        tx.execute("DELETE FROM flows WHERE until_ms <= ?1", [now])
            .map_err(failed)?;
        tx.execute(
            "DELETE FROM flows WHERE id IN (
                 SELECT id FROM flows ORDER BY until_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
            [MAX_FLOWS - 1],
        )
        .map_err(failed)?;
        tx.execute(
            "INSERT OR REPLACE INTO flows (id, sealed, until_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, sealed, now + ttl.as_millis() as i64],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)
    }

    async fn take_flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use rusqlite::OptionalExtension;
        self.db()
            .query_row(
                "DELETE FROM flows WHERE id = ?1 RETURNING sealed, until_ms",
                [id],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()
            .map(|taken| taken.filter(|(_, until)| *until > now_ms()).map(|(s, _)| s))
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_compare_and_swap_and_locks_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTokenStore::open(&dir.path().join("oauth.sqlite")).unwrap();
        assert_eq!(store.load("k").await.unwrap(), None);
        assert_eq!(store.save("k", b"one", None).await.unwrap(), Some(1));
        assert_eq!(store.save("k", b"again", None).await.unwrap(), None);
        assert_eq!(store.save("k", b"two", Some(1)).await.unwrap(), Some(2));
        assert_eq!(store.save("k", b"stale", Some(1)).await.unwrap(), None);
        let got = store.load("k").await.unwrap().unwrap();
        assert_eq!((got.sealed.as_slice(), got.revision), (&b"two"[..], 2));

        let ttl = Duration::from_millis(200);
        assert!(store.lock("k", "a", ttl).await.unwrap());
        assert!(store.lock("k", "a", ttl).await.unwrap(), "a holder renews");
        assert!(!store.lock("k", "b", ttl).await.unwrap());
        store.unlock("k", "b").await.unwrap();
        assert!(
            !store.lock("k", "b", ttl).await.unwrap(),
            "b cannot unlock a's lock"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            store.lock("k", "b", ttl).await.unwrap(),
            "an expired lock is taken over"
        );
        store.unlock("k", "b").await.unwrap();
        assert!(store.lock("k", "a", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn a_flow_is_taken_once_and_not_after_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.sqlite");
        let store = SqliteTokenStore::open(&path).unwrap();
        let long = Duration::from_secs(60);
        store.put_flow("f", b"sealed", long).await.unwrap();
        store
            .put_flow("brief", b"x", Duration::from_millis(50))
            .await
            .unwrap();
        // Another process (another host on the same file) takes it.
        let other = SqliteTokenStore::open(&path).unwrap();
        assert_eq!(
            other.take_flow("f").await.unwrap().as_deref(),
            Some(&b"sealed"[..])
        );
        assert_eq!(store.take_flow("f").await.unwrap(), None, "taken once");
        assert_eq!(store.take_flow("unknown").await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.take_flow("brief").await.unwrap(), None, "expired");

        for i in 0..MAX_FLOWS + 10 {
            store.put_flow(&format!("n{i}"), b"x", long).await.unwrap();
        }
        let kept: i64 = (store.db())
            .query_row("SELECT count(*) FROM flows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, MAX_FLOWS);
        let newest = format!("n{}", MAX_FLOWS + 9);
        assert!(store.take_flow(&newest).await.unwrap().is_some());
        assert_eq!(store.take_flow("n0").await.unwrap(), None, "oldest dropped");
    }
}
