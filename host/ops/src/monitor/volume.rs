//! The volume and reconciliation checks of flows and sync runs, and the
//! latency alert's wording.

use super::alerts::{Alert, AlertKind};
use super::latency::Closed;
use super::store::{FlowKey, Store};
use super::{LatencyKey, Monitor, lock, stats};
use switchyard_flows::sync::RunReport;

impl Monitor {
    /// Checks `observed` against the key's history, then records it.
    pub(super) fn check_volume(
        &self,
        store: &Store,
        key: &FlowKey,
        observed: u64,
        at_ms: u64,
    ) -> Option<Alert> {
        let c = &self.inner.config;
        let history = store.history(key, c.baseline_runs).unwrap_or_default();
        let verdict = stats::check_volume(
            observed,
            &history,
            c.min_history,
            c.baseline_runs,
            c.drop_ratio,
        );
        if let Err(e) = store.record(key, at_ms, observed, c.history_kept.max(c.baseline_runs)) {
            tracing::error!(target: "switchyard::alert", "monitor database: {e}");
        }
        let (kind, baseline) = verdict?;
        let what = if key.flow == "sync" { "run" } else { "window" };
        let message = format!(
            "{} moved {observed} records in its last {what}; the baseline (median of recent {what}s) is {baseline}",
            key.subject()
        );
        Some(Alert::new(
            kind,
            key.subject(),
            message,
            observed as f64,
            baseline,
        ))
    }

    pub(super) fn sync_alerts(&self, report: &RunReport) -> Vec<Alert> {
        let mut raised = Vec::new();
        if report.error.is_some() {
            return raised;
        }
        let name = &report.sync;
        for (stream, counts) in &report.streams {
            let unaccounted = counts.unaccounted();
            if unaccounted != 0 {
                raised.push(Alert::new(
                    AlertKind::ReconciliationMismatch,
                    format!("sync:{name}/{stream}"),
                    format!(
                        "sync:{name}/{stream} read {} (+{} split) but wrote {}, refused {} and filtered {}: {unaccounted} unaccounted",
                        counts.read, counts.added, counts.written, counts.failed, counts.filtered
                    ),
                    (counts.written + counts.failed + counts.filtered) as f64,
                    (counts.read + counts.added) as f64,
                ));
            }
            if self.inner.volume_syncs.contains(name) {
                let key = FlowKey {
                    flow: "sync".into(),
                    name: name.clone(),
                    stream: stream.clone(),
                };
                let store = lock(&self.inner.store);
                raised.extend(self.check_volume(&store, &key, counts.read, report.finished_at_ms));
            }
        }
        if let Some(reconcile) = &report.reconcile {
            match (reconcile.source, reconcile.sink) {
                (Some(source), Some(sink)) if source != sink => raised.push(Alert::new(
                    AlertKind::ReconciliationMismatch,
                    format!("sync:{name}"),
                    format!("sync:{name}: the source counts {source} records, the sink {sink}"),
                    sink as f64,
                    source as f64,
                )),
                _ => {}
            }
            if let Some(error) = &reconcile.error {
                tracing::warn!(target: "switchyard::alert", sync = %name, "reconciliation counts unavailable: {error}");
            }
        }
        raised
    }
}

pub(super) fn latency_alert(key: &LatencyKey, closed: &Closed) -> Option<Alert> {
    let baseline = closed.regressed_from?;
    let (plugin, pattern, action) = key;
    let subject = match action {
        Some(action) => format!("plugin:{plugin}/{pattern}/{action}"),
        None => format!("plugin:{plugin}/{pattern}"),
    };
    let message = format!(
        "{subject}: p99 {} ms over {} calls (p50 {} ms) against a baseline p99 of {baseline} ms",
        closed.p99_ms, closed.samples, closed.p50_ms
    );
    Some(Alert::new(
        AlertKind::LatencyRegression,
        subject,
        message,
        closed.p99_ms,
        baseline,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitoringConfig;
    use std::collections::BTreeMap;
    use switchyard_flows::observe::{FlowObserver, SyncRunEvent};
    use switchyard_flows::sync::{ReconcileCounts, StreamCounts};

    fn syncs() -> BTreeMap<String, switchyard_flows::sync::SyncConfig> {
        toml::from_str(
            "[snap]\nsource = \"a\"\nstreams = [\"s\"]\nsink = \"b\"\nmode = \"full-refresh\"\n",
        )
        .unwrap()
    }

    fn run(read: u64, written: u64) -> RunReport {
        let counts = StreamCounts {
            read,
            written,
            ..StreamCounts::default()
        };
        RunReport {
            sync: "snap".into(),
            read,
            written,
            streams: [("s".to_owned(), counts)].into(),
            ..RunReport::default()
        }
    }

    #[test]
    fn volume_history_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.sqlite");
        let config = MonitoringConfig::default();
        let first = Monitor::new(&config, Some(&path), &syncs()).unwrap();
        for _ in 0..3 {
            first.sync_run(&SyncRunEvent {
                report: &run(100, 100),
            });
        }
        assert!(first.alerts(10).is_empty());
        drop(first);
        let second = Monitor::new(&config, Some(&path), &syncs()).unwrap();
        second.sync_run(&SyncRunEvent {
            report: &run(30, 30),
        });
        let alerts = second.alerts(10);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::VolumeDrop);
        assert_eq!((alerts[0].observed, alerts[0].baseline), (30.0, 100.0));
        assert_eq!(alerts[0].subject, "sync:snap/s");
    }

    #[test]
    fn unaccounted_records_and_differing_counts_are_mismatches() {
        let monitor = Monitor::new(&MonitoringConfig::default(), None, &BTreeMap::new()).unwrap();
        let mut report = run(10, 7);
        report.streams.get_mut("s").unwrap().filtered = 2;
        let alerts = monitor.sync_alerts(&report);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::ReconciliationMismatch);
        assert!(
            alerts[0].message.contains("1 unaccounted"),
            "{}",
            alerts[0].message
        );
        // Filtered records are accounted for, and a failed run is not judged.
        report.streams.get_mut("s").unwrap().filtered = 3;
        assert!(monitor.sync_alerts(&report).is_empty());
        report.reconcile = Some(ReconcileCounts {
            source: Some(10),
            sink: Some(9),
            error: None,
        });
        assert_eq!(monitor.sync_alerts(&report).len(), 1);
        report.error = Some("stream `s`: write: down".into());
        assert!(monitor.sync_alerts(&report).is_empty());
    }
}
