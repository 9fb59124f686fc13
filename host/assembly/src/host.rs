//! [`Host`]: the sandbox, the flows and the operations backends, built
//! from one [`SwitchyardConfig`] and wired together.

use crate::access::Access;
use crate::config::SwitchyardConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_broker::secrets::{EnvOrFile, SecretProvider};
use switchyard_cluster::Cluster;
use switchyard_flows::cursors::CursorStore;
use switchyard_flows::leases::{Leases, LocalLeases};
use switchyard_flows::observe::{FlowObserver, FlowObservers};
use switchyard_flows::pipelines::{Pipelines, with_sync_pipelines};
use switchyard_flows::queue::{Queue, SqliteQueue};
use switchyard_flows::sync::Syncs;
use switchyard_ops::audit::AuditLog;
use switchyard_ops::metrics::Metrics;
use switchyard_ops::monitor::Monitor;
use switchyard_ops::otlp::OtlpSpans;
use switchyard_runtime::plugin::{plugin_files, plugin_name_from_path};
use switchyard_runtime::signing::TrustPolicy;
use switchyard_runtime::{LoadError, Runtime};

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A plugin, connection or sandbox setting (see [`LoadError`]).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Webhooks, pipelines or syncs that cannot run as configured, or
    /// their queue; the text names the section.
    #[error("{0}")]
    Flows(String),
    /// Another host holds the data dir.
    #[error(
        "{dir} is in use by another switchyard host ({holder}): two hosts on one data_dir would deliver every message twice; give this one its own data_dir, or stop the other"
    )]
    DataDirInUse { dir: PathBuf, holder: String },
}

/// The lock file's name under `data_dir`.
pub const DATA_DIR_LOCK: &str = "switchyard.lock";

/// Locks `dir` for this process, writing its pid into the lock file.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, HostError> {
    use std::io::{Read, Seek, Write};
    let io = |source| {
        HostError::Load(LoadError::Read {
            path: dir.join(DATA_DIR_LOCK),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(DATA_DIR_LOCK))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(HostError::DataDirInUse {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// A whole host: what `switchyard serve` runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Host {
    /// The sandbox, with every plugin and connection of the config loaded.
    pub runtime: Runtime,
    /// Prometheus metrics; always collected.
    pub metrics: Arc<Metrics>,
    /// The audit trail, unless `[audit] enabled = false`.
    pub audit: Option<Arc<AuditLog>>,
    /// Monitoring, unless `[monitoring] enabled = false`.
    pub monitor: Option<Monitor>,
    /// Webhooks and pipelines, when any webhook, pipeline or sync is
    /// configured.
    pub pipelines: Option<Arc<Pipelines>>,
    /// Batch syncs, alongside `pipelines`.
    pub syncs: Option<Arc<Syncs>>,
    /// Who may call actions and run syncs over HTTP (`[access]`, keys
    /// resolved). [`Host::without_flows`] leaves it denying everyone.
    pub access: Arc<Access>,
    /// The cluster backend, when `[cluster]` is configured: connection
    /// state, and the flows' queue, cursors and leases.
    pub cluster: Option<Cluster>,
    /// OAuth grants' tokens, when any connection has an OAuth grant.
    pub oauth: Option<switchyard_oauth::OAuthManager>,
    /// The exclusive lock on `<data_dir>/switchyard.lock`, held while any
    /// clone of the host lives (see [`Host::from_config`]).
    data_dir_lock: Option<Arc<std::fs::File>>,
}

impl Host {
    /// Builds the operations backends, the runtime observed by them (every
    /// plugin in the plugin directory and under `[plugins]` loaded, every
    /// connection created) and, when configured, the flows on the queue at
    /// `<data_dir>/queue.sqlite`. Starts monitoring; the flows wait for
    /// [`Host::start`].
    ///
    /// Takes an exclusive lock on `<data_dir>/switchyard.lock` first: a
    /// second host on the same data dir would claim and deliver the same
    /// messages and run the same syncs, so it is refused with
    /// [`HostError::DataDirInUse`]. The lock is the operating system's
    /// (`flock`): a killed host releases it.
    pub async fn from_config(config: &SwitchyardConfig) -> Result<Host, HostError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let mut host = Host::without_flows(config).await?;
        host.data_dir_lock = Some(Arc::new(lock));
        host.access = Arc::new(
            Access::resolve(&config.access, host.runtime.secret_provider())
                .map_err(|e| HostError::Load(LoadError::Config(e)))?,
        );
        let mut observers: Vec<Arc<dyn FlowObserver>> = vec![host.metrics.clone()];
        if let Some(monitor) = &host.monitor {
            observers.push(Arc::new(monitor.clone()));
        }
        let instance = (config.cluster.as_ref())
            .map_or_else(switchyard_cluster::default_host_id, |c| c.host_id());
        let spans = OtlpSpans::start(&config.telemetry, &instance)
            .map_err(|e| HostError::Load(LoadError::Config(e)))?;
        if let Some(spans) = spans {
            observers.push(Arc::new(spans));
        }
        let observers = FlowObservers::new(observers);
        let (pipelines, syncs) =
            flows(&host.runtime, config, host.cluster.as_ref(), observers).await?;
        host.pipelines = pipelines;
        host.syncs = syncs;
        Ok(host)
    }

    /// Like [`Host::from_config`] without the flows (no queue is opened,
    /// no webhook secret resolved): for one-off calls such as `switchyard
    /// call`.
    pub async fn without_flows(config: &SwitchyardConfig) -> Result<Host, LoadError> {
        let metrics = Arc::new(Metrics::new());
        // On a cluster, connection state is shared through NATS, so the
        // connection is made before any plugin loads.
        let cluster = match &config.cluster {
            Some(cluster) => Some(
                Cluster::connect(cluster, &EnvOrFile)
                    .await
                    .map_err(|e| LoadError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let network = switchyard_broker::egress::Network::default();
        let mut builder = Runtime::builder()
            .network(network.clone())
            .limits(config.limits.clone())
            .cache_dir(config.cache_dir())
            .state_path(config.state_path())
            .trust(TrustPolicy::from_config(&config.trust).map_err(LoadError::Config)?)
            .observer(metrics.clone());
        let audit = if config.audit.enabled {
            let audit = AuditLog::open(&config.audit_path(), config.audit.retention())
                .map_err(|e| LoadError::Config(format!("[audit]: {e}")))?;
            let audit = Arc::new(audit);
            builder = builder.observer(audit.clone());
            Some(audit)
        } else {
            None
        };
        let monitor = if config.monitoring.enabled {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| LoadError::Read {
                path: config.data_dir.clone(),
                source,
            })?;
            let monitor = Monitor::new(
                &config.monitoring,
                Some(&config.monitor_path()),
                &config.syncs,
            )
            .map_err(LoadError::Config)?;
            builder = builder.observer(Arc::new(monitor.clone()));
            Some(monitor)
        } else {
            None
        };
        if let Some(cluster) = &cluster {
            builder = builder.state_backend(Arc::new(cluster.state(config.limits.state_quota())));
        }
        let token_store = match &cluster {
            Some(cluster) if config.uses_oauth() => Some(
                cluster
                    .token_store()
                    .await
                    .map_err(|e| LoadError::Config(format!("[cluster] oauth tokens: {e}")))?,
            ),
            _ => None,
        };
        let oauth = crate::oauth::manager(
            config,
            token_store,
            Arc::new(EnvOrFile),
            network,
            metrics.clone(),
            monitor.clone(),
        )
        .map_err(LoadError::Config)?;
        if let Some(oauth) = &oauth {
            builder = builder.tokens(Arc::new(oauth.clone()));
        }
        let runtime = builder.build()?;
        if let Some(monitor) = &monitor {
            monitor
                .start(runtime.secret_provider())
                .map_err(|e| LoadError::Config(format!("monitoring: {e}")))?;
        }
        load_plugins(&runtime, config).await?;
        if let Some(oauth) = &oauth {
            oauth.publish_statuses().await;
        }
        Ok(Host {
            runtime,
            metrics,
            audit,
            monitor,
            pipelines: None,
            syncs: None,
            access: Arc::new(Access::default()),
            cluster,
            oauth,
            data_dir_lock: None,
        })
    }

    /// Starts the pipeline workers and the sync schedules. They run until
    /// the process ends.
    pub async fn start(&self) {
        if let Some(pipelines) = &self.pipelines {
            drop(pipelines.start().await);
        }
        if let Some(syncs) = &self.syncs {
            drop(syncs.start());
        }
    }
}

/// The flows a host runs, when any is configured.
type Flows = (Option<Arc<Pipelines>>, Option<Arc<Syncs>>);

/// The configured webhooks, pipelines and syncs, on the cluster when
/// `[cluster]` is configured, else on one SQLite queue that also keeps the
/// sync cursors; `None` when none is configured.
async fn flows(
    runtime: &Runtime,
    config: &SwitchyardConfig,
    cluster: Option<&Cluster>,
    observers: FlowObservers,
) -> Result<Flows, HostError> {
    if config.webhooks.is_empty() && config.pipelines.is_empty() && config.syncs.is_empty() {
        return Ok((None, None));
    }
    let (queue, cursors, leases) = match cluster {
        Some(cluster) => cluster.seams(),
        None => queues(config, runtime.secret_provider()).await?,
    };
    let pipelines = Pipelines::new(
        runtime.clone(),
        queue.clone(),
        &config.webhooks,
        &with_sync_pipelines(&config.pipelines, &config.syncs),
        runtime.secret_provider(),
    )
    .map_err(|e| HostError::Flows(format!("pipelines: {e}")))?
    .with_observers(observers.clone());
    let mut syncs = Syncs::new(runtime.clone(), queue, cursors, &config.syncs)
        .map_err(|e| HostError::Flows(format!("syncs: {e}")))?
        .with_observers(observers);
    if let Some(cluster) = &config.cluster {
        syncs = syncs.with_leases(leases, cluster.sync_lease_ttl());
    }
    Ok((Some(Arc::new(pipelines)), Some(Arc::new(syncs))))
}

/// The flows' queue, cursor store and sync leases: the cluster's when
/// `[cluster]` is configured, else the embedded SQLite queue's.
pub async fn queues(
    config: &SwitchyardConfig,
    secrets: &dyn SecretProvider,
) -> Result<(Arc<dyn Queue>, Arc<dyn CursorStore>, Arc<dyn Leases>), HostError> {
    if let Some(cluster) = &config.cluster {
        let cluster = Cluster::connect(cluster, secrets)
            .await
            .map_err(|e| HostError::Flows(e.to_string()))?;
        return Ok(cluster.seams());
    }
    let path = config.queue_path();
    let sqlite = SqliteQueue::open(&path)
        .map_err(|e| HostError::Flows(format!("pipelines: {}: {e}", path.display())))?;
    Ok((
        Arc::new(sqlite.clone()),
        Arc::new(sqlite),
        Arc::new(LocalLeases),
    ))
}

/// Loads every plugin of the plugin directory and `[plugins]`, creates
/// every `[connections]` entry, and gives each plugin no connection names
/// a default connection of its own name (unless it needs grants).
async fn load_plugins(runtime: &Runtime, config: &SwitchyardConfig) -> Result<(), LoadError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let dir = config.plugin_dir();
    if dir.is_dir() {
        for path in plugin_files(&dir)? {
            if let Some(name) = plugin_name_from_path(&path) {
                files.push((name, path));
            }
        }
    }
    for (name, plugin) in &config.plugins {
        if let Some((_, existing)) = files.iter().find(|(n, p)| n == name && p != &plugin.path) {
            return Err(LoadError::Conflict(format!(
                "plugin `{name}` is both {} (plugin dir) and {} ([plugins.{name}])",
                existing.display(),
                plugin.path.display()
            )));
        }
        if !files.iter().any(|(_, p)| p == &plugin.path) {
            files.push((name.clone(), plugin.path.clone()));
        }
    }
    // As hot loading does: a file that fails is logged and listed under
    // the load failures, and the rest serve; unless `strict_plugins`.
    let mut failed = BTreeSet::new();
    for (name, path) in &files {
        if let Err(e) = runtime.load_plugin(name, path).await {
            if config.strict_plugins {
                return Err(e);
            }
            failed.insert(name.as_str());
        }
    }
    // Hosts of a cluster split every rate-limit budget between them.
    let hosts = config.cluster.as_ref().map_or(1, |c| c.hosts);
    for (name, connection) in &config.connections {
        let mut grants = connection.grants.clone();
        for grant in grants.rate_limits.values_mut() {
            *grant = grant.share(hosts);
        }
        let values = connection
            .values()
            .map_err(|e| LoadError::Config(format!("connections.{name}.config: {e}")))?;
        if failed.contains(connection.plugin.as_str())
            && runtime.plugin(&connection.plugin).is_none()
        {
            runtime.add_waiting_connection(name, &connection.plugin, values, &grants)?;
            continue;
        }
        runtime.add_connection_with_grants(name, &connection.plugin, values, &grants)?;
    }
    let named: Vec<String> = config
        .connections
        .values()
        .map(|c| c.plugin.clone())
        .collect();
    let names: BTreeSet<&String> = files.iter().map(|(name, _)| name).collect();
    for name in names {
        let has_connection = named.contains(name) || config.connections.contains_key(name);
        let Some(plugin) = runtime.plugin(name) else {
            continue;
        };
        if has_connection {
            continue;
        }
        if plugin.needs_grants() {
            // Without grants it could only fail; it waits for a
            // [connections.X] block instead of aborting start-up.
            tracing::warn!(
                plugin = %name,
                "plugin needs grants (HTTP, secrets, state or rate limits); add a [connections.<name>] block with grants to use it"
            );
            continue;
        }
        runtime.add_connection(name, name, BTreeMap::new())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: two hosts on one data dir would double-deliver.
    #[tokio::test]
    async fn a_second_host_on_one_data_dir_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            SwitchyardConfig::parse("data_dir = \"d\"\nplugin_dir = \"none\"", dir.path()).unwrap();
        let first = Host::from_config(&config).await.unwrap();
        let err = Host::from_config(&config).await.unwrap_err();
        assert!(matches!(err, HostError::DataDirInUse { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("data_dir"),
            "{text}"
        );
        // A clone keeps it; the last one gone releases it.
        let clone = first.clone();
        drop(first);
        assert!(Host::from_config(&config).await.is_err());
        drop(clone);
        Host::from_config(&config).await.unwrap();
    }
}
