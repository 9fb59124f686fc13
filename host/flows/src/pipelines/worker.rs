//! The loops that drain queues: webhook receivers and pipeline workers.
//! Each claims a batch, does its step and settles only what the next
//! stage accepted.

use super::{PipelineConfig, Pipelines, hook_queue, lease_for, pipeline_queue};
use crate::batch;
use crate::bindings::{ConnectorError, Message, WebhookRequest};
use crate::observe::{FlowObserver, RecordsEvent};
use crate::queue::{Delivery, FailOutcome, QueueError, RetryPolicy};
use crate::trace::{SpanKind, SpanStart, TraceContext};
use std::collections::BTreeMap;
use switchyard_runtime::InvokeError;

impl Pipelines {
    /// Turns queued raw events into pipeline messages, one event at a time.
    pub(super) async fn run_receiver(&self, name: &str) {
        let hook = &self.webhooks[name];
        let queue = hook_queue(name);
        // Events are handled one after another: 16 receiver calls.
        let lease = lease_for(self.runtime.limits(), 16);
        loop {
            let claim = self.queue.claim(&queue, 16, lease).await;
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
                let span = SpanStart::under(TraceContext::from_headers(&delivery.message.headers));
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
                    Ok(mut messages) => {
                        // Each message goes on in the event's trace.
                        for message in &mut messages {
                            span.context.set_on(&mut message.headers);
                        }
                        // Counted as stored: a duplicate of a message still
                        // waiting or in flight is not queued twice.
                        let target = pipeline_queue(&hook.config.pipeline);
                        self.queue
                            .enqueue(&target, messages)
                            .await
                            .map(|stored| stored as u64)
                            .map_err(|e| ConnectorError::Retryable(e.to_string()))
                    }
                    Err(e) => Err(connector_error(&e)),
                };
                let queued = *result.as_ref().unwrap_or(&0);
                let error = result
                    .as_ref()
                    .err()
                    .map(switchyard_runtime::error::guest_error_message);
                let attributes = vec![
                    ("webhook", name.to_owned()),
                    ("message.id", delivery.message.id.clone()),
                    ("attempt", delivery.attempt.to_string()),
                    ("messages", queued.to_string()),
                ];
                let finished = span.finish(
                    "webhook receive",
                    SpanKind::Consumer,
                    attributes,
                    error.map(str::to_owned),
                );
                self.observers.span(&finished);
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
        // Connector transforms and the sink, one call each per batch.
        let calls = 1
            + (pipeline.transforms.iter())
                .filter(|t| matches!(t, crate::transform::Transform::Connection { .. }))
                .count();
        let lease = lease_for(self.runtime.limits(), calls);
        loop {
            let claim = self.queue.claim(&queue, pipeline.batch_size, lease).await;
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
            let started = std::time::SystemTime::now();
            let contexts: Vec<Option<TraceContext>> = batch
                .iter()
                .map(|d| TraceContext::from_headers(&d.message.headers))
                .collect();
            let outcomes = self.deliver(pipeline, &mut batch).await;
            let errors: Vec<Option<String>> = (outcomes.iter())
                .map(|o| {
                    o.as_ref()
                        .err()
                        .map(|e| switchyard_runtime::error::guest_error_message(e).to_owned())
                })
                .collect();
            // The whole batch is settled in one transaction: one fsync,
            // not one per message.
            let (batch, settled) = self
                .settle_batch(&queue, batch, outcomes, &pipeline.retry)
                .await;
            self.deliver_spans(name, &batch, &contexts, errors, &settled, started);
            let mut counts: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
            for (delivery, settled) in batch.iter().zip(settled) {
                let entry = counts.entry(&delivery.message.stream).or_default();
                entry.0 += 1;
                match settled {
                    Settled::Delivered => entry.1 += 1,
                    Settled::Dead => entry.2 += 1,
                    Settled::Retrying | Settled::LeaseLost => {}
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
    /// delivery, in order. A record a transform fails on alone carries
    /// that error and the rest go on; a record the sink named no outcome
    /// for is retried, never counted delivered. The payloads and headers
    /// move out of `batch` (settling needs only the rest).
    async fn deliver(
        &self,
        pipeline: &PipelineConfig,
        batch: &mut [Delivery],
    ) -> Vec<Result<(), ConnectorError>> {
        let inputs: Vec<Message> = batch
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
        let transformed =
            crate::batch::transform(&self.runtime, &pipeline.transforms, inputs).await;
        let batch::Transformed {
            messages,
            owners,
            failed,
            ..
        } = transformed;
        if messages.is_empty() {
            return crate::batch::per_input(failed, &owners, &[]);
        }
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        let results = match self.runtime.write(&pipeline.sink, messages).await {
            Ok(outcomes) => {
                let (results, unknown) = crate::batch::match_outcomes(&ids, outcomes);
                if !unknown.is_empty() {
                    tracing::warn!(
                        target: "switchyard::pipeline",
                        sink = %pipeline.sink,
                        unknown = unknown.len(),
                        "the sink answered for messages it was not given; ignored"
                    );
                }
                results
            }
            Err(e) => vec![Err(connector_error(&e)); ids.len()],
        };
        crate::batch::per_input(failed, &owners, &results)
    }

    /// One `pipeline deliver` span per traced message of a settled batch.
    fn deliver_spans(
        &self,
        name: &str,
        batch: &[Delivery],
        contexts: &[Option<TraceContext>],
        errors: Vec<Option<String>>,
        settled: &[Settled],
        started: std::time::SystemTime,
    ) {
        for (((delivery, context), error), settled) in
            batch.iter().zip(contexts).zip(errors).zip(settled)
        {
            let Some(context) = context else { continue };
            let mut span = SpanStart::under(Some(*context));
            span.start = started;
            let attributes = vec![
                ("pipeline", name.to_owned()),
                ("message.id", delivery.message.id.clone()),
                ("attempt", delivery.attempt.to_string()),
                ("outcome", format!("{settled:?}").to_lowercase()),
            ];
            let finished = span.finish("pipeline deliver", SpanKind::Consumer, attributes, error);
            self.observers.span(&finished);
        }
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
            Some(FailOutcome::LeaseLost) => {
                tracing::warn!(
                    target: "switchyard::pipeline",
                    queue,
                    id = %delivery.message.id,
                    attempt = delivery.attempt,
                    "settlement ignored: the lease ran out and the message was claimed again"
                );
                Settled::LeaseLost
            }
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
    /// Another claim owns it now; this attempt counts for nothing.
    LeaseLost,
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
