//! What the flows report as records move: per stream of a webhook, a
//! pipeline batch or a sync, and each finished sync run.
//!
//! The operations layer (metrics, monitoring) implements [`FlowObserver`]
//! beside the sandbox's `Observer`. Observers are called synchronously on
//! the path that produced the event, so they must be cheap.

use crate::sync::RunReport;
use crate::trace::FlowSpan;
use std::sync::Arc;

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
    pub report: &'a RunReport,
}

/// Receives the flows' events. Every method has an empty default.
pub trait FlowObserver: Send + Sync + 'static {
    fn records(&self, _event: &RecordsEvent<'_>) {}
    fn sync_run(&self, _event: &SyncRunEvent<'_>) {}
    /// A finished span (see [`crate::trace`]).
    fn span(&self, _span: &FlowSpan) {}
}

/// The flow observers of one host, called in order. Cheap to clone.
/// Default: none.
#[derive(Clone, Default)]
pub struct FlowObservers(Arc<[Arc<dyn FlowObserver>]>);

impl std::fmt::Debug for FlowObservers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowObservers({})", self.0.len())
    }
}

impl FlowObservers {
    /// A set of observers, called in order.
    pub fn new(observers: Vec<Arc<dyn FlowObserver>>) -> Self {
        FlowObservers(observers.into())
    }
}

impl FlowObserver for FlowObservers {
    fn records(&self, event: &RecordsEvent<'_>) {
        self.0.iter().for_each(|o| o.records(event));
    }
    fn span(&self, span: &FlowSpan) {
        self.0.iter().for_each(|o| o.span(span));
    }
    fn sync_run(&self, event: &SyncRunEvent<'_>) {
        self.0.iter().for_each(|o| o.sync_run(event));
    }
}
