//! `[monitoring]` in `switchyard.toml`.

use super::AlertWebhookConfig;
use serde::Deserialize;

/// `[monitoring]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Whether the host monitors at all. Default: true.
    pub enabled: bool,
    /// A volume below this fraction of its baseline raises `volume_drop`.
    /// Default: 0.5.
    pub drop_ratio: f64,
    /// Observations (runs or windows) whose median is the baseline, for
    /// volume and latency. Default: 5.
    pub baseline_runs: usize,
    /// Observations needed before any baseline alert. Default: 3.
    pub min_history: usize,
    /// Webhook and pipeline volume window, seconds. Default: 300.
    pub window_secs: u64,
    /// Latency window, seconds. Default: 60.
    pub latency_window_secs: u64,
    /// A window p99 above this multiple of the baseline p99 raises
    /// `latency_regression`. Default: 2.0.
    pub latency_regression_ratio: f64,
    /// Calls a latency window needs to be judged and to count towards the
    /// baseline. Default: 20.
    pub latency_min_samples: usize,
    /// Bucket of [`Monitor::series`], seconds; the series spans an hour.
    /// Default: 10.
    pub series_bucket_secs: u64,
    /// Alerts kept in `monitor.sqlite`. Default: 1000.
    pub alerts_kept: usize,
    /// Volume observations kept per flow stream. Default: 100.
    pub history_kept: usize,
    /// Where alerts are POSTed, signed. Default: nowhere.
    pub webhook: Option<AlertWebhookConfig>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            drop_ratio: 0.5,
            baseline_runs: 5,
            min_history: 3,
            window_secs: 300,
            latency_window_secs: 60,
            latency_regression_ratio: 2.0,
            latency_min_samples: 20,
            series_bucket_secs: 10,
            alerts_kept: 1000,
            history_kept: 100,
            webhook: None,
        }
    }
}

impl MonitoringConfig {
    /// Refuses zero windows and counts.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("window_secs", self.window_secs),
            ("latency_window_secs", self.latency_window_secs),
            ("series_bucket_secs", self.series_bucket_secs),
            ("baseline_runs", self.baseline_runs as u64),
            ("alerts_kept", self.alerts_kept as u64),
            ("history_kept", self.history_kept as u64),
        ] {
            if value == 0 {
                return Err(format!("monitoring.{key} must be at least 1"));
            }
        }
        Ok(())
    }
}
