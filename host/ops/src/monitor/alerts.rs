//! Alerts, and their delivery to the configured webhook, signed with
//! Standard Webhooks headers, from a background task with retries.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use switchyard_broker::secrets::{SecretGrant, SecretValue};
use switchyard_flows::queue::RetryPolicy;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A run or window moved less than `drop_ratio` × its baseline.
    VolumeDrop,
    /// A run or window moved nothing under a positive baseline.
    VolumeZero,
    /// A window's p99 exceeded `latency_regression_ratio` × the baseline p99.
    LatencyRegression,
    /// A sync run's records do not add up, or source and sink counts differ.
    ReconciliationMismatch,
    /// An OAuth grant was refused (`invalid_grant`, revoked): an operator
    /// must connect the account again.
    OauthNeedsReauthorization,
}

impl AlertKind {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::VolumeDrop => "volume_drop",
            AlertKind::VolumeZero => "volume_zero",
            AlertKind::LatencyRegression => "latency_regression",
            AlertKind::ReconciliationMismatch => "reconciliation_mismatch",
            AlertKind::OauthNeedsReauthorization => "oauth_needs_reauthorization",
        }
    }
}

/// One alert. `subject` names what it is about (`sync:NAME/STREAM`,
/// `pipeline:NAME/STREAM`, `webhook:NAME/STREAM`,
/// `plugin:PLUGIN/PATTERN[/ACTION]`); `observed` and `baseline` are
/// record counts or milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique; also the `webhook-id` of its delivery.
    pub id: String,
    pub kind: AlertKind,
    pub subject: String,
    pub message: String,
    pub observed: f64,
    pub baseline: f64,
    /// Unix milliseconds.
    pub at_ms: u64,
}

impl Alert {
    pub(crate) fn new(
        kind: AlertKind,
        subject: String,
        message: String,
        observed: f64,
        baseline: f64,
    ) -> Alert {
        let at_ms = super::now_ms();
        Alert {
            id: format!("alert_{at_ms:x}{:08x}", fastrand::u32(..)),
            kind,
            subject,
            message,
            observed,
            baseline,
            at_ms,
        }
    }

    /// The webhook body: `{"type":"alert.KIND","timestamp":RFC 3339,"data":ALERT}`.
    pub fn webhook_body(&self) -> Vec<u8> {
        let timestamp = chrono::DateTime::from_timestamp_millis(self.at_ms as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        serde_json::to_vec(&serde_json::json!({
            "type": format!("alert.{}", self.kind.as_str()),
            "timestamp": timestamp,
            "data": self,
        }))
        .expect("alerts serialize")
    }
}

/// `[monitoring.webhook]`: where alerts are POSTed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertWebhookConfig {
    /// `http://…` or `https://…`. Required.
    pub url: String,
    /// The `whsec_…` signing secret (`{ env = … }` or `{ file = … }`),
    /// resolved by the runtime's secret provider. Required.
    pub secret: SecretGrant,
    /// Delivery attempts and backoff. Default: 5 attempts, 500 ms doubling
    /// to at most 60 s, with full jitter.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// One attempt's limit, connect to response. Default: 10000.
    #[serde(default = "ten_seconds")]
    pub timeout_ms: u64,
}

fn ten_seconds() -> u64 {
    10_000
}

/// Delivers alerts to one webhook; each alert in its own task.
pub(crate) struct Delivery {
    uri: http::Uri,
    secret: SecretValue,
    retry: RetryPolicy,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

impl Delivery {
    pub(crate) fn new(config: &AlertWebhookConfig, secret: SecretValue) -> Result<Self, String> {
        let uri: http::Uri = config
            .url
            .parse()
            .map_err(|e| format!("monitoring.webhook.url: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("monitoring.webhook.url must be http://HOST… or https://HOST…".into());
        }
        switchyard_flows::webhooks::sign_standard_webhooks(&secret, "check", 0, b"")
            .map_err(|e| format!("monitoring.webhook.secret: {e}"))?;
        let tls = switchyard_broker::egress::tls_client_config();
        Ok(Delivery {
            uri,
            secret,
            retry: config.retry.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            tls: Arc::new(tls),
        })
    }

    /// Sends `alert` until a 2xx answer or the attempts run out.
    pub(crate) async fn deliver(&self, alert: Alert) {
        let body = Bytes::from(alert.webhook_body());
        let mut attempt = 1;
        loop {
            let sent = tokio::time::timeout(self.timeout, self.post(&alert.id, body.clone())).await;
            let error = match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => return,
                Ok(Ok(status)) => format!("answered {status}"),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
            };
            if attempt >= self.retry.max_attempts {
                tracing::error!(target: "switchyard::alert", alert = %alert.id, attempt, "alert webhook gave up: {error}");
                return;
            }
            tracing::warn!(target: "switchyard::alert", alert = %alert.id, attempt, "alert webhook failed, retrying: {error}");
            tokio::time::sleep(Duration::from_millis(self.retry.backoff_ms(attempt))).await;
            attempt += 1;
        }
    }

    async fn post(&self, id: &str, body: Bytes) -> Result<u16, String> {
        let host = self.uri.host().expect("checked in new");
        let https = self.uri.scheme_str() == Some("https");
        let port = self.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let stream: Box<dyn Stream> = if https {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("TLS name: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone());
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let unix_s = super::now_ms() / 1000;
        let signed =
            switchyard_flows::webhooks::sign_standard_webhooks(&self.secret, id, unix_s, &body)
                .map_err(|e| e.to_string())?;
        let authority = self.uri.authority().map_or(host, |a| a.as_str());
        let mut request =
            http::Request::post(self.uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::USER_AGENT, "switchyard-alerts");
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let result = sender.send_request(request).await;
        let status = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                Ok(status)
            }
            Err(e) => Err(e.to_string()),
        };
        driver.abort();
        status
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}
