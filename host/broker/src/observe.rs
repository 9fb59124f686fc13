//! What the broker reports as guests use it: outbound HTTP exchanges and
//! brokered capabilities (secrets, state writes, rate-limit waits).
//!
//! The sandbox's `Observer` extends [`BrokerObserver`] with invocations;
//! metrics, the audit trail and monitoring implement both. Observers are
//! called synchronously on the path that produced the event, so they must
//! be cheap: count, or hand the event to a background writer.
//!
//! Events borrow; an observer copies what it keeps. No event carries a
//! secret value or a message payload.

use std::sync::Arc;
use std::time::Duration;

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

/// Receives the broker's events. Every method has an empty default.
pub trait BrokerObserver: Send + Sync + 'static {
    fn egress(&self, _event: &EgressEvent<'_>) {}
    fn broker(&self, _event: &BrokerEvent<'_>) {}
}

/// Who is acting, for the brokered interfaces: the observers plus the
/// plugin, version, connection and invocation their events name. Default:
/// no observers, so reporting is a no-op.
#[derive(Clone, Default)]
pub struct ObserveCtx {
    observer: Option<Arc<dyn BrokerObserver>>,
    plugin: Arc<str>,
    version: Arc<str>,
    connection: Arc<str>,
    /// Set per invocation when the store is built.
    invocation: u64,
    /// Scrubs what the guest chose (a state key) before it is reported.
    redactor: Arc<crate::secrets::Redactor>,
}

impl ObserveCtx {
    /// The context of one connection of `plugin` at `version`.
    pub fn new(
        observer: Option<Arc<dyn BrokerObserver>>,
        plugin: Arc<str>,
        version: Arc<str>,
        connection: Arc<str>,
    ) -> Self {
        ObserveCtx {
            observer,
            plugin,
            version,
            connection,
            invocation: 0,
            redactor: Arc::default(),
        }
    }

    /// Reports guest-chosen names (state keys) through `redactor`.
    pub fn with_redactor(mut self, redactor: Arc<crate::secrets::Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// The same context for invocation `id`.
    pub fn for_invocation(&self, id: u64) -> Self {
        ObserveCtx {
            invocation: id,
            ..self.clone()
        }
    }

    /// Reports a brokered use (no-op without observers).
    pub(crate) fn broker(&self, use_: BrokerUse<'_>) {
        let Some(observer) = &self.observer else {
            return;
        };
        // A state key is the one free-form guest text an event carries:
        // secret names and buckets are reported only once they matched a
        // grant, so they are the operator's words.
        let clean;
        let use_ = match use_ {
            BrokerUse::StateWrite { key, op, applied } => {
                clean = self.redactor.redact(key);
                BrokerUse::StateWrite {
                    key: &clean,
                    op,
                    applied,
                }
            }
            other => other,
        };
        observer.broker(&BrokerEvent {
            plugin: &self.plugin,
            version: &self.version,
            connection: &self.connection,
            invocation: self.invocation,
            use_,
        });
    }
}

impl std::fmt::Debug for ObserveCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveCtx")
            .field("observed", &self.observer.is_some())
            .field("plugin", &self.plugin)
            .field("version", &self.version)
            .field("connection", &self.connection)
            .field("invocation", &self.invocation)
            .finish()
    }
}
