//! The audit trail: every outbound request, every secret use and every
//! state write, with time, plugin, version, connection and invocation id,
//! persisted in SQLite (`<data_dir>/audit.sqlite`, WAL).
//!
//! Invocations never wait on the disk: [`AuditLog`] is an [`Observer`]
//! that hands each record to a background writer thread over a bounded
//! channel (capacity [`CHANNEL_CAPACITY`]); the writer inserts whatever has
//! queued up in one transaction. When the channel is full a record is
//! dropped, never waited for, and never silently: each drop is counted
//! ([`AuditLog::dropped`], served as `switchyard_audit_records_dropped_total`)
//! and a warning says so at most once a second.
//! Dropping the log writes what is queued and stops the writer.
//!
//! **What a crash loses.** Committed batches survive `kill -9` (WAL with
//! `synchronous=NORMAL`: a power cut may lose the last commits, a killed
//! process does not). Records still in the channel are lost: those of
//! roughly the last batch, typically the last few milliseconds.
//!
//! Records hold names, never values: a secret by name and purpose, a
//! destination as `scheme://host:port` (no path or query), a state key
//! (never its value). Retention: records older than the configured days
//! are pruned when the writer starts and hourly.

use rusqlite::{Connection as Sqlite, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};
use switchyard_broker::observe::{BrokerEvent, BrokerObserver, BrokerUse, EgressEvent};
use switchyard_runtime::observe::{InvocationEvent, Observer};

/// `[audit]`: the persisted audit trail of egress, secret uses and state
/// writes (see [`AuditLog`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether to keep it. Default: true.
    pub enabled: bool,
    /// Records older than this many days are pruned (hourly). Default: 30.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            retention_days: 30,
        }
    }
}

impl AuditConfig {
    /// `retention_days` as a duration.
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }
}

/// Records that may wait for the writer before new ones are dropped.
pub const CHANNEL_CAPACITY: usize = 65_536;
/// Most records inserted in one transaction.
const BATCH: usize = 1_024;
/// How often the writer prunes old records.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Why the audit database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("audit database: {0}")]
pub struct AuditError(#[from] rusqlite::Error);

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    Egress,
    Secret,
    State,
    /// A call through the HTTP API: who asked, and whether it was allowed.
    Access,
}

impl AuditKind {
    /// `egress`, `secret`, `state` or `access`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Egress => "egress",
            AuditKind::Secret => "secret",
            AuditKind::State => "state",
            AuditKind::Access => "access",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "egress" => Some(AuditKind::Egress),
            "secret" => Some(AuditKind::Secret),
            "state" => Some(AuditKind::State),
            "access" => Some(AuditKind::Access),
            _ => None,
        }
    }
}

impl std::str::FromStr for AuditKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AuditKind::parse(s)
            .ok_or_else(|| format!("`{s}`: expected egress, secret, state or access"))
    }
}

/// One audit record. Fields that do not apply to its kind are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Row id, increasing with insertion (0 before it is written).
    pub id: i64,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: i64,
    /// The same instant as RFC 3339 (UTC).
    pub time: String,
    pub kind: AuditKind,
    pub plugin: String,
    pub version: String,
    pub connection: String,
    pub invocation: u64,
    /// Egress: method, `scheme://host:port`, status (`None`: no answer),
    /// body bytes, and why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Secret: its name and purpose (`http-header`, `http-body`, `sign`,
    /// `verify`); `destination` too for HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// State: key, `set` / `delete` / `compare-and-swap`, and whether it
    /// took effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    /// Access: the caller (a key id, `public`, `admin` or `anonymous`),
    /// `allowed` or why not (`missing_key`, `unknown_key`,
    /// `out_of_scope`); `purpose` is `action` or `sync`, `name` the action
    /// or sync, `error` the failed call's error kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

impl AuditRecord {
    fn new(kind: AuditKind, plugin: &str, version: &str, connection: &str, inv: u64) -> Self {
        let at_ms = now_ms();
        AuditRecord {
            id: 0,
            at_ms,
            time: rfc3339(at_ms),
            kind,
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            connection: connection.to_owned(),
            invocation: inv,
            method: None,
            destination: None,
            status: None,
            bytes_out: None,
            bytes_in: None,
            error: None,
            name: None,
            purpose: None,
            key: None,
            op: None,
            applied: None,
            caller: None,
            decision: None,
        }
    }
}

/// One decision of the HTTP API's access check, for [`AuditLog::access`].
#[derive(Debug, Clone, Copy)]
pub struct AccessEvent<'a> {
    /// The key id, `public`, `admin` or `anonymous`.
    pub caller: &'a str,
    /// `allowed`, or the refusal's kind.
    pub decision: &'a str,
    /// `action` or `sync`.
    pub target: &'static str,
    /// The connection called (empty for syncs).
    pub connection: &'a str,
    /// The action or sync.
    pub name: &'a str,
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(SyncSender<()>),
    Stop,
}

/// The audit trail of one runtime: an [`Observer`] with a background
/// writer. See the module docs.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    tx: SyncSender<Msg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: AtomicU64,
    last_drop_warning_ms: AtomicU64,
}

impl AuditLog {
    /// Opens (creating if needed) the database at `path`, prunes records
    /// older than `retention`, and starts the writer thread.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Sqlite::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at_ms INTEGER NOT NULL,
                kind TEXT NOT NULL,
                plugin TEXT NOT NULL,
                version TEXT NOT NULL,
                connection TEXT NOT NULL,
                invocation INTEGER NOT NULL,
                method TEXT, destination TEXT, status INTEGER,
                bytes_out INTEGER, bytes_in INTEGER, error TEXT,
                name TEXT, purpose TEXT,
                key TEXT, op TEXT, applied INTEGER,
                caller TEXT, decision TEXT
            );
            CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
            CREATE INDEX IF NOT EXISTS audit_connection ON audit (connection, at_ms);",
        )?;
        add_access_columns(&db)?;
        prune(&db, retention)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("switchyard-audit".into())
            .spawn(move || write_loop(db, rx, retention))
            .map_err(|e| AuditError(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(AuditLog {
            path: path.to_owned(),
            tx,
            writer: Mutex::new(Some(writer)),
            dropped: AtomicU64::new(0),
            last_drop_warning_ms: AtomicU64::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Blocks until every record observed so far is written.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Records matching `filter`, newest first (written ones only: call
    /// [`flush`](Self::flush) first to include the last few).
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        query(&self.path, filter)
    }

    /// Records an access decision not followed by an invocation: a
    /// refusal, or a sync run. (Allowed action calls are recorded from
    /// their [`InvocationEvent`], with its invocation id.)
    pub fn access(&self, e: &AccessEvent<'_>) {
        let mut r = AuditRecord::new(AuditKind::Access, "", "", e.connection, 0);
        r.caller = Some(e.caller.to_owned());
        r.decision = Some(e.decision.to_owned());
        r.purpose = Some(e.target.to_owned());
        r.name = Some(e.name.to_owned());
        self.push(r);
    }

    fn push(&self, record: AuditRecord) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                // Counted every time (`switchyard_audit_records_dropped_total`),
                // warned about at most once a second.
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = now_ms() as u64;
                let last = self.last_drop_warning_ms.load(Ordering::Relaxed);
                if now >= last + 1_000
                    && (self.last_drop_warning_ms)
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        dropped_total = n,
                        "audit writer behind: records dropped (the trail has gaps; see switchyard_audit_records_dropped_total)"
                    );
                }
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Observer for AuditLog {
    /// An action called on behalf of an API caller.
    fn invocation(&self, e: &InvocationEvent<'_>) {
        let Some(caller) = e.caller else { return };
        let mut r = AuditRecord::new(
            AuditKind::Access,
            e.plugin,
            e.version,
            e.connection,
            e.invocation,
        );
        r.caller = Some(caller.to_owned());
        r.decision = Some("allowed".to_owned());
        r.purpose = Some(e.pattern.to_owned());
        r.name = e.action.map(str::to_owned);
        r.error = e.error.map(|err| err.kind().to_owned());
        self.push(r);
    }
}

impl BrokerObserver for AuditLog {
    fn egress(&self, e: &EgressEvent<'_>) {
        let mut r = AuditRecord::new(
            AuditKind::Egress,
            e.plugin,
            e.version,
            e.connection,
            e.invocation,
        );
        r.method = Some(e.method.to_owned());
        r.destination = Some(e.destination.to_owned());
        r.status = e.status;
        r.bytes_out = Some(e.bytes_out);
        r.bytes_in = Some(e.bytes_in);
        r.error = e.error.map(str::to_owned);
        self.push(r);
    }
    fn broker(&self, e: &BrokerEvent<'_>) {
        let new = |kind| AuditRecord::new(kind, e.plugin, e.version, e.connection, e.invocation);
        let record = match &e.use_ {
            BrokerUse::Secret {
                name,
                purpose,
                destination,
            } => {
                let mut r = new(AuditKind::Secret);
                r.name = Some((*name).to_owned());
                r.purpose = Some((*purpose).to_owned());
                r.destination = destination.map(str::to_owned);
                r
            }
            BrokerUse::StateWrite { key, op, applied } => {
                let mut r = new(AuditKind::State);
                r.key = Some((*key).to_owned());
                r.op = Some((*op).to_owned());
                r.applied = Some(*applied);
                r
            }
            BrokerUse::RateLimitWait { .. } => return,
        };
        self.push(record);
    }
}

fn write_loop(mut db: Sqlite, rx: Receiver<Msg>, retention: Duration) {
    let mut last_prune = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (mut batch, mut acks, mut stop) = (Vec::new(), Vec::new(), false);
        let mut next = first;
        while let Some(msg) = next {
            match msg {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(ack) => acks.push(ack),
                Msg::Stop => stop = true,
            }
            next = if batch.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty()
            && let Err(e) = insert(&mut db, &batch)
        {
            tracing::error!("audit: {} records not written: {e}", batch.len());
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(e) = prune(&db, retention) {
                tracing::warn!("audit: pruning failed: {e}");
            }
        }
        if stop {
            return;
        }
    }
}

fn insert(db: &mut Sqlite, batch: &[Box<AuditRecord>]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit (at_ms, kind, plugin, version, connection, invocation, method,
                destination, status, bytes_out, bytes_in, error, name, purpose, key, op, applied,
                caller, decision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.at_ms,
                r.kind.as_str(),
                r.plugin,
                r.version,
                r.connection,
                r.invocation as i64,
                r.method,
                r.destination,
                r.status,
                r.bytes_out.map(|b| b as i64),
                r.bytes_in.map(|b| b as i64),
                r.error,
                r.name,
                r.purpose,
                r.key,
                r.op,
                r.applied,
                r.caller,
                r.decision,
            ])?;
        }
    }
    tx.commit()
}

/// Trails written before access records existed lack their columns.
fn add_access_columns(db: &Sqlite) -> rusqlite::Result<()> {
    let has_caller: bool = db.query_row(
        "SELECT count(*) FROM pragma_table_info('audit') WHERE name = 'caller'",
        [],
        |row| row.get(0),
    )?;
    if !has_caller {
        db.execute_batch(
            "ALTER TABLE audit ADD COLUMN caller TEXT; ALTER TABLE audit ADD COLUMN decision TEXT;",
        )?;
    }
    Ok(())
}

fn prune(db: &Sqlite, retention: Duration) -> rusqlite::Result<usize> {
    prune_before(db, now_ms() - retention.as_millis() as i64)
}

/// Deletes records older than `cutoff_ms`; how many went.
fn prune_before(db: &Sqlite, cutoff_ms: i64) -> rusqlite::Result<usize> {
    db.execute("DELETE FROM audit WHERE at_ms < ?1", params![cutoff_ms])
}

/// Now, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn rfc3339(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[path = "audit_query.rs"]
mod read;
pub use read::{AuditFilter, parse_time, query};

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
