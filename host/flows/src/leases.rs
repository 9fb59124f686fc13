//! Who runs a sync: a lease per sync, so that when several hosts share the
//! work each run happens on exactly one of them, and another host takes a
//! sync over once the holder stops renewing (it died).
//!
//! Backends: [`LocalLeases`], the embedded default, grants every lease: a
//! host on SQLite owns its data dir alone (`switchyard.lock`), and runs of
//! one sync on it never overlap anyway. The cluster backend keeps leases in
//! a key-value store with compare-and-swap.

use crate::queue::QueueError;
use std::time::Duration;

/// A held lease: what renewing and releasing it compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name (`sync.NAME`).
    pub name: String,
    /// The backend's version of the record this holder wrote last.
    pub revision: u64,
}

/// Named, expiring, exclusive leases.
#[async_trait::async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug + 'static {
    /// Takes lease `name` for `ttl` if nobody else holds it (or the
    /// holder let it run out); `None` while another holder has it.
    async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, QueueError>;

    /// Extends a held lease by `ttl` from now; `false` when it was lost
    /// (it ran out and another holder took it).
    async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, QueueError>;

    /// Gives a held lease up, so another holder need not wait for it to
    /// run out. A lease already lost is left alone.
    async fn release(&self, lease: &Lease) -> Result<(), QueueError>;
}

/// The embedded default: every lease is granted at once (one host).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLeases;

#[async_trait::async_trait]
impl Leases for LocalLeases {
    async fn acquire(&self, name: &str, _ttl: Duration) -> Result<Option<Lease>, QueueError> {
        Ok(Some(Lease {
            name: name.to_owned(),
            revision: 0,
        }))
    }

    async fn renew(&self, _lease: &mut Lease, _ttl: Duration) -> Result<bool, QueueError> {
        Ok(true)
    }

    async fn release(&self, _lease: &Lease) -> Result<(), QueueError> {
        Ok(())
    }
}
