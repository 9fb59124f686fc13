//! `switchyard audit`: the audit trail, read from `<data_dir>/audit.sqlite`
//! directly, so it works with the server up or down (WAL lets both use the
//! file at once). Records a running server observed in the last moments
//! may still be on their way to disk.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_host::SwitchyardConfig;
use switchyard_ops::audit::{AuditFilter, AuditKind, AuditRecord, now_ms, parse_time, query};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file. Default: ./switchyard.toml if present, else built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Only this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only this plugin.
    #[arg(long)]
    plugin: Option<String>,
    /// Only egress, secret, state or access records.
    #[arg(long)]
    kind: Option<AuditKind>,
    /// At or after: a duration back from now (1h, 30m, 7d) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// At or before, in the same forms as --since.
    #[arg(long)]
    until: Option<String>,
    /// Most records shown, newest first.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = SwitchyardConfig::load(args.config.as_deref())?;
    let path = config.audit_path();
    anyhow::ensure!(
        path.exists(),
        "no audit trail at {}: nothing has been audited yet (is data_dir right, [audit] enabled?)",
        path.display()
    );
    let now = now_ms();
    let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now)).transpose();
    let filter = AuditFilter {
        connection: args.connection,
        plugin: args.plugin,
        kind: args.kind,
        since_ms: time(&args.since).map_err(|e| anyhow::anyhow!("--since {e}"))?,
        until_ms: time(&args.until).map_err(|e| anyhow::anyhow!("--until {e}"))?,
        limit: Some(args.limit),
    };
    let records = query(&path, &filter).with_context(|| format!("reading {}", path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if records.is_empty() {
        println!("no audit records");
    } else {
        println!(
            "{:<24}  {:<6}  {:<16}  {:<20}  {:>10}  what",
            "time", "kind", "connection", "plugin", "invocation"
        );
        for r in &records {
            println!(
                "{:<24}  {:<6}  {:<16}  {:<20}  {:>10}  {}",
                r.time,
                r.kind.as_str(),
                r.connection,
                format!("{}@{}", r.plugin, r.version),
                r.invocation,
                what(r)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kind-specific part of a record, on one line.
fn what(r: &AuditRecord) -> String {
    let or = |v: &Option<String>| v.clone().unwrap_or_default();
    match r.kind {
        AuditKind::Egress => {
            let status = r.status.map_or("-".to_owned(), |s| s.to_string());
            let mut line = format!(
                "{} {} {status} out={}B in={}B",
                or(&r.method),
                or(&r.destination),
                r.bytes_out.unwrap_or(0),
                r.bytes_in.unwrap_or(0)
            );
            if let Some(error) = &r.error {
                line.push_str(&format!(" error: {error}"));
            }
            line
        }
        AuditKind::Secret => match &r.destination {
            Some(dest) => format!("{} {} → {dest}", or(&r.name), or(&r.purpose)),
            None => format!("{} {}", or(&r.name), or(&r.purpose)),
        },
        AuditKind::State => format!(
            "{} {}{}",
            or(&r.op),
            or(&r.key),
            if r.applied == Some(false) {
                " (not applied)"
            } else {
                ""
            }
        ),
        AuditKind::Access => {
            let mut line = format!(
                "{} {} {} by {}",
                or(&r.decision),
                or(&r.purpose),
                or(&r.name),
                or(&r.caller)
            );
            if let Some(error) = &r.error {
                line.push_str(&format!(" error: {error}"));
            }
            line
        }
    }
}
