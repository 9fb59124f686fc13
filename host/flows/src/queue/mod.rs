//! The durable queue between pipeline stages: the [`Queue`] trait every
//! backend implements, and the SQLite backend ([`SqliteQueue`]), the
//! embedded default.
//!
//! Delivery is at least once. A consumer *claims* a batch, which leases the
//! rows for a while; it then *acks* what succeeded and *fails* the rest
//! with the connector's error, which decides what happens next:
//! `retryable` retries after exponential backoff with jitter,
//! `rate-limited` retries after the upstream's `retry-after`, `permanent`
//! and `invalid-input` go to the dead-letter queue at once, and so does
//! anything past `max_attempts`. A process killed mid-batch leaves rows
//! claimed; their lease runs out and they are delivered again.
//!
//! Every message is keyed by (queue, stream, id): enqueueing a key that is
//! still waiting or in flight stores it once, and the key travels to the
//! sink as the `idempotency-key` header so a sink can drop duplicates of a
//! redelivery. A key that was delivered, or dead-lettered, comes again as
//! a new message: a later version of a record the sink refused is not
//! swallowed by the dead letter, which it supersedes (the dead letter's
//! row is reused, so the old payload is gone from the DLQ; its failure was
//! logged when it was dead-lettered).
//!
//! Settlements are fenced: each claim carries a token ([`Delivery::token`])
//! and a settlement changes the row only while it is still leased under
//! that token. A consumer that outlived its lease cannot ack or fail a
//! message another consumer has since claimed.

//!
//! The contract is the same on every backend: the [`Settlement`] rules
//! below decide retries and dead letters from the connector's error, so a
//! backend only stores what they decide.

mod sqlite;

pub use sqlite::SqliteQueue;

use crate::bindings::{ConnectorError, Message};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a queue (or cursor store) operation failed: the backend's own
/// error, as text for the operator.
#[derive(Debug, thiserror::Error)]
#[error("queue database: {0}")]
pub struct QueueError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl QueueError {
    /// A backend's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        QueueError(error.into())
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(error: rusqlite::Error) -> Self {
        QueueError(Box::new(error))
    }
}

/// How often and how patiently a queue retries. Defaults: 5 attempts,
/// 500 ms doubling to at most 60 s, full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Deliveries in all before a message is dead-lettered.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 500,
            max_delay_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before delivery `attempt + 1`, jittered over [0, cap].
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let cap = self
            .base_delay_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay_ms);
        fastrand::u64(0..=cap)
    }
}

/// A claimed message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The row, for `ack` and `fail`.
    pub seq: i64,
    /// The claim's fencing token: a settlement counts only while the row
    /// is still leased under it (see [`FailOutcome::LeaseLost`]).
    pub token: i64,
    /// This delivery's number, 1 for the first.
    pub attempt: u32,
    pub message: Message,
}

/// What `fail` did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Delivered again after this long.
    RetryIn(Duration),
    /// Moved to the dead-letter queue.
    DeadLettered,
    /// Nothing: the claim's lease had run out and the message was claimed
    /// again (or replayed), so this late settlement, ack or failure,
    /// changed nothing. The newer claim settles it.
    LeaseLost,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub seq: i64,
    pub queue: String,
    pub id: String,
    pub stream: String,
    pub attempts: u32,
    /// Why it was dead-lettered (`permanent`, `max attempts`, …).
    pub reason: String,
    /// The last error the consumer reported.
    pub last_error: String,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub failed_at_ms: i64,
}

/// A dead letter with its message, as the admin API and CLI show it
/// (payload as text, lossily decoded).
pub fn dead_letter_view(letter: &DeadLetter, message: &Message) -> serde_json::Value {
    serde_json::json!({
        "dead_letter": letter,
        "message": {
            "id": message.id,
            "stream": message.stream,
            "key": message.key,
            "headers": message.headers,
            "payload": String::from_utf8_lossy(&message.payload),
            "timestamp_ms": message.timestamp_ms,
        }
    })
}

/// Message counts of one queue by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub ready: u64,
    pub in_flight: u64,
    pub done: u64,
    pub dead: u64,
}

/// What settling one delivery writes: the same rules on every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Done,
    Retry { wait_ms: u64, last_error: String },
    Dead { reason: String, last_error: String },
}

impl Settlement {
    /// What the connector's error calls for (see the module docs).
    pub fn after_failure(
        delivery: &Delivery,
        error: &ConnectorError,
        policy: &RetryPolicy,
    ) -> Self {
        let message = switchyard_runtime::error::guest_error_message(error);
        let (kind, retry_after) = match error {
            ConnectorError::Retryable(_) => ("retryable", None),
            ConnectorError::RateLimited(r) => ("rate-limited", r.retry_after_ms),
            ConnectorError::Permanent(_) => ("permanent", None),
            ConnectorError::InvalidInput(_) => ("invalid-input", None),
        };
        let last_error = format!("{kind}: {message}");
        let permanent = matches!(kind, "permanent" | "invalid-input");
        if permanent || delivery.attempt >= policy.max_attempts {
            let reason = if permanent {
                format!("{kind} error")
            } else {
                format!("gave up after {} attempts", delivery.attempt)
            };
            return Settlement::Dead { reason, last_error };
        }
        let wait_ms = retry_after
            .unwrap_or(0)
            .max(policy.backoff_ms(delivery.attempt));
        Settlement::Retry {
            wait_ms,
            last_error,
        }
    }

    /// The plan for one delivery's outcome.
    pub fn plan(
        delivery: &Delivery,
        outcome: &Result<(), ConnectorError>,
        policy: &RetryPolicy,
    ) -> Self {
        match outcome {
            Ok(()) => Settlement::Done,
            Err(error) => Settlement::after_failure(delivery, error, policy),
        }
    }

    /// What the plan means for the caller: `None` when delivered.
    pub fn outcome(&self) -> Option<FailOutcome> {
        match self {
            Settlement::Done => None,
            Settlement::Retry { wait_ms, .. } => {
                Some(FailOutcome::RetryIn(Duration::from_millis(*wait_ms)))
            }
            Settlement::Dead { .. } => Some(FailOutcome::DeadLettered),
        }
    }
}

/// What [`Queue::enqueue_delivery`] did with a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// New: remembered and queued.
    Queued,
    /// The same delivery (id and signed material) within the window: the
    /// sender retrying one it may not have seen answered. Not queued
    /// again; answered as success.
    Duplicate,
    /// Signed material already delivered under another id within the
    /// window: a captured request replayed. Refused.
    Replayed,
}

/// A durable, at-least-once queue of messages keyed by (queue, stream,
/// id). Every method may wait on storage; none blocks the async caller.
///
/// Backends: [`SqliteQueue`] (the embedded default, one host).
#[async_trait::async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `messages` on `queue`; a message whose (stream, id) is still
    /// waiting or in flight is skipped (a delivered or dead-lettered one
    /// comes again). Returns how many were stored.
    async fn enqueue(&self, queue: &str, messages: Vec<Message>) -> Result<usize, QueueError>;

    /// Remembers webhook delivery `message.id` under `replay_key` (a
    /// canonical digest of what its signature covers) from `source` for
    /// `window` and, if the key is new, enqueues `message`, both or
    /// neither; returns once that is durable. See [`DeliveryOutcome`] for
    /// a key seen before.
    async fn enqueue_delivery(
        &self,
        queue: &str,
        source: &str,
        window: Duration,
        replay_key: &str,
        message: Message,
    ) -> Result<DeliveryOutcome, QueueError>;

    /// Puts `message` straight into the dead letters of `queue` (a sync's
    /// record the sink refused), in one step: no consumer can claim it on
    /// the way. One still waiting or in flight under its key is left
    /// alone (it will be delivered), and so is nothing else.
    async fn enqueue_dead(
        &self,
        queue: &str,
        message: Message,
        reason: &str,
        last_error: &str,
    ) -> Result<(), QueueError>;

    /// Claims up to `max` due messages of `queue` for `lease`; unsettled
    /// when it runs out, they are delivered again.
    async fn claim(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Releases every claim (a restarted host's own), so they are
    /// delivered now. Returns how many.
    async fn release_claims(&self) -> Result<usize, QueueError>;

    /// Acks, retries or dead-letters each delivery by its outcome (see
    /// [`Settlement`]), all or nothing; one result per delivery, in order:
    /// `None` when delivered, [`FailOutcome::LeaseLost`] when the claim was
    /// no longer the row's (nothing changed for it).
    async fn settle(
        &self,
        batch: &[Delivery],
        outcomes: &[Result<(), ConnectorError>],
        policy: &RetryPolicy,
    ) -> Result<Vec<Option<FailOutcome>>, QueueError>;

    /// Dead letters, oldest first, of one queue or all.
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError>;

    /// One dead letter with its message.
    async fn dead_letter_message(
        &self,
        seq: i64,
    ) -> Result<Option<(DeadLetter, Message)>, QueueError>;

    /// Puts dead letters back for a fresh round of attempts: one
    /// (`Some(seq)`) or every one of `queue` (all queues when `None`).
    /// Returns how many.
    async fn replay(&self, queue: Option<&str>, seq: Option<i64>) -> Result<usize, QueueError>;

    /// Counts of one queue by state.
    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError>;

    /// Counts by state of every queue that holds messages.
    async fn all_stats(&self) -> Result<Vec<(String, QueueStats)>, QueueError>;

    /// When the next message of `queue` is due, if any is waiting.
    async fn next_due_in(&self, queue: &str) -> Result<Option<Duration>, QueueError>;
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
