//! The config sections of webhooks and pipelines.

use crate::queue::RetryPolicy;
use crate::transform::Transform;
use crate::webhooks::SignatureScheme;
use serde::Deserialize;
use switchyard_broker::secrets::SecretGrant;

/// `[webhooks.NAME]`: an inbound endpoint at `POST /v1/hooks/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The connection whose `handle-webhook` turns an event into messages.
    pub connection: String,
    /// The pipeline those messages feed.
    pub pipeline: String,
    /// How senders sign requests; required (use a real scheme even in
    /// development: unsigned endpoints are not offered).
    pub signature: SignatureConfig,
    /// Retries of the receiver step. Default: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// A signature scheme and where its secret comes from.
#[derive(Debug, Clone, Deserialize)]
pub struct SignatureConfig {
    #[serde(flatten)]
    pub scheme: SignatureScheme,
    /// The signing secret (`env` or `file`), resolved by the host's secret
    /// provider.
    pub secret: SecretGrant,
}

/// `[pipelines.NAME]`: a queue drained through transforms into a sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Steps applied in order to each batch. Default: none.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// The connection whose `write` receives the batches.
    pub sink: String,
    /// Messages per sink call. Default: 100.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Batches in flight at once, each claimed, transformed, written and
    /// settled by its own worker. Default: 1, which delivers in queue
    /// order. With more, batches may reach the sink and be acked out of
    /// order (a later batch can overtake an earlier one, and a retried
    /// message already could), so use more only for sinks that do not
    /// depend on order. 0 (only on a cluster, where other hosts deliver):
    /// this host queues what its webhooks accept but delivers none of it.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Default: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: RetryPolicy,
}

pub(crate) fn default_batch() -> usize {
    100
}

pub(crate) fn default_workers() -> usize {
    1
}

impl PipelineConfig {
    /// A pipeline straight into `sink`: no transforms, default batch and
    /// workers.
    pub fn direct(sink: &str, retry: RetryPolicy) -> Self {
        PipelineConfig {
            transforms: Vec::new(),
            sink: sink.to_owned(),
            batch_size: default_batch(),
            workers: default_workers(),
            retry,
        }
    }
}
