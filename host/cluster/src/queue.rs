//! [`JetStreamQueue`]: the flows' [`Queue`] on JetStream.
//!
//! Each queue is a work-queue stream with one durable pull consumer,
//! `workers`, that every host pulls from, so each message goes to one
//! host at a time. A claim is the set of messages one pull returned; the
//! host keeps them alive with progress acks every third of the ack wait
//! until the claim's lease (derived from the pipeline's deadlines) runs
//! out. A host that dies stops sending them, and the server redelivers
//! its messages to another host one ack wait later.
//!
//! Settling follows [`Settlement`], computed here as on every backend:
//! delivered is an ack; a retry is a nak with the host's jittered backoff
//! (or the upstream's retry-after) as its delay; a dead letter is
//! published to the dead-letter stream, then the message is acked. Every
//! ack waits for the server's answer (a double ack), so a settlement the
//! caller sees as done is durable.
//!
//! Differences from the SQLite queue, all within at-least-once:
//! - dedupe on enqueue is by content: a message with the same (stream,
//!   id, payload) published within the stream's duplicate window (10
//!   minutes) is stored once, whether it is still waiting or delivered;
//!   a changed record under the same id is stored again;
//! - settling a batch is per message, not one transaction; each
//!   settlement is idempotent, and one the server did not confirm is
//!   redelivered;
//! - a newer version of a key does not supersede its dead letter.

use crate::names::{self, Settings};
use crate::{ClusterError, names::DEAD};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::message::{AckKind, PublishMessage};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_flows::queue::{
    DeadLetter, Delivery, DeliveryOutcome, FailOutcome, Queue, QueueError, QueueStats, RetryPolicy,
    Settlement,
};
use switchyard_runtime::bindings::{ConnectorError, Message};

/// How long an empty claim waits for a first message: the queue's
/// long poll (the workers do not sleep between claims on this backend).
const LONG_POLL: Duration = Duration::from_millis(500);
/// The work streams' publish-dedupe window.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long a pull may take beyond its own wait.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claim waits after a failed pull, so an unreachable server
/// is not asked in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Why a message is in the dead letters, in its `Sy-Dead` header.
#[derive(Debug, Serialize, Deserialize)]
struct DeadInfo {
    queue: String,
    reason: String,
    last_error: String,
    attempts: u32,
    failed_at_ms: i64,
}

/// A claimed message the host keeps alive until settled or its lease
/// runs out.
#[derive(Debug)]
struct Claimed {
    message: jetstream::Message,
    queue: String,
    lease_until: Instant,
}

#[derive(Debug)]
struct Inner {
    context: jetstream::Context,
    settings: Settings,
    ack_wait: Duration,
    consumers: tokio::sync::Mutex<HashMap<String, PullConsumer>>,
    claimed: Mutex<HashMap<i64, Claimed>>,
    next_token: AtomicI64,
    dead: jetstream::stream::Stream,
    deliveries: jetstream::kv::Store,
}

/// The flows' queue on JetStream; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct JetStreamQueue {
    inner: Arc<Inner>,
}

impl JetStreamQueue {
    pub(crate) async fn new(
        context: jetstream::Context,
        settings: Settings,
        ack_wait: Duration,
    ) -> Result<Self, ClusterError> {
        let dead = context
            .get_or_create_stream(stream::Config {
                name: settings.dead_stream(),
                subjects: vec![format!("{}.dead.>", settings.prefix)],
                storage: settings.storage(),
                num_replicas: settings.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::Setup(format!("stream {}: {e}", settings.dead_stream())))?;
        // Delivery ids live as long as the longest replay window (a day);
        // each entry carries its own expiry within that.
        let deliveries = settings
            .kv(&context, "deliveries", 1, Duration::from_secs(8 * 86_400))
            .await?;
        let queue = JetStreamQueue {
            inner: Arc::new(Inner {
                context,
                settings,
                ack_wait,
                consumers: Default::default(),
                claimed: Default::default(),
                next_token: AtomicI64::new(1),
                dead,
                deliveries,
            }),
        };
        queue.keep_claims_alive();
        Ok(queue)
    }

    /// Sends a progress ack for every claimed message within its lease,
    /// every third of the ack wait; forgets claims whose lease ran out
    /// (the server redelivers them, and their late settlement is
    /// refused as [`FailOutcome::LeaseLost`]).
    fn keep_claims_alive(&self) {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.ack_wait / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let live: Vec<jetstream::Message> = {
                    let mut claimed = inner.claimed.lock().unwrap();
                    claimed.retain(|_, c| c.lease_until > now);
                    claimed.values().map(|c| c.message.clone()).collect()
                };
                for message in live {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(target: "switchyard::cluster", "progress ack: {e}");
                    }
                }
            }
        });
    }

    /// The pull consumer of `queue`, creating its stream and consumer
    /// on first use.
    async fn consumer(&self, queue: &str) -> Result<PullConsumer, QueueError> {
        let mut consumers = self.inner.consumers.lock().await;
        if let Some(consumer) = consumers.get(queue) {
            return Ok(consumer.clone());
        }
        let settings = &self.inner.settings;
        let stream = (self.inner.context)
            .get_or_create_stream(stream::Config {
                name: settings.queue_stream(queue),
                subjects: vec![settings.queue_subject(queue)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: settings.storage(),
                num_replicas: settings.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| QueueError::new(format!("stream for queue `{queue}`: {e}")))?;
        let consumer = stream
            .get_or_create_consumer(
                "workers",
                consumer::pull::Config {
                    durable_name: Some("workers".into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.inner.ack_wait,
                    // The host decides dead letters from the connector's
                    // error and `max_attempts`; the server never drops.
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| QueueError::new(format!("consumer for queue `{queue}`: {e}")))?;
        consumers.insert(queue.to_owned(), consumer.clone());
        Ok(consumer)
    }

    async fn pull(
        consumer: &PullConsumer,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<jetstream::Message>, QueueError> {
        let err = |e: &dyn std::fmt::Display| QueueError::new(format!("pull: {e}"));
        let pulled = async {
            let mut batch = match wait {
                None => consumer.fetch().max_messages(max).messages().await,
                Some(wait) => {
                    consumer
                        .batch()
                        .max_messages(max)
                        .expires(wait)
                        .messages()
                        .await
                }
            }
            .map_err(|e| err(&e))?;
            let mut out = Vec::new();
            while let Some(message) = batch.next().await {
                out.push(message.map_err(|e| err(&e))?);
            }
            Ok(out)
        };
        // A pull sent while the connection is down waits for an answer
        // that never comes: bounded, so the worker retries instead.
        let bound = wait.unwrap_or_default() + PULL_TIMEOUT;
        tokio::time::timeout(bound, pulled)
            .await
            .unwrap_or_else(|_| Err(err(&"no answer from the server (reconnecting?)")))
    }

    /// Publishes `message` on `subject` under dedupe id `msg_id`; whether
    /// it was new.
    async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture, QueueError> {
        let publish = PublishMessage::build()
            .headers(headers)
            .payload(payload)
            .message_id(msg_id);
        (self.inner.context)
            .send_publish(subject, publish)
            .await
            .map_err(|e| QueueError::new(format!("publish: {e}")))
    }

    async fn publish_dead(
        &self,
        queue: &str,
        msg_id: &str,
        message: Message,
        info: DeadInfo,
    ) -> Result<(), QueueError> {
        let (mut headers, payload) = names::to_nats(message);
        headers.insert(
            DEAD,
            serde_json::to_string(&info).expect("serializes").as_str(),
        );
        let subject = self.inner.settings.dead_subject(queue);
        self.publish(subject, msg_id, headers, payload)
            .await?
            .await
            .map_err(|e| QueueError::new(format!("publish dead letter: {e}")))?;
        Ok(())
    }

    /// One settlement; `None` when delivered.
    async fn settle_one(
        &self,
        delivery: &Delivery,
        plan: Settlement,
    ) -> Result<Option<FailOutcome>, QueueError> {
        let claimed = self.inner.claimed.lock().unwrap().remove(&delivery.token);
        let Some(claimed) = claimed.filter(|c| c.lease_until > Instant::now()) else {
            return Ok(Some(FailOutcome::LeaseLost));
        };
        let ack = |e: async_nats::Error| QueueError::new(format!("ack: {e}"));
        let outcome = plan.outcome();
        match plan {
            Settlement::Done => claimed.message.double_ack().await.map_err(ack)?,
            Settlement::Retry { wait_ms, .. } => claimed
                .message
                .double_ack_with(AckKind::Nak(Some(Duration::from_millis(wait_ms))))
                .await
                .map_err(ack)?,
            Settlement::Dead { reason, last_error } => {
                let info = DeadInfo {
                    queue: claimed.queue.clone(),
                    reason,
                    last_error,
                    attempts: delivery.attempt,
                    failed_at_ms: now_ms(),
                };
                let message =
                    names::from_nats(claimed.message.headers.as_ref(), &claimed.message.payload)
                        .unwrap_or_else(|| delivery.message.clone());
                // Dedupe id: the work message's sequence, so a host that
                // dies between the two steps writes one dead letter.
                let id = format!("dead.{}.{}", names::encode(&claimed.queue), delivery.seq);
                self.publish_dead(&claimed.queue, &id, message, info)
                    .await?;
                claimed.message.double_ack().await.map_err(ack)?;
            }
        }
        Ok(outcome)
    }

    /// Every dead letter (of one queue or all) from sequence `from` on,
    /// up to `limit`, with its message.
    async fn scan_dead(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(DeadLetter, Message)>, QueueError> {
        let subject = match queue {
            Some(queue) => self.inner.settings.dead_subject(queue),
            None => format!("{}.dead.>", self.inner.settings.prefix),
        };
        let err = |e: &dyn std::fmt::Display| QueueError::new(format!("dead letters: {e}"));
        let mut out = Vec::new();
        let mut dead = self.inner.dead.clone();
        if dead.info().await.map_err(|e| err(&e))?.state.messages == 0 {
            return Ok(out);
        }
        let consumer = dead
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
        while out.len() < limit {
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.map_err(|e| err(&e))?;
            let info = message.info().map_err(|e| err(&e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if let Some(letter) =
                dead_letter(seq as i64, message.headers.as_ref(), &message.payload)
            {
                out.push(letter);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// A dead letter from its stream message.
fn dead_letter(
    seq: i64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<(DeadLetter, Message)> {
    let message = names::from_nats(headers, payload)?;
    let info: DeadInfo = serde_json::from_str(headers?.get(DEAD)?.as_str()).ok()?;
    let letter = DeadLetter {
        seq,
        queue: info.queue,
        id: message.id.clone(),
        stream: message.stream.clone(),
        attempts: info.attempts,
        reason: info.reason,
        last_error: info.last_error,
        failed_at_ms: info.failed_at_ms,
    };
    Some((letter, message))
}

/// A webhook delivery id remembered in KV.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    id: String,
    /// False between remembering it and the message being stored.
    queued: bool,
    expires_ms: i64,
}

#[async_trait::async_trait]
impl Queue for JetStreamQueue {
    async fn enqueue(&self, queue: &str, messages: Vec<Message>) -> Result<usize, QueueError> {
        self.consumer(queue).await?;
        let subject = self.inner.settings.queue_subject(queue);
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let id = names::digest(&[
                queue.as_bytes(),
                message.stream.as_bytes(),
                message.id.as_bytes(),
                &message.payload,
            ]);
            let (headers, payload) = names::to_nats(message);
            acks.push(self.publish(subject.clone(), &id, headers, payload).await?);
        }
        let mut stored = 0;
        for ack in acks {
            let ack = ack
                .await
                .map_err(|e| QueueError::new(format!("publish: {e}")))?;
            stored += usize::from(!ack.duplicate);
        }
        Ok(stored)
    }

    async fn enqueue_delivery(
        &self,
        queue: &str,
        source: &str,
        window: Duration,
        replay_key: &str,
        message: Message,
    ) -> Result<DeliveryOutcome, QueueError> {
        use async_nats::jetstream::kv::{CreateErrorKind, Operation};
        self.consumer(queue).await?;
        let kv = &self.inner.deliveries;
        let key = names::digest(&[source.as_bytes(), replay_key.as_bytes()]);
        let err = |e: &dyn std::fmt::Display| QueueError::new(format!("delivery ids: {e}"));
        let fresh = |queued| Remembered {
            id: message.id.clone(),
            queued,
            expires_ms: now_ms() + window.as_millis() as i64,
        };
        let encode = |r: &Remembered| serde_json::to_vec(r).expect("serializes").into();
        // A few rounds: each lost compare-and-swap means another host
        // wrote the key in between, and we read what it wrote.
        for _ in 0..5 {
            let entry = kv.entry(&key).await.map_err(|e| err(&e))?;
            let seen = (entry.as_ref())
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| serde_json::from_slice::<Remembered>(&e.value).ok())
                .filter(|r| r.expires_ms > now_ms());
            let outcome = match seen {
                Some(seen) if seen.id != message.id => return Ok(DeliveryOutcome::Replayed),
                Some(seen) if seen.queued => return Ok(DeliveryOutcome::Duplicate),
                // Remembered but maybe never stored: the host that took it
                // died before storing, or is storing it right now. Store it
                // (the publish dedupe id makes a racing copy one message).
                Some(_) => DeliveryOutcome::Duplicate,
                None => DeliveryOutcome::Queued,
            };
            let revision = match (&entry, outcome) {
                (_, DeliveryOutcome::Duplicate) => entry.as_ref().map(|e| e.revision),
                (None, _) => match kv.create(&key, encode(&fresh(false))).await {
                    Ok(revision) => Some(revision),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(err(&e)),
                },
                (Some(old), _) => {
                    match kv.update(&key, encode(&fresh(false)), old.revision).await {
                        Ok(revision) => Some(revision),
                        Err(_) => continue,
                    }
                }
            };
            let (headers, payload) = names::to_nats(message.clone());
            let subject = self.inner.settings.queue_subject(queue);
            self.publish(subject, &format!("wh.{key}"), headers, payload)
                .await?
                .await
                .map_err(|e| QueueError::new(format!("publish: {e}")))?;
            if let Some(revision) = revision {
                // Losing this race only means another host marked it.
                let _ = kv.update(&key, encode(&fresh(true)), revision).await;
            }
            return Ok(outcome);
        }
        Err(QueueError::new(
            "delivery ids: the key kept changing under concurrent writers",
        ))
    }

    async fn enqueue_dead(
        &self,
        queue: &str,
        message: Message,
        reason: &str,
        last_error: &str,
    ) -> Result<(), QueueError> {
        let id = format!(
            "deadin.{}",
            names::digest(&[
                queue.as_bytes(),
                message.stream.as_bytes(),
                message.id.as_bytes(),
                &message.payload
            ])
        );
        let info = DeadInfo {
            queue: queue.to_owned(),
            reason: reason.to_owned(),
            last_error: last_error.to_owned(),
            attempts: 0,
            failed_at_ms: now_ms(),
        };
        self.publish_dead(queue, &id, message, info).await
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let pulled = async {
            let consumer = self.consumer(queue).await?;
            let mut messages = Self::pull(&consumer, max, None).await?;
            if messages.is_empty() {
                messages = Self::pull(&consumer, 1, Some(LONG_POLL)).await?;
                if !messages.is_empty() && max > 1 {
                    messages.extend(Self::pull(&consumer, max - 1, None).await?);
                }
            }
            Ok::<_, QueueError>(messages)
        };
        let messages = match pulled.await {
            Ok(messages) => messages,
            Err(e) => {
                tokio::time::sleep(ERROR_PAUSE).await;
                return Err(e);
            }
        };
        let lease_until = Instant::now() + lease;
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            let (seq, attempt) = match message.info() {
                Ok(info) => (info.stream_sequence as i64, info.delivered.max(1) as u32),
                Err(_) => continue,
            };
            let Some(decoded) = names::from_nats(message.headers.as_ref(), &message.payload) else {
                tracing::error!(target: "switchyard::cluster", queue, seq, "not a switchyard message; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
            self.inner.claimed.lock().unwrap().insert(
                token,
                Claimed {
                    message,
                    queue: queue.to_owned(),
                    lease_until,
                },
            );
            deliveries.push(Delivery {
                seq,
                token,
                attempt,
                message: decoded,
            });
        }
        Ok(deliveries)
    }

    async fn release_claims(&self) -> Result<usize, QueueError> {
        // A restarted host's claims died with its connection: the server
        // redelivers them one ack wait after their last progress ack.
        Ok(0)
    }

    async fn settle(
        &self,
        batch: &[Delivery],
        outcomes: &[Result<(), ConnectorError>],
        policy: &RetryPolicy,
    ) -> Result<Vec<Option<FailOutcome>>, QueueError> {
        let settlements = batch.iter().zip(outcomes).map(|(delivery, outcome)| {
            let plan = Settlement::plan(delivery, outcome, policy);
            self.settle_one(delivery, plan)
        });
        futures_util::future::join_all(settlements)
            .await
            .into_iter()
            .collect()
    }

    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        Ok((self.scan_dead(queue, limit).await?)
            .into_iter()
            .map(|(letter, _)| letter)
            .collect())
    }

    async fn dead_letter_message(
        &self,
        seq: i64,
    ) -> Result<Option<(DeadLetter, Message)>, QueueError> {
        let Ok(seq) = u64::try_from(seq) else {
            return Ok(None);
        };
        match self.inner.dead.get_raw_message(seq).await {
            Ok(raw) => Ok(dead_letter(seq as i64, Some(&raw.headers), &raw.payload)),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(QueueError::new(format!("dead letter {seq}: {e}"))),
        }
    }

    async fn replay(&self, queue: Option<&str>, seq: Option<i64>) -> Result<usize, QueueError> {
        let letters = match seq {
            Some(seq) => self
                .dead_letter_message(seq)
                .await?
                .filter(|(letter, _)| queue.is_none_or(|q| q == letter.queue))
                .into_iter()
                .collect(),
            None => self.scan_dead(queue, usize::MAX).await?,
        };
        let mut replayed = 0;
        for (letter, message) in letters {
            self.consumer(&letter.queue).await?;
            let subject = self.inner.settings.queue_subject(&letter.queue);
            let (headers, payload) = names::to_nats(message);
            // Dedupe id: the dead letter, so a replay cut short and run
            // again stores it once.
            let id = format!("replay.{}", letter.seq);
            self.publish(subject, &id, headers, payload)
                .await?
                .await
                .map_err(|e| QueueError::new(format!("publish: {e}")))?;
            (self.inner.dead)
                .delete_message(letter.seq as u64)
                .await
                .map_err(|e| QueueError::new(format!("delete dead letter: {e}")))?;
            replayed += 1;
        }
        Ok(replayed)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let err = |e: &dyn std::fmt::Display| QueueError::new(format!("stats: {e}"));
        let mut consumer = self.consumer(queue).await?;
        let info = consumer.info().await.map_err(|e| err(&e))?.clone();
        let stream = (self.inner.context)
            .get_stream(self.inner.settings.queue_stream(queue))
            .await
            .map_err(|e| err(&e))?;
        let state = stream.get_info().await.map_err(|e| err(&e))?.state;
        let dead = self.dead_count(queue).await?;
        let in_flight = info.num_ack_pending as u64;
        let ready = info.num_pending;
        // Messages that left the stream (acked) and are not held as dead
        // letters: delivered, approximately (a replayed dead letter counts
        // once more).
        let done = state
            .last_sequence
            .saturating_sub(state.messages)
            .saturating_sub(dead);
        Ok(QueueStats {
            ready,
            in_flight,
            done,
            dead,
        })
    }

    async fn all_stats(&self) -> Result<Vec<(String, QueueStats)>, QueueError> {
        let prefix = self.inner.settings.stream("Q_");
        let mut names = self.inner.context.stream_names();
        let mut queues = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| QueueError::new(format!("streams: {e}")))?;
            if let Some(queue) = name.strip_prefix(&prefix).and_then(names::decode) {
                queues.push(queue);
            }
        }
        queues.sort();
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            let stats = self.stats(&queue).await?;
            out.push((queue, stats));
        }
        Ok(out)
    }

    async fn next_due_in(&self, _queue: &str) -> Result<Option<Duration>, QueueError> {
        // Claims long-poll the server: no sleep between them is needed.
        Ok(Some(Duration::ZERO))
    }
}

impl JetStreamQueue {
    async fn dead_count(&self, queue: &str) -> Result<u64, QueueError> {
        let subject = self.inner.settings.dead_subject(queue);
        let info = (self.inner.dead)
            .info_with_subjects(&subject)
            .await
            .map_err(|e| QueueError::new(format!("dead letters: {e}")))?;
        let mut total = 0;
        let mut subjects = info;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry.map_err(|e| QueueError::new(format!("dead letters: {e}")))?;
            if name == subject {
                total += count as u64;
            }
        }
        Ok(total)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
