//! Prometheus metrics: an [`Observer`] that counts what the runtime does,
//! encoded in the OpenMetrics text format (`prometheus-client`).
//!
//! | metric | labels |
//! |---|---|
//! | `switchyard_invocations_total` | plugin, version, pattern, outcome (`ok` or the error kind) |
//! | `switchyard_invocation_errors_total` | kind |
//! | `switchyard_invocation_duration_seconds` (histogram) | plugin, pattern |
//! | `switchyard_deadline_kills_total` | plugin |
//! | `switchyard_egress_requests_total` | plugin, destination, status (`2xx`…`5xx`, `error`) |
//! | `switchyard_egress_bytes_total` | destination, direction (`out`, `in`) |
//! | `switchyard_egress_retries_total` | plugin, destination |
//! | `switchyard_rate_limit_waits_total`, `switchyard_rate_limit_wait_seconds_total`, `switchyard_rate_limit_refusals_total` | bucket |
//! | `switchyard_records_in_total`, `switchyard_records_out_total`, `switchyard_records_failed_total` | flow, name, stream |
//! | `switchyard_sync_runs_total` | sync, outcome (`ok`, `error`) |
//! | `switchyard_queue_depth`, `switchyard_dlq_size` (gauges, read at scrape) | queue |
//! | `switchyard_plugins_loaded` (gauge, read at scrape) | plugin, version |
//! | `switchyard_audit_records_dropped_total` (read at scrape) | |
//! | `switchyard_api_requests_total` | caller (key id, `public`, `admin`, `anonymous`), target (`action`, `sync`), name (connection or sync; `unknown` for names not configured), decision (`allowed`, `missing_key`, `unknown_key`, `out_of_scope`) |
//!
//! A destination the policy refused is counted as `refused`, so a guest
//! cannot mint label values. Per event the cost is a few short label
//! strings and an atomic add under a read lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use switchyard_broker::observe::{BrokerEvent, BrokerObserver, BrokerUse, EgressEvent};
use switchyard_flows::observe::{FlowObserver, RecordsEvent, SyncRunEvent};
use switchyard_flows::queue::{QueueError, QueueStats};
use switchyard_runtime::observe::{InvocationEvent, Observer};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    plugin: String,
    version: String,
    pattern: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginPattern {
    plugin: String,
    pattern: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    plugin: String,
    destination: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    destination: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginDestination {
    plugin: String,
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabels {
    bucket: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: &'static str,
    name: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    sync: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    caller: String,
    target: &'static str,
    name: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadedLabels {
    plugin: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OAuthLabels {
    connection: String,
    grant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenRequestLabels {
    connection: String,
    grant: String,
    kind: String,
    outcome: String,
}

type Counters<L> = Family<L, Counter>;

/// The runtime's metrics. Register it with
/// [`RuntimeBuilder::observer`](switchyard_runtime::RuntimeBuilder::observer); serve
/// [`Metrics::encode`] on `GET /metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    invocations: Counters<InvocationLabels>,
    errors: Counters<KindLabels>,
    latency: Family<PluginPattern, Histogram>,
    deadline_kills: Counters<PluginLabels>,
    egress: Counters<EgressLabels>,
    egress_bytes: Counters<BytesLabels>,
    retries: Counters<PluginDestination>,
    waits: Counters<BucketLabels>,
    wait_seconds: Family<BucketLabels, Counter<f64>>,
    refusals: Counters<BucketLabels>,
    records_in: Counters<FlowLabels>,
    records_out: Counters<FlowLabels>,
    records_failed: Counters<FlowLabels>,
    sync_runs: Counters<SyncLabels>,
    queue_depth: Family<QueueLabels, Gauge>,
    dlq_size: Family<QueueLabels, Gauge>,
    plugins: Family<LoadedLabels, Gauge>,
    api_requests: Counters<ApiLabels>,
    token_requests: Counters<TokenRequestLabels>,
    needs_reauthorization: Family<OAuthLabels, Gauge>,
    audit_dropped: Counter,
    /// The audit log's drop count already added to `audit_dropped`.
    audit_dropped_seen: std::sync::atomic::AtomicU64,
    /// One scrape at a time: gauges are rebuilt then encoded.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under `switchyard_`.
    pub fn new() -> Self {
        let latency = Family::<PluginPattern, Histogram>::new_with_constructor(|| {
            // 1 ms … ~33 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let mut m = Metrics {
            registry: Registry::with_prefix("switchyard"),
            invocations: Family::default(),
            errors: Family::default(),
            latency,
            deadline_kills: Family::default(),
            egress: Family::default(),
            egress_bytes: Family::default(),
            retries: Family::default(),
            waits: Family::default(),
            wait_seconds: Family::default(),
            refusals: Family::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            records_failed: Family::default(),
            sync_runs: Family::default(),
            queue_depth: Family::default(),
            dlq_size: Family::default(),
            plugins: Family::default(),
            api_requests: Family::default(),
            token_requests: Family::default(),
            needs_reauthorization: Family::default(),
            audit_dropped: Counter::default(),
            audit_dropped_seen: std::sync::atomic::AtomicU64::new(0),
            scrape: Mutex::new(()),
        };
        let r = &mut m.registry;
        r.register("invocations", "Finished invocations", m.invocations.clone());
        r.register(
            "invocation_errors",
            "Failed invocations by error kind",
            m.errors.clone(),
        );
        r.register(
            "invocation_duration_seconds",
            "Invocation wall-clock time",
            m.latency.clone(),
        );
        r.register(
            "deadline_kills",
            "Invocations stopped at their deadline",
            m.deadline_kills.clone(),
        );
        r.register(
            "egress_requests",
            "Outbound HTTP requests by status class",
            m.egress.clone(),
        );
        r.register(
            "egress_bytes",
            "Outbound HTTP body bytes",
            m.egress_bytes.clone(),
        );
        r.register(
            "egress_retries",
            "Outbound HTTP attempts beyond the first",
            m.retries.clone(),
        );
        r.register(
            "rate_limit_waits",
            "Waits for a rate-limit permit (refusals included)",
            m.waits.clone(),
        );
        r.register(
            "rate_limit_wait_seconds",
            "Time spent waiting for rate-limit permits",
            m.wait_seconds.clone(),
        );
        r.register(
            "rate_limit_refusals",
            "Permits not available within the wait bound",
            m.refusals.clone(),
        );
        r.register(
            "records_in",
            "Records received from sources and senders",
            m.records_in.clone(),
        );
        r.register(
            "records_out",
            "Records acknowledged by sinks",
            m.records_out.clone(),
        );
        r.register(
            "records_failed",
            "Records dead-lettered",
            m.records_failed.clone(),
        );
        r.register("sync_runs", "Finished sync runs", m.sync_runs.clone());
        r.register(
            "queue_depth",
            "Messages waiting or in flight",
            m.queue_depth.clone(),
        );
        r.register("dlq_size", "Dead letters", m.dlq_size.clone());
        r.register(
            "api_requests",
            "Action calls and sync runs through the HTTP API, by caller key id and access decision",
            m.api_requests.clone(),
        );
        r.register(
            "audit_records_dropped",
            "Audit records dropped because the writer fell behind",
            m.audit_dropped.clone(),
        );
        r.register(
            "plugins_loaded",
            "Plugins loaded, by version",
            m.plugins.clone(),
        );
        r.register(
            "oauth_token_requests",
            "Requests to OAuth token endpoints, by grant type sent and outcome (ok, dead, failed)",
            m.token_requests.clone(),
        );
        r.register(
            "oauth_needs_reauthorization",
            "1 while an OAuth grant needs an operator to connect the account again",
            m.needs_reauthorization.clone(),
        );
        m
    }

    /// Counts one token endpoint request of `connection`'s `grant`.
    pub fn oauth_token_request(&self, connection: &str, grant: &str, kind: &str, outcome: &str) {
        let labels = TokenRequestLabels {
            connection: connection.to_owned(),
            grant: grant.to_owned(),
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.token_requests.get_or_create(&labels).inc();
    }

    /// Sets whether `connection`'s `grant` needs re-authorisation.
    pub fn oauth_needs_reauthorization(&self, connection: &str, grant: &str, needs: bool) {
        let labels = OAuthLabels {
            connection: connection.to_owned(),
            grant: grant.to_owned(),
        };
        self.needs_reauthorization
            .get_or_create(&labels)
            .set(i64::from(needs));
    }

    /// Counts one access decision of the HTTP API: `caller` is a key id,
    /// `public`, `admin` or `anonymous`; `target` is `action` or `sync`;
    /// `name` the connection or sync, which the caller must pass as
    /// `unknown` when no such one exists (labels stay bounded by the
    /// config, whatever a stranger asks for); `decision` is `allowed` or
    /// the refusal's kind.
    pub fn api_request(
        &self,
        caller: &str,
        target: &'static str,
        name: &str,
        decision: &'static str,
    ) {
        let labels = ApiLabels {
            caller: caller.to_owned(),
            target,
            name: name.to_owned(),
            decision,
        };
        self.api_requests.get_or_create(&labels).inc();
    }

    /// Brings `switchyard_audit_records_dropped_total` up to `total`, the
    /// audit log's own count ([`AuditLog::dropped`](crate::audit::AuditLog::dropped)); call before
    /// [`encode`](Self::encode).
    pub fn observe_audit_drops(&self, total: u64) {
        let seen = self
            .audit_dropped_seen
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        if total > seen {
            self.audit_dropped.inc_by(total - seen);
        }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]),
    /// after setting the gauges: `plugins` as (name, version) and, when
    /// there is a queue, its depth and dead letters per queue as read by
    /// [`Queue::all_stats`](switchyard_flows::queue::Queue::all_stats).
    pub fn encode<'a>(
        &self,
        plugins: impl IntoIterator<Item = (&'a str, &'a str)>,
        queue_stats: Option<Result<Vec<(String, QueueStats)>, QueueError>>,
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.plugins.clear();
        for (plugin, version) in plugins {
            let labels = LoadedLabels {
                plugin: plugin.to_owned(),
                version: version.to_owned(),
            };
            self.plugins.get_or_create(&labels).set(1);
        }
        if let Some(stats) = queue_stats {
            match stats {
                Ok(all) => {
                    self.queue_depth.clear();
                    self.dlq_size.clear();
                    for (name, stats) in all {
                        let labels = QueueLabels { queue: name };
                        let depth = stats.ready + stats.in_flight;
                        self.queue_depth.get_or_create(&labels).set(depth as i64);
                        self.dlq_size.get_or_create(&labels).set(stats.dead as i64);
                    }
                }
                Err(e) => tracing::warn!("metrics: queue gauges not refreshed: {e}"),
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    }
}

impl Observer for Metrics {
    fn invocation(&self, e: &InvocationEvent<'_>) {
        let outcome = e.error.map_or("ok", |err| err.kind());
        let labels = InvocationLabels {
            plugin: e.plugin.to_owned(),
            version: e.version.to_owned(),
            pattern: e.pattern,
            outcome,
        };
        self.invocations.get_or_create(&labels).inc();
        let labels = PluginPattern {
            plugin: labels.plugin,
            pattern: e.pattern,
        };
        self.latency
            .get_or_create(&labels)
            .observe(e.elapsed.as_secs_f64());
        if let Some(err) = e.error {
            self.errors
                .get_or_create(&KindLabels { kind: outcome })
                .inc();
            if matches!(err, switchyard_runtime::InvokeError::Timeout { .. }) {
                let labels = PluginLabels {
                    plugin: labels.plugin,
                };
                self.deadline_kills.get_or_create(&labels).inc();
            }
        }
    }
}

impl BrokerObserver for Metrics {
    fn egress(&self, e: &EgressEvent<'_>) {
        let destination = if e.granted { e.destination } else { "refused" };
        let labels = EgressLabels {
            plugin: e.plugin.to_owned(),
            destination: destination.to_owned(),
            status: status_class(e.status),
        };
        self.egress.get_or_create(&labels).inc();
        for (direction, bytes) in [("out", e.bytes_out), ("in", e.bytes_in)] {
            if bytes > 0 {
                let labels = BytesLabels {
                    destination: labels.destination.clone(),
                    direction,
                };
                self.egress_bytes.get_or_create(&labels).inc_by(bytes);
            }
        }
        if e.attempts > 1 {
            let labels = PluginDestination {
                plugin: labels.plugin,
                destination: labels.destination,
            };
            self.retries
                .get_or_create(&labels)
                .inc_by(u64::from(e.attempts - 1));
        }
    }
    fn broker(&self, e: &BrokerEvent<'_>) {
        if let BrokerUse::RateLimitWait {
            bucket,
            waited,
            refused,
        } = &e.use_
        {
            let labels = BucketLabels {
                bucket: (*bucket).to_owned(),
            };
            self.waits.get_or_create(&labels).inc();
            self.wait_seconds
                .get_or_create(&labels)
                .inc_by(waited.as_secs_f64());
            if *refused {
                self.refusals.get_or_create(&labels).inc();
            }
        }
    }
}

impl FlowObserver for Metrics {
    fn records(&self, e: &RecordsEvent<'_>) {
        let labels = FlowLabels {
            flow: e.flow,
            name: e.name.to_owned(),
            stream: e.stream.to_owned(),
        };
        for (family, n) in [
            (&self.records_in, e.records_in),
            (&self.records_out, e.records_out),
            (&self.records_failed, e.failed),
        ] {
            if n > 0 {
                family.get_or_create(&labels).inc_by(n);
            }
        }
    }
    fn sync_run(&self, e: &SyncRunEvent<'_>) {
        let labels = SyncLabels {
            sync: e.report.sync.clone(),
            outcome: if e.report.error.is_none() {
                "ok"
            } else {
                "error"
            },
        };
        self.sync_runs.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
