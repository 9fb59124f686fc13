//! Observation points: what the runtime reports as it works.
//!
//! Metrics, the audit trail and monitoring are [`Observer`]s registered on
//! the [`RuntimeBuilder`](crate::RuntimeBuilder). The runtime calls them
//! synchronously on the path that produced the event, so an observer must
//! be cheap: count, or hand the event to a background writer.
//!
//! Events borrow; an observer copies what it keeps. No event carries a
//! secret value or a message payload.

use crate::error::InvokeError;
use std::sync::Arc;
use std::time::Duration;

/// One finished invocation of a connector export.
#[derive(Debug)]
pub struct InvocationEvent<'a> {
    pub plugin: &'a str,
    /// The plugin version that ran the call.
    pub version: &'a str,
    pub connection: &'a str,
    /// `action`, `webhook`, `transform`, `read`, `write` or `describe`.
    pub pattern: &'static str,
    /// The action name, for `action` calls.
    pub action: Option<&'a str>,
    pub invocation: u64,
    pub elapsed: Duration,
    /// `None` on success.
    pub error: Option<&'a InvokeError>,
}

/// One outbound HTTP exchange (or refusal) through the egress path.
#[derive(Debug)]
pub struct EgressEvent<'a> {
    pub plugin: &'a str,
    /// The plugin version that sent it.
    pub version: &'a str,
    pub connection: &'a str,
    pub invocation: u64,
    pub method: &'a str,
    /// `scheme://host:port`, never a path or query (they may carry data).
    pub destination: &'a str,
    /// Whether the destination passed the connection's policy (a refused
    /// URL's destination is the guest's choice, not the operator's).
    pub granted: bool,
    /// The upstream's status (or the host's synthesized 429); `None` when
    /// the request was refused or failed before an answer.
    pub status: Option<u16>,
    /// Why the request was refused or failed, when it was.
    pub error: Option<&'a str>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Attempts made, retries included.
    pub attempts: u32,
    pub elapsed: Duration,
}

/// A brokered capability used by a guest.
#[derive(Debug)]
pub struct BrokerEvent<'a> {
    pub plugin: &'a str,
    /// The plugin version that used it.
    pub version: &'a str,
    pub connection: &'a str,
    pub invocation: u64,
    pub use_: BrokerUse<'a>,
}

/// What a [`BrokerEvent`] used.
#[derive(Debug)]
pub enum BrokerUse<'a> {
    /// A secret by name: substituted into a request, or used to sign or
    /// verify. `purpose` says which (`http-header`, `http-body`, `sign`,
    /// `verify`).
    Secret {
        name: &'a str,
        purpose: &'a str,
        /// Where it was sent, for HTTP substitutions.
        destination: Option<&'a str>,
    },
    /// A state write: `op` is `set`, `delete` or `compare-and-swap`.
    StateWrite {
        key: &'a str,
        op: &'static str,
        /// Whether the write took effect (a failed CAS did not).
        applied: bool,
    },
    /// A wait on a rate-limit bucket (egress pacing or an explicit
    /// `acquire`), reported only when the caller had to wait or was refused.
    RateLimitWait {
        bucket: &'a str,
        waited: Duration,
        /// Whether the wait ended in a refusal.
        refused: bool,
    },
}

/// Records that moved through a flow: a webhook, a pipeline or a sync.
#[derive(Debug)]
pub struct RecordsEvent<'a> {
    /// `webhook`, `pipeline` or `sync`.
    pub flow: &'static str,
    /// The webhook, pipeline or sync name.
    pub name: &'a str,
    pub stream: &'a str,
    /// Records received from the source (or the sender).
    pub records_in: u64,
    /// Records the sink acknowledged.
    pub records_out: u64,
    /// Records refused for good (dead-lettered).
    pub failed: u64,
}

/// One finished sync run.
#[derive(Debug)]
pub struct SyncRunEvent<'a> {
    pub report: &'a crate::sync::RunReport,
}

/// Receives runtime events. Every method has an empty default.
pub trait Observer: Send + Sync + 'static {
    fn invocation(&self, _event: &InvocationEvent<'_>) {}
    fn egress(&self, _event: &EgressEvent<'_>) {}
    fn broker(&self, _event: &BrokerEvent<'_>) {}
    fn records(&self, _event: &RecordsEvent<'_>) {}
    fn sync_run(&self, _event: &SyncRunEvent<'_>) {}
}

/// The observers of one runtime. Cheap to clone.
#[derive(Clone, Default)]
pub struct Observers(Arc<[Arc<dyn Observer>]>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Observers {
    /// A set of observers, called in order.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        Observers(observers.into())
    }

    /// Whether none are registered (events need not be built).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Observer for Observers {
    fn invocation(&self, event: &InvocationEvent<'_>) {
        self.0.iter().for_each(|o| o.invocation(event));
    }
    fn egress(&self, event: &EgressEvent<'_>) {
        self.0.iter().for_each(|o| o.egress(event));
    }
    fn broker(&self, event: &BrokerEvent<'_>) {
        self.0.iter().for_each(|o| o.broker(event));
    }
    fn records(&self, event: &RecordsEvent<'_>) {
        self.0.iter().for_each(|o| o.records(event));
    }
    fn sync_run(&self, event: &SyncRunEvent<'_>) {
        self.0.iter().for_each(|o| o.sync_run(event));
    }
}

/// Who is acting, for the brokered interfaces: the observers plus the
/// plugin, version, connection and invocation their events name. Default:
/// no observers, so reporting is a no-op.
#[derive(Debug, Clone, Default)]
pub struct ObserveCtx {
    pub(crate) observers: Observers,
    pub(crate) plugin: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) connection: Arc<str>,
    /// Set per invocation when the store is built.
    pub(crate) invocation: u64,
}

impl ObserveCtx {
    /// The context of one connection of `plugin` at `version`.
    pub fn new(
        observers: Observers,
        plugin: Arc<str>,
        version: Arc<str>,
        connection: Arc<str>,
    ) -> Self {
        ObserveCtx {
            observers,
            plugin,
            version,
            connection,
            invocation: 0,
        }
    }

    /// The same context for invocation `id`.
    pub(crate) fn for_invocation(&self, id: u64) -> Self {
        ObserveCtx {
            invocation: id,
            ..self.clone()
        }
    }

    /// Reports a brokered use (no-op without observers).
    pub(crate) fn broker(&self, use_: BrokerUse<'_>) {
        if self.observers.is_empty() {
            return;
        }
        self.observers.broker(&BrokerEvent {
            plugin: &self.plugin,
            version: &self.version,
            connection: &self.connection,
            invocation: self.invocation,
            use_,
        });
    }
}
