//! Stream, subject, bucket and key names, and how messages are encoded on
//! JetStream.

use crate::ClusterError;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchyard_runtime::bindings::Message;

/// What every stream and bucket is created with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub prefix: String,
    pub replicas: usize,
    pub memory: bool,
}

impl Settings {
    pub fn storage(&self) -> stream::StorageType {
        if self.memory {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        }
    }

    /// Stream and bucket names: the prefix upper-cased for streams.
    pub fn stream(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix.to_ascii_uppercase())
    }

    /// The work stream of `queue`.
    pub fn queue_stream(&self, queue: &str) -> String {
        self.stream(&format!("Q_{}", encode(queue)))
    }

    /// The subject messages of `queue` are published on.
    pub fn queue_subject(&self, queue: &str) -> String {
        format!("{}.q.{}", self.prefix, encode(queue))
    }

    pub fn dead_stream(&self) -> String {
        self.stream("DEAD")
    }

    /// The dead-letter subject of `queue`.
    pub fn dead_subject(&self, queue: &str) -> String {
        format!("{}.dead.{}", self.prefix, encode(queue))
    }

    /// A KV bucket's name.
    pub fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    /// Creates KV bucket `what`, or opens it as it is.
    pub async fn kv(
        &self,
        context: &jetstream::Context,
        what: &str,
        history: i64,
        max_age: Duration,
    ) -> Result<kv::Store, ClusterError> {
        self.kv_with(context, what, history, max_age, None).await
    }

    /// Creates KV bucket `what` holding one record per key within
    /// `limits`, or opens it with its limits brought up to date.
    pub async fn kv_limited(
        &self,
        context: &jetstream::Context,
        what: &str,
        limits: Limits,
    ) -> Result<kv::Store, ClusterError> {
        self.kv_with(context, what, 1, Duration::ZERO, Some(limits))
            .await
    }

    async fn kv_with(
        &self,
        context: &jetstream::Context,
        what: &str,
        history: i64,
        max_age: Duration,
        limits: Option<Limits>,
    ) -> Result<kv::Store, ClusterError> {
        let bucket = self.bucket(what);
        if let Ok(store) = context.get_key_value(&bucket).await {
            if let Some(limits) = limits {
                // A changed quota applies to the buckets already there.
                let mut stream = (context.get_stream(format!("KV_{bucket}")).await)
                    .map_err(|e| ClusterError::Setup(format!("bucket {bucket}: {e}")))?;
                let mut config = (stream.info().await)
                    .map_err(|e| ClusterError::Setup(format!("bucket {bucket}: {e}")))?
                    .config
                    .clone();
                if (config.max_messages, config.max_bytes)
                    != (limits.max_messages, limits.max_bytes)
                {
                    config.max_messages = limits.max_messages;
                    config.max_bytes = limits.max_bytes;
                    (context.update_stream(config).await)
                        .map_err(|e| ClusterError::Setup(format!("bucket {bucket}: {e}")))?;
                }
            }
            return Ok(store);
        }
        // The bucket's stream as the KV conventions (ADR-8) lay it out,
        // created directly: `create_key_value` first asks for account
        // info in a shape nats-server 2.9 does not answer.
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            max_age,
            storage: self.storage(),
            num_replicas: self.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            max_messages: limits.map_or(-1, |l| l.max_messages),
            max_bytes: limits.map_or(-1, |l| l.max_bytes),
            ..Default::default()
        };
        let created = context.get_or_create_stream(config).await;
        if let Err(e) = created {
            return Err(ClusterError::Setup(format!("bucket {bucket}: {e}")));
        }
        context
            .get_key_value(&bucket)
            .await
            .map_err(|e| ClusterError::Setup(format!("bucket {bucket}: {e}")))
    }
}

/// A bucket's size limits; a write past them is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_messages: i64,
    pub max_bytes: i64,
}

/// Encodes a name into the characters every NATS name allows
/// (`[A-Za-z0-9-]`, and `_XX` for any other byte), reversibly.
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`].
pub(crate) fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A message's fields but the payload, in the `Sy-Meta` header as JSON
/// (JSON escapes every control character, so no header can be forged).
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    id: String,
    stream: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    ts: u64,
}

pub(crate) const META: &str = "Sy-Meta";
pub(crate) const DEAD: &str = "Sy-Dead";
/// The W3C trace context of the request that queued a message.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// `message` as JetStream headers and payload.
pub(crate) fn to_nats(message: Message) -> (HeaderMap, bytes::Bytes) {
    let meta = Meta {
        id: message.id,
        stream: message.stream,
        key: message.key,
        headers: message.headers,
        ts: message.timestamp_ms,
    };
    let mut headers = HeaderMap::new();
    if let Some((_, tp)) = meta.headers.iter().find(|(k, _)| k == TRACEPARENT)
        && is_header_safe(tp)
    {
        headers.insert(TRACEPARENT, tp.as_str());
    }
    headers.insert(
        META,
        serde_json::to_string(&meta)
            .expect("metadata serializes")
            .as_str(),
    );
    (headers, message.payload.into())
}

fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The message in JetStream headers and payload; `None` when it is not
/// one of ours.
pub(crate) fn from_nats(headers: Option<&HeaderMap>, payload: &[u8]) -> Option<Message> {
    let meta: Meta = serde_json::from_str(headers?.get(META)?.as_str()).ok()?;
    Some(Message {
        id: meta.id,
        stream: meta.stream,
        key: meta.key,
        headers: meta.headers,
        payload: payload.to_vec(),
        timestamp_ms: meta.ts,
    })
}

/// A short digest for message ids and keys.
pub(crate) fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_use_only_safe_characters() {
        for name in ["pipeline:events", "hook:a.b", "sync.x_y", "ünï code", ""] {
            let e = encode(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(decode(&e).as_deref(), Some(name));
        }
        assert_ne!(encode("a:b"), encode("a.b"));
    }

    #[test]
    fn a_message_survives_the_trip_and_its_headers_cannot_forge_ours() {
        let message = Message {
            id: "1\r\nSy-Meta: x".into(),
            stream: "s".into(),
            key: Some("k".into()),
            headers: vec![("x".into(), "a\r\nb".into())],
            payload: b"\x00\xffbody".to_vec(),
            timestamp_ms: 7,
        };
        let (headers, payload) = to_nats(message.clone());
        assert!(!headers.get(META).unwrap().as_str().contains('\n'));
        let back = from_nats(Some(&headers), &payload).unwrap();
        assert_eq!(
            (
                back.id,
                back.stream,
                back.key,
                back.headers,
                back.payload,
                back.timestamp_ms
            ),
            (
                message.id,
                message.stream,
                message.key,
                message.headers,
                message.payload,
                message.timestamp_ms
            )
        );
        assert!(from_nats(None, b"x").is_none());
    }
}
