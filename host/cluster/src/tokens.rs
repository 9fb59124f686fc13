//! OAuth token records shared by every host, in JetStream KV: sealed bytes
//! replaced by compare-and-swap on the KV revision, and a lock record per
//! grant (`{holder, expires_ms}`, as the sync leases) so one host at a time
//! refreshes a grant, and pending connect flows in a bucket whose entries
//! expire with the flow, so any host can finish a flow another started.
//! Hosts must share the `[oauth] key` that seals them.

use crate::ClusterError;
use crate::names::{Settings, encode};
use crate::store::{Held, now_ms};
use async_nats::jetstream::{self, kv};
use std::time::Duration;
use switchyard_oauth::connect::FLOW_LIFETIME;
use switchyard_oauth::store::{StoreError, TokenStore, Versioned};

/// Token records, refresh locks and pending connect flows on JetStream KV;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct JetStreamTokens {
    records: kv::Store,
    locks: kv::Store,
    flows: kv::Store,
}

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError(format!("{what}: {e}"))
}

impl JetStreamTokens {
    pub(crate) async fn new(
        context: &jetstream::Context,
        settings: &Settings,
    ) -> Result<Self, ClusterError> {
        Ok(JetStreamTokens {
            records: settings
                .kv(context, "oauth-tokens", 1, Duration::ZERO)
                .await?,
            locks: settings
                .kv(context, "oauth-locks", 1, Duration::ZERO)
                .await?,
            // The bucket's age limit is the flows' lifetime: the server
            // drops a flow nobody finished.
            flows: settings
                .kv(context, "oauth-flows", 1, FLOW_LIFETIME)
                .await?,
        })
    }
}

#[async_trait::async_trait]
impl TokenStore for JetStreamTokens {
    async fn load(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let entry = (self.records.entry(encode(key)).await).map_err(|e| failed("load")(&e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Versioned {
                sealed: e.value.to_vec(),
                revision: e.revision,
            }))
    }

    async fn save(
        &self,
        key: &str,
        sealed: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let value = bytes::Bytes::copy_from_slice(sealed);
        let written = match expected {
            None => match self.records.create(encode(key), value).await {
                Ok(revision) => Ok(revision),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Some(revision) => match self.records.update(encode(key), value, revision).await {
                Ok(revision) => Ok(revision),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(None),
                Err(e) => Err(e.to_string()),
            },
        };
        written
            .map(Some)
            .map_err(|e| StoreError(format!("save: {e}")))
    }

    async fn lock(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let name = encode(key);
        let record = || {
            let held = Held {
                holder: holder.to_owned(),
                expires_ms: now_ms() + ttl.as_millis() as i64,
            };
            bytes::Bytes::from(serde_json::to_vec(&held).expect("a lock serializes"))
        };
        for _ in 0..3 {
            let entry = (self.locks.entry(&name).await).map_err(|e| failed("lock")(&e))?;
            let held = (entry.as_ref())
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<Held>(&e.value).ok());
            if held.is_some_and(|h| h.expires_ms > now_ms() && h.holder != holder) {
                return Ok(false);
            }
            let written = match &entry {
                None => self.locks.create(&name, record()).await.is_ok(),
                Some(e) => self.locks.update(&name, record(), e.revision).await.is_ok(),
            };
            if written {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let name = encode(key);
        let entry = (self.locks.entry(&name).await).map_err(|e| failed("unlock")(&e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(());
        };
        let mine = serde_json::from_slice::<Held>(&entry.value).is_ok_and(|h| h.holder == holder);
        if mine {
            // Only if nobody took it over in between.
            let _ = self
                .locks
                .delete_expect_revision(&name, Some(entry.revision))
                .await;
        }
        Ok(())
    }

    /// Every flow lives [`FLOW_LIFETIME`] (the bucket's age limit), so
    /// `ttl` is not needed here beyond it.
    async fn put_flow(&self, id: &str, sealed: &[u8], ttl: Duration) -> Result<(), StoreError> {
        debug_assert!(ttl <= FLOW_LIFETIME);
        let value = bytes::Bytes::copy_from_slice(sealed);
        (self.flows.put(encode(id), value).await).map_err(|e| failed("put flow")(&e))?;
        Ok(())
    }

    async fn take_flow(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = encode(id);
        let entry = (self.flows.entry(&name).await).map_err(|e| failed("take flow")(&e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        // Only the caller whose purge names the revision it read gets the
        // flow: two callbacks with one `state` cannot both use it.
        match self
            .flows
            .purge_expect_revision(&name, Some(entry.revision))
            .await
        {
            Ok(()) => Ok(Some(entry.value.to_vec())),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(failed("take flow")(&e)),
        }
    }
}
