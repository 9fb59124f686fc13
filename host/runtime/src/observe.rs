//! Observation points: what the sandbox reports as it works.
//!
//! An [`Observer`] sees every finished invocation and, through its
//! supertrait [`BrokerObserver`], every brokered use and egress exchange.
//! Metrics, the audit trail and monitoring (the operations layer) are
//! observers registered on the [`RuntimeBuilder`](crate::RuntimeBuilder). The runtime calls them
//! synchronously on the path that produced the event, so an observer must
//! be cheap: count, or hand the event to a background writer.
//!
//! Events borrow; an observer copies what it keeps. No event carries a
//! secret value or a message payload.

use crate::error::InvokeError;
use std::sync::Arc;
use std::time::Duration;
pub use switchyard_broker::observe::{
    BrokerEvent, BrokerObserver, BrokerUse, EgressEvent, ObserveCtx,
};

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
    /// Who asked for the call, when the embedder said
    /// ([`Runtime::call_action_as`](crate::Runtime::call_action_as)): the
    /// server passes the caller's key id.
    pub caller: Option<&'a str>,
    pub invocation: u64,
    pub elapsed: Duration,
    /// `None` on success.
    pub error: Option<&'a InvokeError>,
}

/// Receives the sandbox's events: invocations here, egress and brokered
/// uses through [`BrokerObserver`]. Every method has an empty default.
pub trait Observer: BrokerObserver {
    fn invocation(&self, _event: &InvocationEvent<'_>) {}
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

    /// These observers as the broker's, or `None` when there are none (so
    /// the broker builds no events).
    pub fn for_broker(&self) -> Option<Arc<dyn BrokerObserver>> {
        (!self.is_empty()).then(|| Arc::new(self.clone()) as Arc<dyn BrokerObserver>)
    }
}

impl Observer for Observers {
    fn invocation(&self, event: &InvocationEvent<'_>) {
        self.0.iter().for_each(|o| o.invocation(event));
    }
}

impl BrokerObserver for Observers {
    fn egress(&self, event: &EgressEvent<'_>) {
        self.0.iter().for_each(|o| o.egress(event));
    }
    fn broker(&self, event: &BrokerEvent<'_>) {
        self.0.iter().for_each(|o| o.broker(event));
    }
}
