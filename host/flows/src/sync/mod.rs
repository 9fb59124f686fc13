//! Scheduled batch sync: a source connector read page by page from a
//! per-stream cursor, through transforms, into a sink.
//!
//! A stream's cursor is committed only after the sink has acknowledged
//! every record read up to it, so a killed process resumes from the last
//! committed cursor and loses nothing; records read again are rewritten,
//! which an idempotent sink absorbs. Records the sink refuses go to the
//! dead-letter queue of the sync's pipeline (`pipeline:sync.NAME`), from
//! where `dlq replay` sends them to the sink again.

use crate::cursors::CursorStore;
use crate::leases::{Lease, Leases, LocalLeases};
use crate::observe::{FlowObserver, FlowObservers, SyncRunEvent};
use crate::queue::{Queue, RetryPolicy};
use crate::transform::Transform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard_runtime::Runtime;

mod page;

/// `[syncs.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The connection read from (role `source`).
    pub source: String,
    /// The streams to read, in order.
    pub streams: Vec<String>,
    /// The connection written to (role `sink`).
    pub sink: String,
    /// Steps applied to each page. Default: none.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// Cron expression with seconds, in UTC (`0 */5 * * * *`: every five
    /// minutes). Default: none; the sync runs only when asked.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Default: incremental.
    #[serde(default)]
    pub mode: SyncMode,
    /// Records asked for per page. Default: 500.
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Retries of a failing read or write. Default: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Volume alerts (`volume_drop`, `volume_zero`) for this sync's runs.
    /// Default: on for `full-refresh` syncs, off for `incremental` ones,
    /// which read only what changed and so read little once caught up.
    #[serde(default)]
    pub volume_alerts: Option<bool>,
    /// Counts compared after each completed run. Default: none.
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
}

/// `[syncs.NAME.reconcile]`: actions called after a completed run on the
/// source and the sink connections, each answering `{"count": N}` for the
/// input `{}`; differing counts raise a `reconciliation_mismatch` alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// The source connection's action.
    pub source_action: String,
    /// The sink connection's action.
    pub sink_action: String,
}

/// The counts of a run's reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileCounts {
    /// The source's count, when its action answered.
    pub source: Option<u64>,
    /// The sink's count, when its action answered.
    pub sink: Option<u64>,
    /// Why a count is missing.
    pub error: Option<String>,
}

impl SyncConfig {
    /// Whether runs of this sync get volume alerts (see `volume_alerts`).
    pub fn volume_alerts(&self) -> bool {
        self.volume_alerts
            .unwrap_or(self.mode == SyncMode::FullRefresh)
    }
}

fn default_page() -> u32 {
    500
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// From each stream's committed cursor.
    #[default]
    Incremental,
    /// From the beginning, every run.
    FullRefresh,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub sync: String,
    pub started_at_ms: u64,
    /// 0 while the run goes on, and in the last progress report of a
    /// run that was killed.
    pub finished_at_ms: u64,
    /// Records read from the source.
    pub read: u64,
    /// Records the sink acknowledged.
    pub written: u64,
    /// Records the sink refused (now dead letters).
    pub failed: u64,
    /// Records transforms dropped (net, per page).
    #[serde(default)]
    pub filtered: u64,
    /// Records transforms added by splitting (net, per page).
    #[serde(default)]
    pub added: u64,
    /// `None` when the run completed; otherwise why it stopped (the
    /// cursor stays at the last acknowledged page).
    pub error: Option<String>,
    /// The same counts per stream.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamCounts>,
    /// The counts of `[syncs.NAME.reconcile]`, after a completed run.
    #[serde(default)]
    pub reconcile: Option<ReconcileCounts>,
}

/// What one run did on one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub read: u64,
    pub written: u64,
    pub failed: u64,
    /// Dropped by transforms.
    #[serde(default)]
    pub filtered: u64,
    /// Added by transforms that split records.
    #[serde(default)]
    pub added: u64,
}

impl StreamCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: StreamCounts) {
        self.read += other.read;
        self.written += other.written;
        self.failed += other.failed;
        self.filtered += other.filtered;
        self.added += other.added;
    }

    /// Records read but neither written, refused, nor dropped by a
    /// transform (`read + added - written - failed - filtered`); zero for
    /// a completed run. Negative when more came out than went in.
    pub fn unaccounted(&self) -> i64 {
        (self.read + self.added) as i64 - (self.written + self.failed + self.filtered) as i64
    }
}

/// The queue a sync's refused records are dead-lettered on.
pub fn sync_pipeline(name: &str) -> String {
    format!("sync.{name}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The configured syncs of one host.
#[derive(Debug)]
pub struct Syncs {
    runtime: Runtime,
    queue: Arc<dyn Queue>,
    cursors: Arc<dyn CursorStore>,
    observers: FlowObservers,
    syncs: BTreeMap<String, SyncConfig>,
    /// One lock per sync: runs of one sync never overlap, runs of
    /// different syncs do not wait for each other.
    running: BTreeMap<String, tokio::sync::Mutex<()>>,
    /// Which host runs a sync, when several share the work.
    leases: Arc<dyn Leases>,
    lease_ttl: Duration,
}

/// How long a sync's lease lasts unless renewed: a third of it between
/// renewals, so a host that dies hands its syncs over within this.
pub const DEFAULT_SYNC_LEASE_TTL: Duration = Duration::from_secs(15);

/// The lease that says which host runs sync `name`.
pub fn sync_lease(name: &str) -> String {
    format!("sync.{name}")
}

impl Syncs {
    /// Checks every sync against the runtime's connections. Refused
    /// records go to `queue`; cursors and run reports to `cursors`.
    pub fn new(
        runtime: Runtime,
        queue: Arc<dyn Queue>,
        cursors: Arc<dyn CursorStore>,
        syncs: &BTreeMap<String, SyncConfig>,
    ) -> Result<Self, String> {
        for (name, sync) in syncs {
            for (key, connection) in [("source", &sync.source), ("sink", &sync.sink)] {
                if !runtime.has_connection(connection) {
                    return Err(format!(
                        "syncs.{name}.{key} names connection `{connection}`, which does not exist"
                    ));
                }
            }
            if let Some(expr) = &sync.schedule {
                cron::Schedule::from_str(expr)
                    .map_err(|e| format!("syncs.{name}.schedule `{expr}`: {e}"))?;
            }
            for step in &sync.transforms {
                step.check(&runtime)
                    .map_err(|e| format!("syncs.{name}.transforms: {e}"))?;
            }
        }
        Ok(Syncs {
            runtime,
            queue,
            cursors,
            observers: FlowObservers::default(),
            syncs: syncs.clone(),
            running: (syncs.keys())
                .map(|name| (name.clone(), tokio::sync::Mutex::new(())))
                .collect(),
            leases: Arc::new(LocalLeases),
            lease_ttl: DEFAULT_SYNC_LEASE_TTL,
        })
    }

    /// Runs each sync only while holding its lease in `leases` for `ttl`
    /// (renewed every `ttl / 3`). Default: [`LocalLeases`], every lease
    /// granted (one host), [`DEFAULT_SYNC_LEASE_TTL`].
    pub fn with_leases(mut self, leases: Arc<dyn Leases>, ttl: Duration) -> Self {
        self.leases = leases;
        self.lease_ttl = ttl;
        self
    }

    /// Reports records and runs to `observers`. Default: none.
    pub fn with_observers(mut self, observers: FlowObservers) -> Self {
        self.observers = observers;
        self
    }

    /// Where cursors and run reports are kept.
    pub fn cursors(&self) -> &Arc<dyn CursorStore> {
        &self.cursors
    }

    /// The configured syncs.
    pub fn configs(&self) -> &BTreeMap<String, SyncConfig> {
        &self.syncs
    }

    /// Runs sync `name` once, now, and records the report: after every
    /// committed page (so a run killed midway leaves its progress, with
    /// `finished_at_ms` 0) and when it ends. Runs of one sync never
    /// overlap; different syncs run side by side.
    pub async fn run(&self, name: &str) -> Result<RunReport, String> {
        let sync = self
            .syncs
            .get(name)
            .ok_or_else(|| format!("no sync `{name}` is configured"))?;
        let _one_at_a_time = self.running[name].lock().await;
        let lease = (self.leases)
            .acquire(&sync_lease(name), self.lease_ttl)
            .await
            .map_err(|e| format!("sync `{name}`: lease: {e}"))?;
        let Some(lease) = lease else {
            return Err(format!(
                "sync `{name}` is running on another host (it holds the lease `{}`)",
                sync_lease(name)
            ));
        };
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = self.keep_lease(lease.clone(), lost.clone());
        let report = self.run_leased(name, sync, &lost).await;
        keeper.abort();
        if !lost.load(Ordering::SeqCst)
            && let Err(e) = self.leases.release(&lease).await
        {
            tracing::warn!(target: "switchyard::sync", sync = name, "releasing the lease: {e}");
        }
        report
    }

    /// Renews `lease` every third of its time to live until aborted; sets
    /// `lost` when it could not.
    fn keep_lease(&self, mut lease: Lease, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let (leases, ttl) = (self.leases.clone(), self.lease_ttl);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match leases.renew(&mut lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(target: "switchyard::sync", lease = %lease.name, "lease lost to another host; the run stops before its next commit");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // A blip (the cluster reconnecting) is retried: the
                    // lease holds for `ttl`, and the cursor's own
                    // compare-and-swap refuses a commit after a takeover.
                    Err(e) => {
                        tracing::warn!(target: "switchyard::sync", lease = %lease.name, "renewing the lease: {e}")
                    }
                }
            }
        })
    }

    /// One run, its lease held.
    async fn run_leased(
        &self,
        name: &str,
        sync: &SyncConfig,
        lost: &AtomicBool,
    ) -> Result<RunReport, String> {
        let mut report = RunReport {
            sync: name.to_owned(),
            started_at_ms: now_ms(),
            ..RunReport::default()
        };
        for stream in &sync.streams {
            report
                .streams
                .insert(stream.clone(), StreamCounts::default());
            if let Err(e) = self.run_stream(name, sync, stream, &mut report, lost).await {
                report.error = Some(format!("stream `{stream}`: {e}"));
                break;
            }
        }
        if let (None, Some(reconcile)) = (&report.error, &sync.reconcile) {
            report.reconcile = Some(self.reconcile(sync, reconcile).await);
        }
        report.finished_at_ms = now_ms();
        self.record(&report).await?;
        tracing::info!(
            target: "switchyard::sync",
            sync = name,
            read = report.read,
            written = report.written,
            failed = report.failed,
            error = report.error.as_deref().unwrap_or(""),
            "sync run finished"
        );
        self.observers.sync_run(&SyncRunEvent { report: &report });
        Ok(report)
    }

    /// Writes `report` over the run's earlier progress.
    async fn record(&self, report: &RunReport) -> Result<(), String> {
        let json = serde_json::to_string(report).expect("reports serialize");
        (self.cursors)
            .record_run(&report.sync, report.started_at_ms, &json)
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks the source and the sink for their counts.
    async fn reconcile(&self, sync: &SyncConfig, config: &ReconcileConfig) -> ReconcileCounts {
        let mut counts = ReconcileCounts::default();
        let mut errors = Vec::new();
        for (side, connection, action) in [
            ("source", &sync.source, &config.source_action),
            ("sink", &sync.sink, &config.sink_action),
        ] {
            let answer = self.runtime.call_action(connection, action, b"{}").await;
            let count = match answer {
                Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["count"].as_u64())
                    .ok_or_else(|| format!("{side} `{action}` did not answer {{\"count\": N}}")),
                Err(e) => Err(format!("{side} `{action}`: {e}")),
            };
            match count {
                Ok(n) if side == "source" => counts.source = Some(n),
                Ok(n) => counts.sink = Some(n),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            counts.error = Some(errors.join("; "));
        }
        counts
    }

    /// Starts one scheduler per sync with a `schedule`.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (name, sync) in &self.syncs {
            let Some(expr) = &sync.schedule else { continue };
            let schedule = cron::Schedule::from_str(expr).expect("checked in new");
            let this = self.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                for next in schedule.upcoming_owned(chrono::Utc) {
                    let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                    match this.run(&name).await {
                        Ok(_) => {}
                        // Every host's schedule fires; one runs it.
                        Err(e) if e.contains("is running on another host") => {
                            tracing::debug!(target: "switchyard::sync", sync = %name, "{e}");
                        }
                        Err(e) => tracing::error!(target: "switchyard::sync", sync = %name, "{e}"),
                    }
                }
            }));
        }
        tasks
    }
}
