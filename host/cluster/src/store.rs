//! Sync cursors, run reports and leases in JetStream KV buckets.
//!
//! Cursors advance by compare-and-swap: a commit names the revision this
//! host read (or wrote) last, so a host that lost a sync to another never
//! moves its cursor back. Leases are records `{holder, expires_ms}`
//! replaced by compare-and-swap; an expired one may be taken by anyone.
//! Expiry is by the hosts' wall clocks, which must agree to well within
//! the lease's time to live (NTP does).

use crate::ClusterError;
use crate::names::{Settings, encode};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_flows::cursors::CursorStore;
use switchyard_flows::leases::{Lease, Leases};
use switchyard_flows::queue::QueueError;

fn kv_error(what: &str) -> impl Fn(&dyn std::fmt::Display) -> QueueError + '_ {
    move |e| QueueError::new(format!("{what}: {e}"))
}

/// Sync cursors and run reports on JetStream KV; cheap to clone.
#[derive(Debug, Clone)]
pub struct JetStreamCursors {
    cursors: kv::Store,
    runs: kv::Store,
    runs_stream: jetstream::stream::Stream,
    /// The revision of each cursor key this host read or wrote last: what
    /// its next commit compares against (0: absent).
    revisions: Arc<Mutex<HashMap<String, u64>>>,
}

impl JetStreamCursors {
    pub(crate) async fn new(
        context: &jetstream::Context,
        settings: &Settings,
    ) -> Result<Self, ClusterError> {
        let cursors = settings.kv(context, "cursors", 1, Duration::ZERO).await?;
        // Run reports are history: a month of it.
        let runs = settings
            .kv(context, "runs", 1, Duration::from_secs(30 * 86_400))
            .await?;
        let runs_stream = context
            .get_stream(format!("KV_{}", settings.bucket("runs")))
            .await
            .map_err(|e| ClusterError::Setup(format!("run reports: {e}")))?;
        Ok(JetStreamCursors {
            cursors,
            runs,
            runs_stream,
            revisions: Default::default(),
        })
    }

    fn key(sync: &str, stream: &str) -> String {
        format!("{}.{}", encode(sync), encode(stream))
    }
}

#[async_trait::async_trait]
impl CursorStore for JetStreamCursors {
    async fn cursor(&self, sync: &str, stream: &str) -> Result<Option<String>, QueueError> {
        let key = Self::key(sync, stream);
        let entry = (self.cursors.entry(&key).await).map_err(|e| kv_error("cursor")(&e))?;
        let (revision, value) = match entry {
            Some(e) if e.operation == kv::Operation::Put => (
                e.revision,
                Some(String::from_utf8_lossy(&e.value).into_owned()),
            ),
            _ => (0, None),
        };
        self.revisions.lock().unwrap().insert(key, revision);
        Ok(value)
    }

    async fn commit_cursor(
        &self,
        sync: &str,
        stream: &str,
        cursor: &str,
    ) -> Result<(), QueueError> {
        let key = Self::key(sync, stream);
        let expected = self.revisions.lock().unwrap().get(&key).copied();
        let value = cursor.as_bytes().to_vec().into();
        let written = match expected {
            Some(0) | None => self
                .cursors
                .create(&key, value)
                .await
                .map_err(|e| e.to_string()),
            Some(revision) => {
                (self.cursors.update(&key, value, revision).await).map_err(|e| e.to_string())
            }
        };
        match written {
            Ok(revision) => {
                self.revisions.lock().unwrap().insert(key, revision);
                Ok(())
            }
            Err(e) => Err(QueueError::new(format!(
                "cursor of sync `{sync}` stream `{stream}` was moved by another host since this run read it ({e}); this run stops, the host that holds the sync goes on"
            ))),
        }
    }

    async fn reset_cursor(&self, sync: &str, stream: &str) -> Result<(), QueueError> {
        let key = Self::key(sync, stream);
        (self.cursors.delete(&key).await).map_err(|e| kv_error("cursor")(&e))?;
        self.revisions.lock().unwrap().remove(&key);
        Ok(())
    }

    async fn record_run(
        &self,
        sync: &str,
        started_at_ms: u64,
        report: &str,
    ) -> Result<(), QueueError> {
        let key = format!("{}.{started_at_ms:015}", encode(sync));
        (self.runs.put(&key, report.as_bytes().to_vec().into()).await)
            .map_err(|e| kv_error("run report")(&e))?;
        Ok(())
    }

    async fn runs(&self, sync: &str, limit: usize) -> Result<Vec<String>, QueueError> {
        let err = kv_error("run reports");
        let prefix = format!("$KV.{}.{}.", self.runs.name, encode(sync));
        let mut subjects = (self
            .runs_stream
            .info_with_subjects(format!("{prefix}*"))
            .await)
            .map_err(|e| err(&e))?;
        let mut keys = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(|e| err(&e))?;
            if let Some(key) = subject.strip_prefix("$KV.").and_then(|s| s.split_once('.')) {
                keys.push(key.1.to_owned());
            }
        }
        // Zero-padded start times: newest last in key order.
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= limit {
                break;
            }
            if let Some(value) = self.runs.get(&key).await.map_err(|e| err(&e))? {
                out.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(out)
    }
}

/// A lease's record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) holder: String,
    pub(crate) expires_ms: i64,
}

/// Sync leases on JetStream KV; cheap to clone.
#[derive(Debug, Clone)]
pub struct JetStreamLeases {
    store: kv::Store,
    host_id: String,
}

impl JetStreamLeases {
    pub(crate) async fn new(
        context: &jetstream::Context,
        settings: &Settings,
        host_id: String,
    ) -> Result<Self, ClusterError> {
        let store = settings.kv(context, "leases", 1, Duration::ZERO).await?;
        Ok(JetStreamLeases { store, host_id })
    }

    /// This host's name in the leases it holds.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Who holds lease `name` now, if anyone.
    pub async fn holder(&self, name: &str) -> Result<Option<String>, QueueError> {
        let entry = (self.store.entry(encode(name)).await).map_err(|e| kv_error("lease")(&e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<Held>(&e.value).ok())
            .filter(|h| h.expires_ms > now_ms())
            .map(|h| h.holder))
    }

    fn record(&self, ttl: Duration) -> bytes::Bytes {
        let held = Held {
            holder: self.host_id.clone(),
            expires_ms: now_ms() + ttl.as_millis() as i64,
        };
        serde_json::to_vec(&held).expect("serializes").into()
    }
}

#[async_trait::async_trait]
impl Leases for JetStreamLeases {
    async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, QueueError> {
        let key = encode(name);
        let err = kv_error("lease");
        for _ in 0..3 {
            let entry = self.store.entry(&key).await.map_err(|e| err(&e))?;
            let held = (entry.as_ref())
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<Held>(&e.value).ok());
            if held.is_some_and(|h| h.expires_ms > now_ms() && h.holder != self.host_id) {
                return Ok(None);
            }
            let written = match &entry {
                None => self
                    .store
                    .create(&key, self.record(ttl))
                    .await
                    .map_err(|e| e.to_string()),
                Some(e) => (self.store.update(&key, self.record(ttl), e.revision).await)
                    .map_err(|e| e.to_string()),
            };
            if let Ok(revision) = written {
                return Ok(Some(Lease {
                    name: name.to_owned(),
                    revision,
                }));
            }
            // Another host wrote it in between: read again.
        }
        Ok(None)
    }

    async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, QueueError> {
        match (self.store)
            .update(encode(&lease.name), self.record(ttl), lease.revision)
            .await
        {
            Ok(revision) => {
                lease.revision = revision;
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(kv_error("lease")(&e)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let expired = serde_json::to_vec(&Held {
            holder: self.host_id.clone(),
            expires_ms: 0,
        })
        .expect("serializes");
        match (self.store)
            .update(encode(&lease.name), expired.into(), lease.revision)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(kv_error("lease")(&e)),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
