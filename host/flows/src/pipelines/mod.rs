//! Webhooks and queue pipelines: events in, through transforms, into a
//! sink, with nothing lost on failure.
//!
//! ```text
//! POST /v1/hooks/NAME ─ verify signature, refuse replays ─► queue `hook:NAME` ─► 202
//!        queue `hook:NAME` ─ receiver's handle-webhook ─► queue `pipeline:P`
//!        queue `pipeline:P` ─ transforms ─ sink's write ─► ack / retry / dead letter
//! ```
//!
//! Each arrow out of a queue is a worker that claims a batch, does its
//! step, and acks only what the next stage accepted (see [`crate::queue`]).
//!
//! `config` holds the sections, `worker` the loops that drain queues.

mod config;
mod worker;

pub use config::{PipelineConfig, SignatureConfig, WebhookConfig};

use crate::bindings::{Message, WebhookRequest};
use crate::observe::{FlowObserver, FlowObservers};
use crate::queue::{DeliveryOutcome, Queue, QueueError};
use crate::sync::{SyncConfig, sync_pipeline};
use crate::trace::{SpanKind, SpanStart, TraceContext};
use crate::webhooks::{Rejection, SignatureScheme};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use switchyard_broker::secrets::{SecretProvider, SecretValue};
use switchyard_runtime::Runtime;
use tokio::sync::Notify;

/// Added to every lease: time on the queue and in the host around the
/// calls themselves.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long a claimed batch is leased before another consumer may take
/// it: what `calls` connector invocations in a row may take at most, each
/// waiting for a slot (`limits.queue_timeout_ms`) and then running to its
/// deadline (`limits.deadline_ms`), plus [`LEASE_MARGIN`]. A batch whose
/// poison record is isolated runs longer and may outlive its lease; its
/// late settlement then changes nothing (settlements are fenced) and the
/// batch is delivered again.
pub(super) fn lease_for(limits: &switchyard_runtime::limits::Limits, calls: usize) -> Duration {
    let per_call = Duration::from_millis(limits.deadline_ms + limits.queue_timeout_ms);
    per_call * calls.max(1) as u32 + LEASE_MARGIN
}
/// Longest a worker sleeps without looking at its queue.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The queue a webhook's raw events wait on.
pub fn hook_queue(name: &str) -> String {
    format!("hook:{name}")
}

/// The queue a pipeline drains.
pub fn pipeline_queue(name: &str) -> String {
    format!("pipeline:{name}")
}

/// Counters of one webhook endpoint.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub accepted: AtomicU64,
    /// Deliveries a sender sent again (same id, same signed material),
    /// answered 202 and not queued twice.
    pub duplicates: AtomicU64,
    pub rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// A configured webhook, its secret resolved.
struct Webhook {
    config: WebhookConfig,
    secret: SecretValue,
    counters: Arc<WebhookCounters>,
}

/// Why an inbound webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no webhook `{0}` is configured")]
    Unknown(String),
    #[error("{0}")]
    Rejected(Rejection),
    #[error("cannot queue the event: {0}")]
    Queue(#[from] QueueError),
}

/// Webhooks and pipelines of one host, sharing one queue.
pub struct Pipelines {
    runtime: Runtime,
    queue: Arc<dyn Queue>,
    observers: FlowObservers,
    webhooks: BTreeMap<String, Webhook>,
    pipelines: BTreeMap<String, PipelineConfig>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("webhooks", &self.webhooks.keys())
            .field("pipelines", &self.pipelines.keys())
            .finish_non_exhaustive()
    }
}

impl Pipelines {
    /// Checks the configuration against the runtime's connections and
    /// resolves every webhook secret.
    pub fn new(
        runtime: Runtime,
        queue: Arc<dyn Queue>,
        webhooks: &BTreeMap<String, WebhookConfig>,
        pipelines: &BTreeMap<String, PipelineConfig>,
        secrets: &dyn SecretProvider,
    ) -> Result<Self, String> {
        let connection = |what: &str, name: &str| {
            runtime
                .has_connection(name)
                .then_some(())
                .ok_or_else(|| format!("{what} names connection `{name}`, which does not exist"))
        };
        for (name, p) in pipelines {
            connection(&format!("pipelines.{name}.sink"), &p.sink)?;
            for step in &p.transforms {
                step.check(&runtime)
                    .map_err(|e| format!("pipelines.{name}.transforms: {e}"))?;
            }
            if p.batch_size == 0 {
                return Err(format!("pipelines.{name}.batch_size must be at least 1"));
            }
        }
        let mut resolved = BTreeMap::new();
        for (name, w) in webhooks {
            connection(&format!("webhooks.{name}.connection"), &w.connection)?;
            if !pipelines.contains_key(&w.pipeline) {
                return Err(format!(
                    "webhooks.{name}.pipeline names `{}`, which is not under [pipelines]",
                    w.pipeline
                ));
            }
            let secret = secrets
                .resolve(&format!("webhooks.{name}"), &w.signature.secret)
                .map_err(|e| e.to_string())?;
            resolved.insert(
                name.clone(),
                Webhook {
                    config: w.clone(),
                    secret,
                    counters: Arc::default(),
                },
            );
        }
        Ok(Pipelines {
            runtime,
            queue,
            observers: FlowObservers::default(),
            webhooks: resolved,
            pipelines: pipelines.clone(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Reports records to `observers`. Default: none.
    pub fn with_observers(mut self, observers: FlowObservers) -> Self {
        self.observers = observers;
        self
    }

    /// Names of the configured pipelines.
    pub fn pipeline_names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    /// Names of the configured webhooks.
    pub fn webhook_names(&self) -> impl Iterator<Item = &str> {
        self.webhooks.keys().map(String::as_str)
    }

    /// Wakes the workers (after a replay, say).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// The shared queue (for the dead-letter commands).
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// Counters of webhook `name`.
    pub fn webhook_counters(&self, name: &str) -> Option<Arc<WebhookCounters>> {
        self.webhooks.get(name).map(|w| w.counters.clone())
    }

    /// Verifies an inbound request and queues it durably; `Ok(id)` means
    /// the event is safe on disk and may be answered with 202.
    pub async fn ingest(&self, name: &str, request: WebhookRequest) -> Result<String, IngestError> {
        let hook = self
            .webhooks
            .get(name)
            .ok_or_else(|| IngestError::Unknown(name.to_owned()))?;
        let reject = |rejection: Rejection| {
            let mut counts = hook
                .counters
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *counts.entry(rejection.kind()).or_default() += 1;
            tracing::warn!(target: "switchyard::webhook", webhook = name, reason = %rejection, "webhook rejected");
            IngestError::Rejected(rejection)
        };
        let verified = crate::webhooks::verify(
            &hook.config.signature.scheme,
            &hook.secret,
            &request.headers,
            &request.body,
            SystemTime::now(),
        )
        .map_err(reject)?;
        // The sender's trace, if it sent one; this host's span in it
        // travels with the event to whichever host receives it.
        let span = SpanStart::under(TraceContext::from_headers(&request.headers));
        let mut headers = request.headers;
        span.context.set_on(&mut headers);
        let event = Message {
            id: verified.delivery_id.clone(),
            stream: "webhook".into(),
            key: None,
            headers,
            payload: request.body,
            timestamp_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let window = replay_window(&hook.config.signature.scheme);
        let outcome = self
            .queue
            .enqueue_delivery(
                &hook_queue(name),
                &format!("webhook:{name}"),
                window,
                &verified.replay_key,
                event,
            )
            .await?;
        self.observers.span(&span.finish(
            "webhook accept",
            SpanKind::Server,
            vec![
                ("webhook", name.to_owned()),
                ("message.id", verified.delivery_id.clone()),
                ("outcome", format!("{outcome:?}").to_lowercase()),
            ],
            None,
        ));
        match outcome {
            DeliveryOutcome::Queued => {
                hook.counters.accepted.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_waiters();
            }
            DeliveryOutcome::Duplicate => {
                // The sender did not see our 202 (or retries anyway): the
                // same answer again, nothing queued twice.
                hook.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "switchyard::webhook", webhook = name, id = %verified.delivery_id, "duplicate delivery answered as accepted");
            }
            DeliveryOutcome::Replayed => {
                return Err(reject(Rejection::Replayed(verified.delivery_id)));
            }
        }
        Ok(verified.delivery_id)
    }

    /// Starts one worker per webhook and `workers` per pipeline; they run until the
    /// returned handles are aborted. Messages a previous process had
    /// claimed are released first: this host is their only consumer.
    pub async fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        match self.queue.release_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "redelivering messages claimed before a restart"
            ),
            Err(e) => tracing::error!("queue: {e}"),
        }
        let mut workers = Vec::new();
        for name in self.webhooks.keys() {
            let this = self.clone();
            let name = name.clone();
            workers.push(tokio::spawn(async move { this.run_receiver(&name).await }));
        }
        for (name, pipeline) in &self.pipelines {
            for _ in 0..pipeline.workers {
                let this = self.clone();
                let name = name.clone();
                workers.push(tokio::spawn(async move { this.run_pipeline(&name).await }));
            }
        }
        workers
    }

    async fn idle(&self, queue: &str) {
        let wait = self
            .queue
            .next_due_in(queue)
            .await
            .ok()
            .flatten()
            .map_or(IDLE_POLL, |due| due.min(IDLE_POLL));
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
    }
}

/// The configured pipelines plus one per sync: each sync's refused records
/// wait on a pipeline of their own that writes straight to its sink, so
/// `dlq replay` can deliver them.
pub fn with_sync_pipelines(
    pipelines: &BTreeMap<String, PipelineConfig>,
    syncs: &BTreeMap<String, SyncConfig>,
) -> BTreeMap<String, PipelineConfig> {
    let mut all = pipelines.clone();
    for (name, sync) in syncs {
        all.insert(
            sync_pipeline(name),
            PipelineConfig::direct(&sync.sink, sync.retry.clone()),
        );
    }
    all
}

/// How long delivery ids are remembered: the tolerance window of
/// timestamped schemes (a later replay fails the timestamp check), a day
/// otherwise.
fn replay_window(scheme: &SignatureScheme) -> Duration {
    match scheme {
        SignatureScheme::StandardWebhooks { tolerance_s }
        | SignatureScheme::Stripe { tolerance_s } => Duration::from_secs(tolerance_s * 2),
        _ => Duration::from_secs(24 * 3600),
    }
}
