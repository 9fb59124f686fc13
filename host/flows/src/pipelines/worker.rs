//! The loops that drain queues: webhook receivers and pipeline workers.
//! Each claims a batch, does its step and settles only what the next
//! stage accepted.

use super::{LEASE, PipelineConfig, Pipelines, hook_queue, pipeline_queue};
use crate::bindings::{ConnectorError, Message, WebhookRequest, WriteOutcome};
use crate::observe::{FlowObserver, RecordsEvent};
use crate::queue::{Delivery, FailOutcome, QueueError, RetryPolicy};
use std::collections::BTreeMap;
use switchyard_runtime::InvokeError;

impl Pipelines {
    /// Turns queued raw events into pipeline messages, one event at a time.
    pub(super) async fn run_receiver(&self, name: &str) {
        let hook = &self.webhooks[name];
        let queue = hook_queue(name);
        loop {
            let claim = self.queue.claim(&queue, 16, LEASE).await;
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
                        self.queue
                            .enqueue(&target, messages)
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
                self.observers.records(&RecordsEvent {
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
    pub(super) async fn run_pipeline(&self, name: &str) {
        let pipeline = &self.pipelines[name];
        let queue = pipeline_queue(name);
        loop {
            let claim = self.queue.claim(&queue, pipeline.batch_size, LEASE).await;
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
                self.observers.records(&RecordsEvent {
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
    /// outcome, in one queue transaction; hands the batch back. If the
    /// transaction fails nothing is settled: the batch is delivered again
    /// when its lease runs out.
    async fn settle_batch(
        &self,
        queue: &str,
        batch: Vec<Delivery>,
        outcomes: Vec<Result<(), ConnectorError>>,
        policy: &RetryPolicy,
    ) -> (Vec<Delivery>, Vec<Settled>) {
        let result = self.queue.settle(&batch, &outcomes, policy).await;
        let settled = settled(queue, &batch, outcomes, result);
        (batch, settled)
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
                    error = %switchyard_runtime::error::guest_error_message(outcome.as_ref().unwrap_err()),
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
