//! Reading the audit trail: filters, the query, and times for `since`.

use super::{AuditError, AuditKind, AuditRecord, rfc3339};
use rusqlite::{Connection as Sqlite, OpenFlags, params};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Which records a query returns, newest first. Every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuditFilter {
    pub connection: Option<String>,
    pub plugin: Option<String>,
    pub kind: Option<AuditKind>,
    /// At or after, ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// At or before, ms since the Unix epoch.
    pub until_ms: Option<i64>,
    /// Most records returned. Default: 100; at most 10 000.
    pub limit: Option<usize>,
}

/// Records in the audit database at `path` matching `filter`, newest
/// first. Works while a server writes the file (WAL).
pub fn query(path: &Path, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Sqlite::open_with_flags(path, flags)?;
    db.busy_timeout(Duration::from_secs(5))?;
    let limit = filter.limit.unwrap_or(100).min(10_000) as i64;
    let mut stmt = db.prepare(
        "SELECT id, at_ms, kind, plugin, version, connection, invocation, method, destination,
                status, bytes_out, bytes_in, error, name, purpose, key, op, applied,
                caller, decision
         FROM audit
         WHERE (?1 IS NULL OR connection = ?1) AND (?2 IS NULL OR plugin = ?2)
           AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR at_ms >= ?4)
           AND (?5 IS NULL OR at_ms <= ?5)
         ORDER BY at_ms DESC, id DESC LIMIT ?6",
    )?;
    let kind = filter.kind.map(AuditKind::as_str);
    let rows = stmt.query_map(
        params![
            filter.connection,
            filter.plugin,
            kind,
            filter.since_ms,
            filter.until_ms,
            limit
        ],
        |row| {
            let at_ms: i64 = row.get(1)?;
            let kind: String = row.get(2)?;
            Ok(AuditRecord {
                id: row.get(0)?,
                at_ms,
                time: rfc3339(at_ms),
                kind: AuditKind::parse(&kind).unwrap_or(AuditKind::Egress),
                plugin: row.get(3)?,
                version: row.get(4)?,
                connection: row.get(5)?,
                invocation: row.get::<_, i64>(6)? as u64,
                method: row.get(7)?,
                destination: row.get(8)?,
                status: row.get(9)?,
                bytes_out: row.get::<_, Option<i64>>(10)?.map(|b| b as u64),
                bytes_in: row.get::<_, Option<i64>>(11)?.map(|b| b as u64),
                error: row.get(12)?,
                name: row.get(13)?,
                purpose: row.get(14)?,
                key: row.get(15)?,
                op: row.get(16)?,
                applied: row.get(17)?,
                caller: row.get(18)?,
                decision: row.get(19)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Parses a point in time for `since` / `until`: a duration back from
/// `now_ms` (`90s`, `15m`, `1h`, `7d`) or an RFC 3339 timestamp.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let unit_ms = match text.chars().last() {
        Some('s') => Some(1_000),
        Some('m') => Some(60_000),
        Some('h') => Some(3_600_000),
        Some('d') => Some(86_400_000),
        _ => None,
    };
    if let Some(unit) = unit_ms
        && let Ok(n) = text[..text.len() - 1].parse::<i64>()
    {
        return Ok(now_ms - n.saturating_mul(unit));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("`{text}`: expected a duration like 1h or 30m, or an RFC 3339 time"))
}
