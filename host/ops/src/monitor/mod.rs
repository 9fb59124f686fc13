//! Monitoring that catches silent failures: volume baselines per flow,
//! latency trends per plugin call, reconciliation of sync runs, and
//! alerts (log, `<data_dir>/monitor.sqlite`, signed webhook).
//!
//! The [`Monitor`] is an [`Observer`]: invocations feed latency windows
//! and the status series, records feed webhook and pipeline volume
//! windows, and each finished sync run is checked at once. Window ends are
//! evaluated by a background ticker ([`Monitor::start`]), alert webhooks
//! are delivered by background tasks. The observed path only counts in
//! memory, except for a finished sync run (a few rows written at once)
//! and a raised alert (one row, then handed to the delivery task).
//!
//! Volume of **syncs** is per run and stream (records read). Incremental
//! syncs read only what changed, so few records once caught up is normal:
//! their runs are checked only with `[syncs.NAME] volume_alerts = true`;
//! full-refresh syncs are checked by default. Runs that ended in an error
//! are neither checked nor recorded (the error is the signal). Volume of
//! **webhooks and pipelines** is records received per `window_secs`
//! window; the first window after start is partial and skipped.

pub mod alerts;
mod latency;
mod settings;
mod stats;
mod store;
mod volume;

pub use alerts::{Alert, AlertKind, AlertWebhookConfig};
pub use latency::SeriesPoint;
pub use settings::MonitoringConfig;
pub use store::{FlowKey, VolumePoint};

use latency::{LatencyRule, LatencyTrack, Series};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use store::Store;
use switchyard_broker::observe::BrokerObserver;
use switchyard_broker::secrets::SecretProvider;
use switchyard_flows::observe::{FlowObserver, RecordsEvent, SyncRunEvent};
use switchyard_flows::sync::SyncConfig;
use switchyard_runtime::observe::{InvocationEvent, Observer};

/// A plugin call's latency trend, for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyTrend {
    pub plugin: String,
    pub pattern: String,
    pub action: Option<String>,
    /// Median p99 of the kept windows; `None` before the first.
    pub baseline_p99_ms: Option<f64>,
    /// Windows with enough calls kept for the baseline.
    pub windows: usize,
}

/// A flow stream's kept volume observations, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowVolume {
    #[serde(flatten)]
    pub key: FlowKey,
    pub points: Vec<VolumePoint>,
}

type LatencyKey = (String, &'static str, Option<String>);

/// Watches one host. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

struct Inner {
    config: MonitoringConfig,
    /// Syncs whose runs get volume alerts.
    volume_syncs: BTreeSet<String>,
    store: Mutex<Store>,
    state: Mutex<State>,
    alerts_out: OnceLock<tokio::sync::mpsc::Sender<Alert>>,
}

struct State {
    window_start_ms: u64,
    first_window: bool,
    /// Records received in the current window, by webhook/pipeline stream.
    window: BTreeMap<FlowKey, u64>,
    /// Every webhook/pipeline stream seen (or with history).
    known: BTreeSet<FlowKey>,
    latency: BTreeMap<LatencyKey, LatencyTrack>,
    series: Series,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Monitor {
    /// A monitor keeping its history in `path` (`None`: in memory), with
    /// the volume setting of each of `syncs`.
    pub fn new(
        config: &MonitoringConfig,
        path: Option<&Path>,
        syncs: &BTreeMap<String, SyncConfig>,
    ) -> Result<Monitor, String> {
        config.validate()?;
        let store = Store::open(path, config.alerts_kept)
            .map_err(|e| format!("cannot open the monitor database: {e}"))?;
        let known = store
            .volumes()
            .map_err(|e| format!("monitor database: {e}"))?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| key.flow != "sync")
            .collect();
        let now = now_ms();
        let window_ms = config.window_secs * 1000;
        let state = State {
            window_start_ms: now - now % window_ms,
            first_window: true,
            window: BTreeMap::new(),
            known,
            latency: BTreeMap::new(),
            series: Series::new(config.series_bucket_secs * 1000, 3_600_000),
        };
        Ok(Monitor {
            inner: Arc::new(Inner {
                config: config.clone(),
                volume_syncs: syncs
                    .iter()
                    .filter(|(_, s)| s.volume_alerts())
                    .map(|(n, _)| n.clone())
                    .collect(),
                store: Mutex::new(store),
                state: Mutex::new(state),
                alerts_out: OnceLock::new(),
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &MonitoringConfig {
        &self.inner.config
    }

    /// Starts the window ticker and, when `[monitoring.webhook]` is set,
    /// the alert delivery (its secret resolved by `secrets`). Needs a
    /// tokio runtime; the tasks end when the monitor is dropped.
    pub fn start(&self, secrets: &dyn SecretProvider) -> Result<(), String> {
        if let Some(webhook) = &self.inner.config.webhook {
            let secret = secrets
                .resolve("monitoring.webhook", &webhook.secret)
                .map_err(|e| e.to_string())?;
            let delivery = Arc::new(alerts::Delivery::new(webhook, secret)?);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Alert>(1024);
            if self.inner.alerts_out.set(tx).is_err() {
                return Err("the monitor is already started".into());
            }
            tokio::spawn(async move {
                while let Some(alert) = rx.recv().await {
                    let delivery = delivery.clone();
                    tokio::spawn(async move { delivery.deliver(alert).await });
                }
            });
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Monitor { inner }.tick();
            }
        });
        Ok(())
    }

    /// Closes the latency and volume windows that have ended and raises
    /// what they show. The ticker calls it every second.
    pub fn tick(&self) {
        let now = now_ms();
        let rule = self.latency_rule();
        let config = &self.inner.config;
        let mut raised = Vec::new();
        let mut state = lock(&self.inner.state);
        for (key, track) in &mut state.latency {
            if let Some(closed) = track.roll(now, &rule) {
                raised.extend(volume::latency_alert(key, &closed));
            }
        }
        let window_ms = config.window_secs * 1000;
        if now >= state.window_start_ms + window_ms {
            let counts = std::mem::take(&mut state.window);
            let end = now - now % window_ms;
            state.window_start_ms = end;
            if !std::mem::replace(&mut state.first_window, false) {
                let store = lock(&self.inner.store);
                for key in &state.known {
                    let observed = counts.get(key).copied().unwrap_or(0);
                    raised.extend(self.check_volume(&store, key, observed, end));
                }
            }
        }
        drop(state);
        raised.into_iter().for_each(|a| self.raise(a));
    }

    /// The latest `limit` alerts, newest first.
    pub fn alerts(&self, limit: usize) -> Vec<Alert> {
        lock(&self.inner.store).alerts(limit).unwrap_or_else(|e| {
            tracing::error!(target: "switchyard::alert", "monitor database: {e}");
            Vec::new()
        })
    }

    /// The last hour in `series_bucket_secs` buckets, oldest first: calls,
    /// errors, p50/p99 and records in and out (every flow).
    pub fn series(&self) -> Vec<SeriesPoint> {
        lock(&self.inner.state).series.points(now_ms())
    }

    /// Every flow stream's kept volume observations.
    pub fn volumes(&self) -> Vec<FlowVolume> {
        let rows = lock(&self.inner.store).volumes().unwrap_or_default();
        let mut flows: Vec<FlowVolume> = Vec::new();
        for (key, point) in rows {
            match flows.last_mut() {
                Some(last) if last.key == key => last.points.push(point),
                _ => flows.push(FlowVolume {
                    key,
                    points: vec![point],
                }),
            }
        }
        flows
    }

    /// Each plugin call's latency baseline.
    pub fn latency(&self) -> Vec<LatencyTrend> {
        lock(&self.inner.state)
            .latency
            .iter()
            .map(|((plugin, pattern, action), track)| {
                let (baseline_p99_ms, windows) = track.baseline();
                LatencyTrend {
                    plugin: plugin.clone(),
                    pattern: (*pattern).to_owned(),
                    action: action.clone(),
                    baseline_p99_ms,
                    windows,
                }
            })
            .collect()
    }

    fn latency_rule(&self) -> LatencyRule {
        let c = &self.inner.config;
        LatencyRule {
            window_ms: c.latency_window_secs * 1000,
            min_samples: c.latency_min_samples,
            min_history: c.min_history,
            history: c.baseline_runs,
            ratio: c.latency_regression_ratio,
        }
    }

    /// Raises an alert that `connection`'s OAuth `grant` needs an operator
    /// to connect the account again (subject `oauth:CONNECTION/GRANT`).
    pub fn oauth_needs_reauthorization(&self, connection: &str, grant: &str, reason: &str) {
        self.raise(Alert::new(
            AlertKind::OauthNeedsReauthorization,
            format!("oauth:{connection}/{grant}"),
            format!(
                "connection `{connection}`: oauth grant `{grant}` was refused ({reason}); reconnect the account on the status page (a client-credentials grant: fix its client_id or client_secret)"
            ),
            1.0,
            0.0,
        ));
    }

    /// Logs, keeps and (when configured) sends `alert`.
    fn raise(&self, alert: Alert) {
        tracing::warn!(
            target: "switchyard::alert",
            id = %alert.id,
            kind = alert.kind.as_str(),
            subject = %alert.subject,
            observed = alert.observed,
            baseline = alert.baseline,
            "{}",
            alert.message
        );
        if let Err(e) = lock(&self.inner.store).keep_alert(&alert) {
            tracing::error!(target: "switchyard::alert", "monitor database: {e}");
        }
        if let Some(out) = self.inner.alerts_out.get()
            && out.try_send(alert).is_err()
        {
            tracing::error!(target: "switchyard::alert", "alert webhook backlog full; alert not sent");
        }
    }
}

impl BrokerObserver for Monitor {}

impl Observer for Monitor {
    fn invocation(&self, event: &InvocationEvent<'_>) {
        if event.pattern == "describe" {
            return;
        }
        let now = now_ms();
        let micros = u32::try_from(event.elapsed.as_micros()).unwrap_or(u32::MAX);
        let rule = self.latency_rule();
        let mut state = lock(&self.inner.state);
        state.series.invocation(now, micros, event.error.is_some());
        let key = (
            event.plugin.to_owned(),
            event.pattern,
            event.action.map(str::to_owned),
        );
        let closed = state
            .latency
            .entry(key.clone())
            .or_default()
            .add(now, micros, &rule);
        drop(state);
        if let Some(alert) = closed.and_then(|c| volume::latency_alert(&key, &c)) {
            self.raise(alert);
        }
    }
}

impl FlowObserver for Monitor {
    fn records(&self, event: &RecordsEvent<'_>) {
        let mut state = lock(&self.inner.state);
        state
            .series
            .records(now_ms(), event.records_in, event.records_out);
        if event.flow != "sync" {
            let key = FlowKey {
                flow: event.flow.into(),
                name: event.name.into(),
                stream: event.stream.into(),
            };
            *state.window.entry(key.clone()).or_default() += event.records_in;
            state.known.insert(key);
        }
    }
    fn sync_run(&self, event: &SyncRunEvent<'_>) {
        for alert in self.sync_alerts(event.report) {
            self.raise(alert);
        }
    }
}
