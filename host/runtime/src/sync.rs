//! Scheduled batch sync: a source connector read page by page from a
//! per-stream cursor, through transforms, into a sink.
//!
//! A stream's cursor is committed only after the sink has acknowledged
//! every record read up to it, so a killed process resumes from the last
//! committed cursor and loses nothing; records read again are rewritten,
//! which an idempotent sink absorbs. Records the sink refuses go to the
//! dead-letter queue of the sync's pipeline (`pipeline:sync.NAME`), from
//! where `dlq replay` sends them to the sink again.

use crate::bindings::{ConnectorError, Message, ReadRequest};
use crate::error::InvokeError;
use crate::observe::{Observer, RecordsEvent, SyncRunEvent};
use crate::queue::{Queue, RetryPolicy};
use crate::runtime::Runtime;
use crate::transform::Transform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
    pub finished_at_ms: u64,
    /// Records read from the source.
    pub read: u64,
    /// Records the sink acknowledged.
    pub written: u64,
    /// Records the sink refused (now dead letters).
    pub failed: u64,
    /// `None` when the run completed; otherwise why it stopped (the
    /// cursor stays at the last acknowledged page).
    pub error: Option<String>,
    /// The same counts per stream.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamCounts>,
}

/// What one run did on one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub read: u64,
    pub written: u64,
    pub failed: u64,
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
    queue: Arc<Queue>,
    syncs: BTreeMap<String, SyncConfig>,
    running: tokio::sync::Mutex<()>,
}

impl Syncs {
    /// Checks every sync against the runtime's connections.
    pub fn new(
        runtime: Runtime,
        queue: Arc<Queue>,
        syncs: &BTreeMap<String, SyncConfig>,
    ) -> Result<Self, String> {
        for (name, sync) in syncs {
            for (key, connection) in [("source", &sync.source), ("sink", &sync.sink)] {
                if runtime.connection(connection).is_none() {
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
            syncs: syncs.clone(),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured syncs.
    pub fn configs(&self) -> &BTreeMap<String, SyncConfig> {
        &self.syncs
    }

    /// Runs sync `name` once, now, and records the report. Runs of one
    /// host never overlap.
    pub async fn run(&self, name: &str) -> Result<RunReport, String> {
        let sync = self
            .syncs
            .get(name)
            .ok_or_else(|| format!("no sync `{name}` is configured"))?;
        let _one_at_a_time = self.running.lock().await;
        let mut report = RunReport {
            sync: name.to_owned(),
            started_at_ms: now_ms(),
            ..RunReport::default()
        };
        for stream in &sync.streams {
            let before = (report.read, report.written, report.failed);
            let result = self.run_stream(name, sync, stream, &mut report).await;
            let counts = StreamCounts {
                read: report.read - before.0,
                written: report.written - before.1,
                failed: report.failed - before.2,
            };
            report.streams.insert(stream.clone(), counts);
            self.runtime.observers().records(&RecordsEvent {
                flow: "sync",
                name,
                stream,
                records_in: counts.read,
                records_out: counts.written,
                failed: counts.failed,
            });
            if let Err(e) = result {
                report.error = Some(format!("stream `{stream}`: {e}"));
                break;
            }
        }
        report.finished_at_ms = now_ms();
        let json = serde_json::to_string(&report).expect("reports serialize");
        self.queue
            .record_run(name, &json)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            target: "switchyard::sync",
            sync = name,
            read = report.read,
            written = report.written,
            failed = report.failed,
            error = report.error.as_deref().unwrap_or(""),
            "sync run finished"
        );
        self.runtime
            .observers()
            .sync_run(&SyncRunEvent { report: &report });
        Ok(report)
    }

    async fn run_stream(
        &self,
        name: &str,
        sync: &SyncConfig,
        stream: &str,
        report: &mut RunReport,
    ) -> Result<(), String> {
        let db = |e: crate::queue::QueueError| e.to_string();
        let mut cursor = match sync.mode {
            SyncMode::Incremental => self.queue.cursor(name, stream).map_err(db)?,
            SyncMode::FullRefresh => None,
        };
        loop {
            let request = ReadRequest {
                stream: stream.to_owned(),
                cursor: cursor.clone(),
                max_messages: sync.page_size,
            };
            let page = retrying(&sync.retry, || {
                self.runtime.read(&sync.source, request.clone())
            })
            .await
            .map_err(|e| format!("read: {e}"))?;
            report.read += page.messages.len() as u64;
            let mut messages = page.messages;
            for step in &sync.transforms {
                messages = step
                    .apply(&self.runtime, messages)
                    .await
                    .map_err(|e| format!("transform: {}", crate::error::guest_error_message(&e)))?;
            }
            if !messages.is_empty() {
                self.write(name, sync, messages, report).await?;
            }
            // Everything read so far is acknowledged or dead-lettered.
            if let Some(next) = page.next_cursor {
                self.queue.commit_cursor(name, stream, &next).map_err(db)?;
                cursor = Some(next);
            }
            if !page.has_more {
                return Ok(());
            }
        }
    }

    async fn write(
        &self,
        name: &str,
        sync: &SyncConfig,
        messages: Vec<Message>,
        report: &mut RunReport,
    ) -> Result<(), String> {
        let outcomes = retrying(&sync.retry, || {
            self.runtime.write(&sync.sink, messages.clone())
        })
        .await
        .map_err(|e| format!("write: {e}"))?;
        let dlq = crate::pipelines::pipeline_queue(&sync_pipeline(name));
        for message in &messages {
            match outcomes
                .iter()
                .find(|o| o.id == message.id)
                .map(|o| &o.outcome)
            {
                Some(Err(e)) => {
                    let error = crate::error::guest_error_message(e);
                    self.queue
                        .enqueue_dead(&dlq, message, "refused by the sink", error)
                        .map_err(|e| e.to_string())?;
                    report.failed += 1;
                }
                _ => report.written += 1,
            }
        }
        Ok(())
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
                    if let Err(e) = this.run(&name).await {
                        tracing::error!(target: "switchyard::sync", sync = %name, "{e}");
                    }
                }
            }));
        }
        tasks
    }
}

/// Calls `call` until it succeeds, retrying what the error says may
/// succeed later (retryable, rate-limited, timeouts, crashes, busy) with
/// the policy's backoff, up to its attempts.
async fn retrying<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, InvokeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, InvokeError>>,
{
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let wait = match &error {
            InvokeError::Guest(ConnectorError::Permanent(_) | ConnectorError::InvalidInput(_)) => {
                return Err(error);
            }
            InvokeError::Guest(ConnectorError::RateLimited(r)) => {
                Duration::from_millis(r.retry_after_ms.unwrap_or(policy.base_delay_ms))
            }
            _ => Duration::from_millis(policy.backoff_ms(attempt)),
        };
        if attempt >= policy.max_attempts {
            return Err(error);
        }
        tracing::warn!(target: "switchyard::sync", attempt, "retrying after: {error}");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}
