//! The [`Queue`] and [`CursorStore`] traits over [`SqliteQueue`]: each
//! operation runs on tokio's blocking pool, since a commit waits for
//! fsync, while the async workers run other batches' guest calls.

use super::SqliteQueue;
use crate::bindings::{ConnectorError, Message};
use crate::cursors::CursorStore;
use crate::queue::{
    DeadLetter, Delivery, DeliveryOutcome, FailOutcome, Queue, QueueError, QueueStats, RetryPolicy,
    Settlement,
};
use std::time::Duration;

impl SqliteQueue {
    /// Runs `operation` on a clone of this queue on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&SqliteQueue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let queue = self.clone();
        tokio::task::spawn_blocking(move || operation(&queue))
            .await
            .expect("a queue operation panicked")
    }
}

#[async_trait::async_trait]
impl Queue for SqliteQueue {
    async fn enqueue(&self, queue: &str, messages: Vec<Message>) -> Result<usize, QueueError> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.enqueue(&queue, &messages)).await
    }

    async fn enqueue_delivery(
        &self,
        queue: &str,
        source: &str,
        window: Duration,
        replay_key: &str,
        message: Message,
    ) -> Result<DeliveryOutcome, QueueError> {
        let (queue, source, key) = (queue.to_owned(), source.to_owned(), replay_key.to_owned());
        self.blocking(move |q| q.enqueue_delivery(&queue, &source, window, &key, &message))
            .await
    }

    async fn enqueue_dead(
        &self,
        queue: &str,
        message: Message,
        reason: &str,
        last_error: &str,
    ) -> Result<(), QueueError> {
        let (queue, reason, last_error) =
            (queue.to_owned(), reason.to_owned(), last_error.to_owned());
        self.blocking(move |q| q.enqueue_dead(&queue, &message, &reason, &last_error))
            .await
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.claim(&queue, max, lease)).await
    }

    async fn release_claims(&self) -> Result<usize, QueueError> {
        self.blocking(|q| q.release_claims()).await
    }

    async fn settle(
        &self,
        batch: &[Delivery],
        outcomes: &[Result<(), ConnectorError>],
        policy: &RetryPolicy,
    ) -> Result<Vec<Option<FailOutcome>>, QueueError> {
        // Planned here (backoff jitter included), written on the pool.
        let plans: Vec<(i64, i64, Settlement)> = batch
            .iter()
            .zip(outcomes)
            .map(|(delivery, outcome)| {
                let plan = Settlement::plan(delivery, outcome, policy);
                (delivery.seq, delivery.token, plan)
            })
            .collect();
        self.blocking(move |q| {
            let applied = q.apply_plans(&plans)?;
            Ok(super::outcomes_of(&plans, &applied))
        })
        .await
    }

    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let queue = queue.map(str::to_owned);
        self.blocking(move |q| q.dead_letters(queue.as_deref(), limit))
            .await
    }

    async fn dead_letter_message(
        &self,
        seq: i64,
    ) -> Result<Option<(DeadLetter, Message)>, QueueError> {
        self.blocking(move |q| q.dead_letter_message(seq)).await
    }

    async fn replay(&self, queue: Option<&str>, seq: Option<i64>) -> Result<usize, QueueError> {
        let queue = queue.map(str::to_owned);
        self.blocking(move |q| q.replay(queue.as_deref(), seq))
            .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.stats(&queue)).await
    }

    async fn all_stats(&self) -> Result<Vec<(String, QueueStats)>, QueueError> {
        self.blocking(|q| q.all_stats()).await
    }

    async fn next_due_in(&self, queue: &str) -> Result<Option<Duration>, QueueError> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.next_due_in(&queue)).await
    }
}

#[async_trait::async_trait]
impl CursorStore for SqliteQueue {
    async fn cursor(&self, sync: &str, stream: &str) -> Result<Option<String>, QueueError> {
        let (sync, stream) = (sync.to_owned(), stream.to_owned());
        self.blocking(move |q| q.cursor(&sync, &stream)).await
    }

    async fn commit_cursor(
        &self,
        sync: &str,
        stream: &str,
        cursor: &str,
    ) -> Result<(), QueueError> {
        let (sync, stream, cursor) = (sync.to_owned(), stream.to_owned(), cursor.to_owned());
        self.blocking(move |q| q.commit_cursor(&sync, &stream, &cursor))
            .await
    }

    async fn reset_cursor(&self, sync: &str, stream: &str) -> Result<(), QueueError> {
        let (sync, stream) = (sync.to_owned(), stream.to_owned());
        self.blocking(move |q| q.reset_cursor(&sync, &stream)).await
    }

    async fn record_run(
        &self,
        sync: &str,
        started_at_ms: u64,
        report: &str,
    ) -> Result<(), QueueError> {
        let (sync, report) = (sync.to_owned(), report.to_owned());
        self.blocking(move |q| q.record_run(&sync, started_at_ms, &report))
            .await
    }

    async fn runs(&self, sync: &str, limit: usize) -> Result<Vec<String>, QueueError> {
        let sync = sync.to_owned();
        self.blocking(move |q| q.runs(&sync, limit)).await
    }
}
