//! Operations: what an operator watches. Each backend is an observer of
//! the layers below, registered by the host that assembles them:
//!
//! | backend | observes | keeps |
//! |---|---|---|
//! | [`metrics::Metrics`] | invocations, egress, brokered uses, records, sync runs | Prometheus counters, histograms and gauges |
//! | [`audit::AuditLog`] | egress and brokered uses (secrets, state writes) | `<data_dir>/audit.sqlite` |
//! | [`monitor::Monitor`] | invocations, records, sync runs | volume and latency baselines, alerts in `<data_dir>/monitor.sqlite` |
//!
//! The sandbox's `Observer` (with the broker's `BrokerObserver`) and the
//! flows' `FlowObserver` are the only seams: nothing below this crate
//! knows these backends exist.

pub mod audit;
pub mod metrics;
pub mod monitor;
pub mod otlp;
