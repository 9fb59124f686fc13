//! Connection state on JetStream KV, so a connection sees the same keys
//! from every host of the cluster.
//!
//! Each connection has its own bucket (`<prefix>_state_<connection>`), so
//! the bucket's limits are the connection's quota, enforced by the server
//! for every host at once: at most `state_keys_per_connection` keys (the
//! stream's message limit, one message per key) and
//! `state_bytes_per_connection` bytes (NATS counts each record's subject
//! and headers as well as its value, so the byte quota binds a little
//! earlier than on SQLite). A write past either is refused, never
//! evicting an older key. Deletes leave no marker behind, so a deleted key
//! stops counting.
//!
//! Compare-and-swap compares values, as on SQLite: it reads the key's
//! value and revision, and writes only on that revision, reading again
//! when another host wrote in between.

use crate::ClusterError;
use crate::names::{Settings, decode, encode};
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use switchyard_broker::kv::{StateBackend, StateError, StateQuota};

/// How often a compare-and-swap re-reads after losing a race, at most.
const CAS_ROUNDS: usize = 16;
/// Keys longer than this once readably encoded are stored base64-encoded
/// (after `=`, which the readable encoding never starts with), so a
/// 1 KiB key still fits NATS's 4 KiB protocol line.
const READABLE_KEY_CHARS: usize = 1_024;

/// The connections' state buckets; one per connection, created on first
/// use.
#[derive(Debug)]
pub struct JetStreamState {
    context: jetstream::Context,
    settings: Settings,
    quota: StateQuota,
    buckets: Mutex<HashMap<String, (kv::Store, stream::Stream)>>,
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("cluster state: {e}"))
}

/// The key as a KV key: readable where it can be.
fn kv_key(key: &str) -> String {
    let readable = encode(key);
    if readable.len() <= READABLE_KEY_CHARS {
        return readable;
    }
    use base64::Engine;
    format!(
        "={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}

fn state_key(kv_key: &str) -> Option<String> {
    match kv_key.strip_prefix('=') {
        Some(b64) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => decode(kv_key),
    }
}

impl JetStreamState {
    pub(crate) fn new(context: jetstream::Context, settings: Settings, quota: StateQuota) -> Self {
        JetStreamState {
            context,
            settings,
            quota,
            buckets: Mutex::default(),
        }
    }

    /// The bucket of connection `ns` and its stream.
    async fn bucket(&self, ns: &str) -> Result<(kv::Store, stream::Stream), StateError> {
        if let Some(found) = self.buckets.lock().expect("not poisoned").get(ns) {
            return Ok(found.clone());
        }
        let what = format!("state_{}", encode(ns));
        let limits = crate::names::Limits {
            max_messages: self.quota.max_keys.try_into().unwrap_or(i64::MAX),
            max_bytes: self.quota.max_bytes.try_into().unwrap_or(i64::MAX),
        };
        let store = (self.settings)
            .kv_limited(&self.context, &what, limits)
            .await
            .map_err(|e| unavailable(ClusterError::to_string(&e)))?;
        let stream = (self.context)
            .get_stream(format!("KV_{}", self.settings.bucket(&what)))
            .await
            .map_err(unavailable)?;
        let found = (store, stream);
        (self.buckets.lock().expect("not poisoned")).insert(ns.to_owned(), found.clone());
        Ok(found)
    }

    /// The key's live value and its revision (0: no record at all); a
    /// deleted or purged key has no value.
    async fn read(store: &kv::Store, key: &str) -> Result<(Option<Vec<u8>>, u64), StateError> {
        match store.entry(key).await.map_err(unavailable)? {
            None => Ok((None, 0)),
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok((Some(entry.value.to_vec()), entry.revision))
            }
            Some(entry) => Ok((None, entry.revision)),
        }
    }

    /// Removes `key` if it is still at `revision`, leaving no marker:
    /// `false` when another write came first.
    async fn remove(
        store: &kv::Store,
        stream: &stream::Stream,
        key: &str,
        revision: u64,
    ) -> Result<bool, StateError> {
        match store.purge_expect_revision(key, Some(revision)).await {
            Ok(()) => {}
            Err(e) if e.to_string().contains("wrong last sequence") => return Ok(false),
            Err(e) => return Err(unavailable(e)),
        }
        // The purge left one marker record; drop it (and only it: a
        // newer write has a higher sequence) so the key stops counting
        // against the connection's key quota.
        if let (None, marker) = Self::read(store, key).await?
            && marker > 0
        {
            let subject = format!("$KV.{}.{key}", store.name);
            (stream.purge().filter(subject).sequence(marker + 1).await).map_err(unavailable)?;
        }
        Ok(true)
    }
}

/// A write refused by the bucket's limits is the quota speaking.
fn write_error(e: impl std::fmt::Display, quota: &StateQuota) -> StateError {
    let text = e.to_string();
    if text.contains("maximum messages") || text.contains("maximum bytes") {
        StateError::Full(format!(
            "this connection's state is full (at most {} keys and {} bytes; limits.state_keys_per_connection, limits.state_bytes_per_connection): {text}",
            quota.max_keys, quota.max_bytes
        ))
    } else {
        unavailable(text)
    }
}

#[async_trait::async_trait]
impl StateBackend for JetStreamState {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let (store, _) = self.bucket(ns).await?;
        Ok(Self::read(&store, &kv_key(key)).await?.0)
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        let (store, _) = self.bucket(ns).await?;
        (store.put(kv_key(key), value.to_vec().into()).await)
            .map(drop)
            .map_err(|e| write_error(e, &self.quota))
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StateError> {
        let (store, stream) = self.bucket(ns).await?;
        let key = kv_key(key);
        for _ in 0..CAS_ROUNDS {
            let (Some(_), revision) = Self::read(&store, &key).await? else {
                return Ok(false);
            };
            if Self::remove(&store, &stream, &key, revision).await? {
                return Ok(true);
            }
        }
        Err(unavailable(format!(
            "delete of a key written by other hosts {CAS_ROUNDS} times in a row"
        )))
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        let (store, stream) = self.bucket(ns).await?;
        let key = kv_key(key);
        for _ in 0..CAS_ROUNDS {
            let (current, revision) = Self::read(&store, &key).await?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            let swapped = match (current.is_some(), new) {
                (false, None) => return Ok(true),
                (true, None) => Self::remove(&store, &stream, &key, revision).await?,
                (_, Some(value)) => {
                    let written: Result<(), (bool, String)> = if revision == 0 {
                        (store.create(&key, value.to_vec().into()).await)
                            .map(drop)
                            .map_err(|e| {
                                (
                                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                                    e.to_string(),
                                )
                            })
                    } else {
                        (store.update(&key, value.to_vec().into(), revision).await)
                            .map(drop)
                            .map_err(|e| {
                                (
                                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                                    e.to_string(),
                                )
                            })
                    };
                    match written {
                        Ok(()) => true,
                        Err((true, _)) => false,
                        Err((false, e)) => return Err(write_error(e, &self.quota)),
                    }
                }
            };
            if swapped {
                return Ok(true);
            }
            // Another host wrote in between: compare again.
        }
        Ok(false)
    }

    async fn keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        let (store, _) = self.bucket(ns).await?;
        let mut names = store.keys().await.map_err(unavailable)?;
        let mut keys = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(unavailable)?;
            if let Some(key) = state_key(&name).filter(|k| k.starts_with(prefix)) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }
}
