//! One stream of a sync run, page by page: read, transform (a record a
//! transform fails on alone is dead-lettered, the rest go on), write
//! (records the sink refuses are dead-lettered; records it names no
//! outcome for, or asks to retry, are written again), then commit the
//! cursor and record the run's progress.

use super::{RunReport, StreamCounts, SyncConfig, SyncMode, Syncs, sync_pipeline};
use crate::batch;
use crate::bindings::{ConnectorError, Message, ReadRequest};
use crate::observe::{FlowObserver, RecordsEvent};
use crate::queue::RetryPolicy;
use std::time::Duration;
use switchyard_runtime::InvokeError;
use switchyard_runtime::error::guest_error_message;

impl Syncs {
    pub(super) async fn run_stream(
        &self,
        name: &str,
        sync: &SyncConfig,
        stream: &str,
        report: &mut RunReport,
        lease_lost: &std::sync::atomic::AtomicBool,
    ) -> Result<(), String> {
        let db = |e: crate::queue::QueueError| e.to_string();
        let mut cursor = match sync.mode {
            SyncMode::Incremental => self.cursors.cursor(name, stream).await.map_err(db)?,
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
            let mut counts = StreamCounts {
                read: page.messages.len() as u64,
                ..StreamCounts::default()
            };
            if page.has_more && page.next_cursor.is_none() {
                // Nothing of the page is written: no cursor could record it.
                self.progress(report, stream, counts).await?;
                return Err(
                    "the source answered has_more without a next cursor, which would read the same page forever; it must return the cursor to continue from"
                        .into(),
                );
            }
            let transformed =
                batch::transform(&self.runtime, &sync.transforms, page.messages).await;
            let passed = counts.read
                - self
                    .dead_letter_poison(name, &transformed, &mut counts)
                    .await?;
            let out = transformed.messages.len() as u64;
            counts.filtered = passed.saturating_sub(out);
            counts.added = out.saturating_sub(passed);
            if !transformed.messages.is_empty() {
                let written = (self.write(name, sync, transformed.messages, &mut counts)).await;
                if let Err(e) = written {
                    // What the page did is reported; its cursor is not
                    // committed, so the next run reads it again.
                    self.progress(report, stream, counts).await?;
                    return Err(e);
                }
            }
            // Everything read so far is acknowledged or dead-lettered.
            if lease_lost.load(std::sync::atomic::Ordering::SeqCst) {
                self.progress(report, stream, counts).await?;
                return Err(
                    "this host lost the sync's lease to another host; stopped before committing the cursor (the page is read again)".into(),
                );
            }
            if let Some(next) = page.next_cursor {
                self.cursors
                    .commit_cursor(name, stream, &next)
                    .await
                    .map_err(db)?;
                cursor = Some(next);
            }
            self.progress(report, stream, counts).await?;
            if !page.has_more {
                return Ok(());
            }
        }
    }

    /// Dead-letters the records a transform failed on alone; how many.
    async fn dead_letter_poison(
        &self,
        name: &str,
        transformed: &batch::Transformed,
        counts: &mut StreamCounts,
    ) -> Result<u64, String> {
        let dlq = crate::pipelines::pipeline_queue(&sync_pipeline(name));
        let mut poisoned = 0;
        for (error, original) in transformed.failed.iter().zip(&transformed.originals) {
            let Some(error) = error else { continue };
            let last_error = guest_error_message(error);
            tracing::warn!(
                target: "switchyard::sync",
                sync = name,
                id = %original.id,
                error = %last_error,
                "a transform failed on this record; dead-lettered"
            );
            (self.queue)
                .enqueue_dead(
                    &dlq,
                    original.clone(),
                    "a transform failed on it",
                    last_error,
                )
                .await
                .map_err(|e| e.to_string())?;
            counts.failed += 1;
            poisoned += 1;
        }
        Ok(poisoned)
    }

    /// Adds a committed page's counts to the report, tells the observers
    /// and records the run's progress.
    async fn progress(
        &self,
        report: &mut RunReport,
        stream: &str,
        counts: StreamCounts,
    ) -> Result<(), String> {
        report.read += counts.read;
        report.written += counts.written;
        report.failed += counts.failed;
        report.filtered += counts.filtered;
        report.added += counts.added;
        report
            .streams
            .entry(stream.to_owned())
            .or_default()
            .add(counts);
        self.observers.records(&RecordsEvent {
            flow: "sync",
            name: &report.sync,
            stream,
            records_in: counts.read,
            records_out: counts.written,
            failed: counts.failed,
        });
        self.record(report).await
    }

    /// Writes `messages` until the sink has answered for each: acked ones
    /// count as written, refused ones (permanent, invalid input) are
    /// dead-lettered, and those it asks to retry or names no outcome for
    /// are written again, up to the retry policy's attempts; any left then
    /// fail the run, so the cursor does not move past them.
    async fn write(
        &self,
        name: &str,
        sync: &SyncConfig,
        mut messages: Vec<Message>,
        counts: &mut StreamCounts,
    ) -> Result<(), String> {
        let dlq = crate::pipelines::pipeline_queue(&sync_pipeline(name));
        let mut attempt = 1;
        loop {
            let outcomes = retrying(&sync.retry, || {
                self.runtime.write(&sync.sink, messages.clone())
            })
            .await
            .map_err(|e| format!("write: {e}"))?;
            let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
            let (results, unknown) = batch::match_outcomes(&ids, outcomes);
            if !unknown.is_empty() {
                tracing::warn!(
                    target: "switchyard::sync",
                    sync = name,
                    unknown = unknown.len(),
                    "the sink answered for records it was not given; ignored"
                );
            }
            let mut again = Vec::new();
            let mut last = None;
            for (message, result) in messages.into_iter().zip(results) {
                match result {
                    Ok(()) => counts.written += 1,
                    Err(e @ (ConnectorError::Permanent(_) | ConnectorError::InvalidInput(_))) => {
                        let error = guest_error_message(&e);
                        (self.queue)
                            .enqueue_dead(&dlq, message, "refused by the sink", error)
                            .await
                            .map_err(|e| e.to_string())?;
                        counts.failed += 1;
                    }
                    Err(e) => {
                        again.push(message);
                        last = Some(e);
                    }
                }
            }
            let Some(last) = last else { return Ok(()) };
            if attempt >= sync.retry.max_attempts {
                return Err(format!(
                    "write: {} records not acknowledged after {attempt} attempts ({})",
                    again.len(),
                    guest_error_message(&last)
                ));
            }
            tokio::time::sleep(Duration::from_millis(sync.retry.backoff_ms(attempt))).await;
            attempt += 1;
            messages = again;
        }
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
