//! The flows: how records move through a Switchyard host. Webhooks in,
//! durable queue pipelines through transforms into sinks, and scheduled
//! batch syncs from sources, with retries, backoff, dead letters and
//! replay.
//!
//! Storage sits behind two small traits, so pipeline and sync code runs
//! unchanged on any backend:
//!
//! - [`queue::Queue`]: enqueue with delivery dedupe, claim with a lease,
//!   settle a batch, dead-letter, list and replay, counts;
//! - [`cursors::CursorStore`]: a committed cursor per sync stream and the
//!   reports of finished runs;
//! - [`leases::Leases`]: which host runs a sync, when several share the
//!   work.
//!
//! [`queue::SqliteQueue`] implements both on one SQLite file, the embedded
//! default. Flows call connectors through the sandbox
//! ([`switchyard_runtime::Runtime`]) and report what moved to
//! [`observe::FlowObserver`]s; they know no HTTP server and no metrics
//! backend.

mod batch;
pub mod cursors;
pub mod leases;
pub mod observe;
pub mod pipelines;
pub mod queue;
pub mod sync;
pub mod trace;
pub mod transform;
pub mod webhooks;

use switchyard_runtime::bindings;
