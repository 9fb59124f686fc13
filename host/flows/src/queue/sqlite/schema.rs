//! The queue's tables, their migrations and row helpers.

use crate::bindings::Message;
use crate::queue::DeadLetter;
use crate::queue::Settlement;
use rusqlite::{Connection as Sqlite, params};

/// The schema version `init` brings a database to (`PRAGMA user_version`).
/// 0: `messages` held each message's body inline (before this version);
/// 1: bodies live in `message_bodies`, written once, so that claims and
/// settlements rewrite only a small row of state;
/// 2: `messages.claim_token` fences settlements to the claim that leased
/// the row, and `sync_runs.started_at` lets a run's report be rewritten
/// page by page.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// The tables and indexes of [`SCHEMA_VERSION`]; idempotent.
pub(super) const SCHEMA: &str = "
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
        claim_token INTEGER NOT NULL DEFAULT 0,
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
        report TEXT NOT NULL,
        started_at INTEGER
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
pub(super) fn migrate(db: &mut Sqlite) -> rusqlite::Result<()> {
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
    // Version 1 tables, which `CREATE TABLE IF NOT EXISTS` left as they were.
    add_column(&tx, "messages", "claim_token", "INTEGER NOT NULL DEFAULT 0")?;
    add_column(&tx, "sync_runs", "started_at", "INTEGER")?;
    tx.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS sync_runs_started ON sync_runs (sync, started_at);",
    )?;
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

fn add_column(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    declaration: &str,
) -> rusqlite::Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        params![table, column],
        |row| row.get(0),
    )?;
    if !exists {
        tx.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {declaration};"
        ))?;
    }
    Ok(())
}

/// Stores a message's body for its row `seq` (replacing the body of a
/// delivered message whose key came again).
pub(super) const BODY_INSERT: &str = "INSERT OR REPLACE INTO message_bodies
     (seq, key, headers, payload, timestamp_ms) VALUES (?1, ?2, ?3, ?4, ?5)";

pub(super) fn insert_body(
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
pub(super) fn dead_letter_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
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

/// Writes one settlement inside a transaction, if the row is still leased
/// under `token` (the claim the settlement is for). Returns whether it
/// was: a claim whose lease ran out and whose row was claimed again (or
/// replayed, or dead-lettered) settles nothing.
pub(super) fn apply(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    token: i64,
    plan: &Settlement,
    now: i64,
) -> rusqlite::Result<bool> {
    const LEASED: &str = "seq = ?1 AND state = 'in-flight' AND claim_token = ?2";
    let changed = match plan {
        Settlement::Done => tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = 'done', updated_at = ?3, last_error = NULL
                 WHERE {LEASED}"
            ))?
            .execute(params![seq, token, now])?,
        Settlement::Retry {
            wait_ms,
            last_error,
        } => tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = 'ready', available_at = ?3, last_error = ?4,
                 updated_at = ?5 WHERE {LEASED}"
            ))?
            .execute(params![seq, token, now + *wait_ms as i64, last_error, now])?,
        Settlement::Dead { reason, last_error } => tx
            .prepare_cached(&format!(
                "UPDATE messages SET state = 'dead', reason = ?3, last_error = ?4, updated_at = ?5
                 WHERE {LEASED}"
            ))?
            .execute(params![seq, token, reason, last_error, now])?,
    };
    Ok(changed == 1)
}
