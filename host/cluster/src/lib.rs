//! The cluster backend: the flows' [`Queue`], [`CursorStore`] and
//! [`Leases`] on NATS JetStream, so several hosts share one set of
//! webhooks, pipelines and syncs, and a host can die without losing work.
//!
//! What lives where (every name starts with [`ClusterConfig::prefix`]):
//!
//! | what | JetStream | notes |
//! |---|---|---|
//! | each queue (`hook:NAME`, `pipeline:NAME`) | work-queue stream `P_Q_<queue>`, durable pull consumer `workers` shared by every host | a message is deleted once acked |
//! | dead letters of every queue | stream `P_DEAD`, a subject per queue | list, show and replay by stream sequence |
//! | webhook delivery ids | KV bucket `P_deliveries` | replay window per webhook, across hosts |
//! | sync cursors | KV bucket `P_cursors` | compare-and-swap on every commit |
//! | sync run reports | KV bucket `P_runs` | |
//! | which host runs a sync | KV bucket `P_leases` | expiring lease, compare-and-swap |
//! | each connection's `state` | KV bucket `P_state_<connection>` | its limits are the connection's quota |
//!
//! Each host keeps its own data dir for what is per host: the audit
//! trail, monitoring history and the compile cache.
//!
//! Works with nats-server 2.9 (Debian's package) and later: it needs
//! JetStream, pull consumers, delayed naks and KV, nothing newer.

mod names;
mod queue;
mod state;
mod store;
mod tokens;

pub use queue::JetStreamQueue;
pub use state::JetStreamState;
pub use store::{JetStreamCursors, JetStreamLeases};

use serde::Deserialize;
use std::time::Duration;
use switchyard_broker::kv::StateQuota;
use switchyard_broker::secrets::{SecretGrant, SecretProvider};
use switchyard_flows::cursors::CursorStore;
use switchyard_flows::leases::Leases;
use switchyard_flows::queue::Queue;

/// `[cluster]`: share the work with other hosts on NATS JetStream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://127.0.0.1:4222`); any one reachable
    /// will do. Required.
    pub nats: Vec<String>,
    /// Prefix of every stream, consumer and bucket name: hosts with the
    /// same prefix share work. Default: `switchyard`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A NATS auth token from the secret providers. Default: none.
    #[serde(default)]
    pub token: Option<SecretGrant>,
    /// A NATS user; its password comes from `password`. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// The NATS user's password, from the secret providers.
    #[serde(default)]
    pub password: Option<SecretGrant>,
    /// This host's name in leases and logs. Default: `<hostname>-<pid>`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// How long a host that stops acknowledging progress (it died) keeps
    /// its claimed messages before another host gets them. Live hosts
    /// send progress acks every third of it while a batch runs, up to the
    /// batch's lease. Default: 30 000 ms.
    #[serde(default = "default_ack_wait_ms")]
    pub ack_wait_ms: u64,
    /// How long a sync's lease lasts unless renewed: the longest a dead
    /// host holds a sync up. Default: 15 000 ms.
    #[serde(default = "default_sync_lease_ms")]
    pub sync_lease_ms: u64,
    /// How many hosts share the rate-limit budgets: each host takes
    /// `1 / hosts` of every bucket's rate and burst, so the cluster as a
    /// whole stays within them. Default: 1.
    #[serde(default = "default_hosts")]
    pub hosts: u32,
    /// Replicas of each stream and bucket (a NATS cluster of 3 or 5
    /// servers takes 3). Default: 1.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Keep streams in memory instead of files (tests and benchmarks
    /// only: a restarted server forgets everything). Default: false.
    #[serde(default)]
    pub memory_storage: bool,
}

fn default_prefix() -> String {
    "switchyard".into()
}
fn default_ack_wait_ms() -> u64 {
    30_000
}
fn default_sync_lease_ms() -> u64 {
    15_000
}
fn default_hosts() -> u32 {
    1
}
fn default_replicas() -> usize {
    1
}

impl ClusterConfig {
    /// Checks what can be checked without a server.
    pub fn check(&self) -> Result<(), String> {
        if self.nats.is_empty() {
            return Err(
                "cluster.nats is empty: list the NATS servers, e.g. nats = [\"nats://127.0.0.1:4222\"]"
                    .into(),
            );
        }
        for url in &self.nats {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(format!(
                    "cluster.nats: `{url}` is not a nats:// or tls:// URL"
                ));
            }
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !(self.prefix.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "cluster.prefix `{}` must be 1-32 letters, digits or '-'",
                self.prefix
            ));
        }
        if self.ack_wait_ms < 1_000 {
            return Err("cluster.ack_wait_ms must be at least 1000".into());
        }
        if self.sync_lease_ms < 1_000 {
            return Err("cluster.sync_lease_ms must be at least 1000".into());
        }
        if self.hosts == 0 {
            return Err("cluster.hosts must be at least 1".into());
        }
        if self.token.is_some() && (self.user.is_some() || self.password.is_some()) {
            return Err("cluster: give either token, or user and password, not both".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("cluster: user and password go together".into());
        }
        Ok(())
    }

    /// The sync lease's time to live.
    pub fn sync_lease_ttl(&self) -> Duration {
        Duration::from_millis(self.sync_lease_ms)
    }

    /// This host's name in leases and logs (see `host_id`).
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(default_host_id)
    }
}

/// `<hostname>-<pid>`: a host's name when none is configured.
pub fn default_host_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Why the cluster backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[cluster]: {0}")]
    Config(String),
    #[error(
        "[cluster]: cannot reach NATS at {urls}: {reason} (is nats-server running with JetStream, `nats-server -js`?)"
    )]
    Connect { urls: String, reason: String },
    #[error("[cluster]: setting up JetStream: {0}")]
    Setup(String),
}

/// A connected cluster backend: one NATS connection shared by the queue,
/// the cursor store and the leases.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub queue: JetStreamQueue,
    pub cursors: JetStreamCursors,
    pub leases: JetStreamLeases,
    /// The client, to see the connection's state.
    pub client: async_nats::Client,
    context: async_nats::jetstream::Context,
    settings: names::Settings,
}

impl Cluster {
    /// Connects to NATS and creates (or checks) the dead-letter stream and
    /// the KV buckets. Credentials come from `secrets`.
    pub async fn connect(
        config: &ClusterConfig,
        secrets: &dyn SecretProvider,
    ) -> Result<Cluster, ClusterError> {
        config.check().map_err(ClusterError::Config)?;
        let host_id = config.host_id();
        let secret = |name: &str, grant: &SecretGrant| {
            secrets
                .resolve(name, grant)
                .map_err(|e| ClusterError::Config(e.to_string()))
                .and_then(|v| {
                    String::from_utf8(v.expose().to_vec())
                        .map_err(|_| ClusterError::Config(format!("cluster.{name} is not UTF-8")))
                })
        };
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("switchyard {host_id}"))
            .connection_timeout(Duration::from_secs(5))
            // Forever: a restarted server is found again.
            .max_reconnects(None)
            .event_callback(|event| async move {
                tracing::info!(target: "switchyard::cluster", "nats: {event}");
            });
        if let Some(grant) = &config.token {
            options = options.token(secret("token", grant)?);
        }
        if let (Some(user), Some(grant)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), secret("password", grant)?);
        }
        let urls = config.nats.join(", ");
        let client =
            options
                .connect(config.nats.clone())
                .await
                .map_err(|e| ClusterError::Connect {
                    urls: urls.clone(),
                    reason: e.to_string(),
                })?;
        let context = async_nats::jetstream::new(client.clone());
        let settings = names::Settings {
            prefix: config.prefix.clone(),
            replicas: config.replicas,
            memory: config.memory_storage,
        };
        let queue = JetStreamQueue::new(
            context.clone(),
            settings.clone(),
            Duration::from_millis(config.ack_wait_ms),
        )
        .await?;
        let cursors = JetStreamCursors::new(&context, &settings).await?;
        let leases = JetStreamLeases::new(&context, &settings, host_id).await?;
        Ok(Cluster {
            queue,
            cursors,
            leases,
            client,
            context,
            settings,
        })
    }

    /// Connection state on the cluster, one bucket per connection holding
    /// at most `quota`.
    pub fn state(&self, quota: StateQuota) -> JetStreamState {
        JetStreamState::new(self.context.clone(), self.settings.clone(), quota)
    }

    /// OAuth token records and refresh locks shared by the hosts.
    pub async fn token_store(
        &self,
    ) -> Result<std::sync::Arc<dyn switchyard_oauth::store::TokenStore>, ClusterError> {
        Ok(std::sync::Arc::new(
            tokens::JetStreamTokens::new(&self.context, &self.settings).await?,
        ))
    }

    /// The three seams as the flows take them.
    pub fn seams(
        &self,
    ) -> (
        std::sync::Arc<dyn Queue>,
        std::sync::Arc<dyn CursorStore>,
        std::sync::Arc<dyn Leases>,
    ) {
        (
            std::sync::Arc::new(self.queue.clone()),
            std::sync::Arc::new(self.cursors.clone()),
            std::sync::Arc::new(self.leases.clone()),
        )
    }
}
