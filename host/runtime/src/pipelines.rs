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

use crate::bindings::{ConnectorError, Message, WebhookRequest, WriteOutcome};
use crate::error::InvokeError;
use crate::observe::{Observer, RecordsEvent};
use crate::queue::{Delivery, FailOutcome, Queue, QueueError, RetryPolicy};
use crate::runtime::Runtime;
use crate::secrets::{SecretGrant, SecretProvider, SecretValue};
use crate::transform::Transform;
use crate::webhooks::{Rejection, SignatureScheme};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// `[webhooks.NAME]`: an inbound endpoint at `POST /v1/hooks/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The connection whose `handle-webhook` turns an event into messages.
    pub connection: String,
    /// The pipeline those messages feed.
    pub pipeline: String,
    /// How senders sign requests; required (use a real scheme even in
    /// development: unsigned endpoints are not offered).
    pub signature: SignatureConfig,
    /// Retries of the receiver step. Default: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// A signature scheme and where its secret comes from.
#[derive(Debug, Clone, Deserialize)]
pub struct SignatureConfig {
    #[serde(flatten)]
    pub scheme: SignatureScheme,
    /// The signing secret (`env` or `file`), resolved by the host's secret
    /// provider.
    pub secret: SecretGrant,
}

/// `[pipelines.NAME]`: a queue drained through transforms into a sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Steps applied in order to each batch. Default: none.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// The connection whose `write` receives the batches.
    pub sink: String,
    /// Messages per sink call. Default: 100.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Batches in flight at once, each claimed, transformed, written and
    /// settled by its own worker. Default: 1, which delivers in queue
    /// order. With more, batches may reach the sink and be acked out of
    /// order (a later batch can overtake an earlier one, and a retried
    /// message already could), so use more only for sinks that do not
    /// depend on order.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Default: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_batch() -> usize {
    100
}

fn default_workers() -> usize {
    1
}

/// How long a claimed batch is leased before it is delivered again.
const LEASE: Duration = Duration::from_secs(60);
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
    queue: Arc<Queue>,
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
        queue: Arc<Queue>,
        webhooks: &BTreeMap<String, WebhookConfig>,
        pipelines: &BTreeMap<String, PipelineConfig>,
        secrets: &dyn SecretProvider,
    ) -> Result<Self, String> {
        let connection = |what: &str, name: &str| {
            runtime
                .connection(name)
                .map(|_| ())
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
            if p.workers == 0 {
                return Err(format!("pipelines.{name}.workers must be at least 1"));
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
            webhooks: resolved,
            pipelines: pipelines.clone(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// The webhooks and pipelines of `config`, on the queue at
    /// `config.queue_path()`.
    pub fn from_config(runtime: Runtime, config: &crate::SwitchyardConfig) -> Result<Self, String> {
        let path = config.queue_path();
        let queue = Queue::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Each sync's refused records wait on a pipeline of their own that
        // writes straight to its sink, so `dlq replay` can deliver them.
        let mut pipelines = config.pipelines.clone();
        for (name, sync) in &config.syncs {
            pipelines.insert(
                crate::sync::sync_pipeline(name),
                PipelineConfig {
                    transforms: Vec::new(),
                    sink: sync.sink.clone(),
                    batch_size: default_batch(),
                    workers: default_workers(),
                    retry: sync.retry.clone(),
                },
            );
        }
        let secrets = runtime.clone();
        Pipelines::new(
            runtime,
            Arc::new(queue),
            &config.webhooks,
            &pipelines,
            secrets.secret_provider(),
        )
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
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Counters of webhook `name`.
    pub fn webhook_counters(&self, name: &str) -> Option<Arc<WebhookCounters>> {
        self.webhooks.get(name).map(|w| w.counters.clone())
    }

    /// Verifies an inbound request and queues it durably; `Ok(id)` means
    /// the event is safe on disk and may be answered with 202.
    pub fn ingest(&self, name: &str, request: WebhookRequest) -> Result<String, IngestError> {
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
        let event = Message {
            id: verified.delivery_id.clone(),
            stream: "webhook".into(),
            key: None,
            headers: request.headers,
            payload: request.body,
            timestamp_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let window = replay_window(&hook.config.signature.scheme);
        let fresh = self.queue.enqueue_delivery(
            &hook_queue(name),
            &format!("webhook:{name}"),
            window,
            &event,
        )?;
        if !fresh {
            return Err(reject(Rejection::Replayed(verified.delivery_id)));
        }
        hook.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_waiters();
        Ok(verified.delivery_id)
    }

    /// Starts one worker per webhook and `workers` per pipeline; they run until the
    /// returned handles are aborted. Messages a previous process had
    /// claimed are released first: this host is their only consumer.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        match self.queue.release_claims() {
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
            .ok()
            .flatten()
            .map_or(IDLE_POLL, |due| due.min(IDLE_POLL));
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
    }

    /// Turns queued raw events into pipeline messages, one event at a time.
    async fn run_receiver(&self, name: &str) {
        let hook = &self.webhooks[name];
        let queue = hook_queue(name);
        loop {
            let claim = {
                let queue = queue.clone();
                self.on_queue(move |db| db.claim(&queue, 16, LEASE)).await
            };
            let claimed = match claim {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(webhook = name, "queue: {e}");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                self.idle(&queue).await;
                continue;
            }
            for delivery in claimed {
                let request = WebhookRequest {
                    method: "POST".into(),
                    path: String::new(),
                    query: String::new(),
                    headers: delivery.message.headers.clone(),
                    body: delivery.message.payload.clone(),
                };
                let result = match self
                    .runtime
                    .handle_webhook(&hook.config.connection, request)
                    .await
                {
                    Ok(messages) => {
                        let target = pipeline_queue(&hook.config.pipeline);
                        let count = messages.len() as u64;
                        self.on_queue(move |db| db.enqueue(&target, &messages))
                            .await
                            .map(|_| count)
                            .map_err(|e| ConnectorError::Retryable(e.to_string()))
                    }
                    Err(e) => Err(connector_error(&e)),
                };
                let queued = *result.as_ref().unwrap_or(&0);
                let (_, settled) = self
                    .settle_batch(
                        &queue,
                        vec![delivery],
                        vec![result.map(|_| ())],
                        &hook.config.retry,
                    )
                    .await;
                let settled = settled[0];
                self.runtime.observers().records(&RecordsEvent {
                    flow: "webhook",
                    name,
                    stream: "events",
                    records_in: 1,
                    records_out: queued,
                    failed: u64::from(settled == Settled::Dead),
                });
            }
            self.wake.notify_waiters();
        }
    }

    /// Drains a pipeline's queue in batches through transforms into the
    /// sink. Several of these may drain one queue: each claims its own
    /// batch.
    async fn run_pipeline(&self, name: &str) {
        let pipeline = &self.pipelines[name];
        let queue = pipeline_queue(name);
        loop {
            let claim = {
                let (queue, max) = (queue.clone(), pipeline.batch_size);
                self.on_queue(move |db| db.claim(&queue, max, LEASE)).await
            };
            let mut batch = match claim {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(pipeline = name, "queue: {e}");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                self.idle(&queue).await;
                continue;
            }
            let outcomes = self.deliver(pipeline, &mut batch).await;
            // The whole batch is settled in one transaction: one fsync,
            // not one per message.
            let (batch, settled) = self
                .settle_batch(&queue, batch, outcomes, &pipeline.retry)
                .await;
            let mut counts: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
            for (delivery, settled) in batch.iter().zip(settled) {
                let entry = counts.entry(&delivery.message.stream).or_default();
                entry.0 += 1;
                match settled {
                    Settled::Delivered => entry.1 += 1,
                    Settled::Dead => entry.2 += 1,
                    Settled::Retrying => {}
                }
            }
            for (stream, (records_in, records_out, failed)) in counts {
                self.runtime.observers().records(&RecordsEvent {
                    flow: "pipeline",
                    name,
                    stream,
                    records_in,
                    records_out,
                    failed,
                });
            }
        }
    }

    /// Runs one batch through the transforms and the sink; one outcome per
    /// delivery, in order. The payloads and headers move out of `batch`
    /// (settling needs only the rest).
    async fn deliver(
        &self,
        pipeline: &PipelineConfig,
        batch: &mut [Delivery],
    ) -> Vec<Result<(), ConnectorError>> {
        let mut messages: Vec<Message> = batch
            .iter_mut()
            .map(|d| {
                with_idempotency_key(Message {
                    id: d.message.id.clone(),
                    stream: d.message.stream.clone(),
                    key: d.message.key.clone(),
                    headers: std::mem::take(&mut d.message.headers),
                    payload: std::mem::take(&mut d.message.payload),
                    timestamp_ms: d.message.timestamp_ms,
                })
            })
            .collect();
        for step in &pipeline.transforms {
            messages = match step.apply(&self.runtime, messages).await {
                Ok(out) => out,
                Err(e) => return vec![Err(e); batch.len()],
            };
        }
        if messages.is_empty() {
            return vec![Ok(()); batch.len()];
        }
        let written = self.runtime.write(&pipeline.sink, messages).await;
        let outcomes: Vec<WriteOutcome> = match written {
            Ok(outcomes) => outcomes,
            Err(e) => return vec![Err(connector_error(&e)); batch.len()],
        };
        // Outcomes name message ids; a delivery whose id the transforms
        // dropped or renamed succeeds only if the whole batch did. The
        // first outcome for an id counts.
        let mut by_id: std::collections::HashMap<&str, &Result<(), ConnectorError>> =
            std::collections::HashMap::with_capacity(outcomes.len());
        for o in &outcomes {
            by_id.entry(o.id.as_str()).or_insert(&o.outcome);
        }
        let first_error = outcomes.iter().find_map(|o| o.outcome.clone().err());
        batch
            .iter()
            .map(|d| match (by_id.get(d.message.id.as_str()), &first_error) {
                (Some(outcome), _) => (*outcome).clone(),
                (None, None) => Ok(()),
                (None, Some(e)) => Err(e.clone()),
            })
            .collect()
    }

    /// Acks, retries or dead-letters each delivery of a batch by its
    /// outcome, in one queue transaction on a blocking thread (see
    /// [`Pipelines::on_queue`]); hands the batch back. If the transaction
    /// fails nothing is settled: the batch is delivered again when its
    /// lease runs out.
    async fn settle_batch(
        &self,
        queue: &str,
        batch: Vec<Delivery>,
        outcomes: Vec<Result<(), ConnectorError>>,
        policy: &RetryPolicy,
    ) -> (Vec<Delivery>, Vec<Settled>) {
        let policy = policy.clone();
        let (batch, outcomes, result) = self
            .on_queue(move |db| {
                let result = db.settle(batch.iter().zip(&outcomes), &policy);
                (batch, outcomes, result)
            })
            .await;
        let settled = settled(queue, &batch, outcomes, result);
        (batch, settled)
    }

    /// Runs a queue operation on tokio's blocking pool: a commit waits for
    /// fsync, and the async workers meanwhile run other batches' guest
    /// calls (with `workers` > 1 the two overlap).
    async fn on_queue<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Queue) -> T + Send + 'static,
    ) -> T {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || operation(&queue))
            .await
            .expect("a queue operation panicked")
    }
}

/// What a batch's settlement `result` means for each delivery, logging
/// each failed one.
fn settled(
    queue: &str,
    batch: &[Delivery],
    outcomes: Vec<Result<(), ConnectorError>>,
    result: Result<Vec<Option<FailOutcome>>, QueueError>,
) -> Vec<Settled> {
    let next = match result {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(queue, "queue: {e}");
            return vec![Settled::Retrying; batch.len()];
        }
    };
    batch
        .iter()
        .zip(outcomes)
        .zip(next)
        .map(|((delivery, outcome), next)| match next {
            None => Settled::Delivered,
            Some(next) => {
                tracing::warn!(
                    target: "switchyard::pipeline",
                    queue,
                    id = %delivery.message.id,
                    attempt = delivery.attempt,
                    error = %crate::error::guest_error_message(outcome.as_ref().unwrap_err()),
                    next = ?next,
                    "delivery failed"
                );
                if next == FailOutcome::DeadLettered {
                    Settled::Dead
                } else {
                    Settled::Retrying
                }
            }
        })
        .collect()
}

/// Where a delivery ended up after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Delivered,
    Retrying,
    Dead,
}

/// Invocation failures in the connector's own error terms: a guest's
/// variant passes through; traps, timeouts and a busy host are retryable.
fn connector_error(error: &InvokeError) -> ConnectorError {
    match error {
        InvokeError::Guest(e) => e.clone(),
        other => ConnectorError::Retryable(other.to_string()),
    }
}

/// Adds `idempotency-key: <stream>/<id>` so a sink can drop redeliveries.
fn with_idempotency_key(mut message: Message) -> Message {
    if !message.headers.iter().any(|(k, _)| k == "idempotency-key") {
        let key = format!("{}/{}", message.stream, message.id);
        message.headers.push(("idempotency-key".into(), key));
    }
    message
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
