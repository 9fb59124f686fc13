//! The [`Runtime`]: plugins, connections and the calls into them.

use crate::audit::AuditLog;
use crate::bindings::{
    ConnectorInfo, Message, Page, PluginPre, ReadRequest, WebhookRequest, WriteOutcome,
};
use crate::cache::CompileCache;
use crate::capabilities::{EffectiveRights, Grants, PluginManifest};
use crate::config::SwitchyardConfig;
use crate::egress::{Egress, Network};
use crate::engine::SharedEngine;
use crate::error::{InvokeError, LoadError};
use crate::host::config::ConfigCtx;
use crate::host::log::LogRate;
use crate::host::rate_limit::RateLimitCtx;
use crate::host::secrets::SecretsCtx;
use crate::host::state::StateCtx;
use crate::invoke::{Call, Gate, Output, Session, invoke, unexpected};
use crate::kv::StateStore;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::observe::{InvocationEvent, ObserveCtx, Observer, Observers};
use crate::plugin::{
    ComponentSummary, load_component, plugin_name_from_path, side_files, source_digest,
};
use crate::rate::ConnectionRateLimits;
use crate::registry::{ConnectionSpec, DeployMode, Registry};
use crate::secrets::{ConnectionSecrets, EnvOrFile, Redactor, SecretProvider};
use crate::signing::TrustPolicy;
use crate::state::{BrokerCtx, InvocationState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tracing::Instrument;
use wasmtime::component::Linker;

/// A loaded plugin: the code, compiled once and pre-linked.
pub struct Plugin {
    name: Arc<str>,
    version: Arc<str>,
    path: PathBuf,
    summary: ComponentSummary,
    info: ConnectorInfo,
    manifest: PluginManifest,
    publisher: Option<String>,
    from_cache: bool,
    loaded_at_ms: u64,
    source_digest: String,
    pub(crate) pre: PluginPre<InvocationState>,
    pub(crate) gate: Gate,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name in this host (config key or file stem).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The connector's own version, from `describe`.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Imports, exports, WIT version, size and hash.
    pub fn summary(&self) -> &ComponentSummary {
        &self.summary
    }
    /// What the plugin requests (its manifest; empty when it has none).
    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }
    /// What the connector said about itself at load.
    pub fn info(&self) -> &ConnectorInfo {
        &self.info
    }
    /// Invocations of this plugin running right now, across its connections.
    pub fn in_flight(&self) -> usize {
        self.gate.running()
    }
    /// Whether compiled code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
    /// sha256 over the component, manifest and signature files it was
    /// loaded from (see [`crate::plugin::source_digest`]).
    pub fn source_digest(&self) -> &str {
        &self.source_digest
    }
    /// When it was loaded, in milliseconds since the Unix epoch.
    pub fn loaded_at_ms(&self) -> u64 {
        self.loaded_at_ms
    }
    /// The trusted publisher whose signature verified at load; `None` for
    /// a plugin loaded unsigned or unverified.
    pub fn publisher(&self) -> Option<&str> {
        self.publisher.as_deref()
    }
    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }
    pub(crate) fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }
}

/// The outcome of [`Runtime::deploy`].
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The version now serving.
    pub plugin: Arc<Plugin>,
    /// Versions it retired (calls in flight on them finish).
    pub retired: Vec<Arc<Plugin>>,
}

/// A plugin file that did not load, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadFailure {
    pub plugin: String,
    pub path: PathBuf,
    pub error: String,
    pub at_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A named, configured instance of a plugin. Connections of the same plugin
/// share code but nothing else.
#[derive(Debug)]
pub struct Connection {
    name: Arc<str>,
    plugin: Arc<Plugin>,
    rights: EffectiveRights,
    broker: BrokerCtx,
    redactor: Arc<Redactor>,
    log_rate: Arc<LogRate>,
}

impl Connection {
    /// The connection's name, as routes and commands address it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The plugin it runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
    /// The connection's resolved secrets (requested and granted only).
    pub fn secrets(&self) -> &ConnectionSecrets {
        &self.broker.secrets.secrets
    }
    /// The connection's rate-limit buckets (requested and granted only).
    pub fn rate_limits(&self) -> &ConnectionRateLimits {
        &self.broker.rate_limit.buckets
    }
    pub(crate) fn log_rate(&self) -> &Arc<LogRate> {
        &self.log_rate
    }
    pub(crate) fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
    /// What this connection may use: the plugin's requests ∩ its grants.
    pub fn rights(&self) -> &EffectiveRights {
        &self.rights
    }
    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }
    pub(crate) fn broker(&self) -> &BrokerCtx {
        &self.broker
    }
}

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    limits: Limits,
    cache_dir: Option<PathBuf>,
    secret_provider: Option<Arc<dyn SecretProvider>>,
    network: Option<Network>,
    state_path: Option<PathBuf>,
    observers: Vec<Arc<dyn Observer>>,
    trust: TrustPolicy,
    monitor: Option<Monitor>,
    metrics: Option<Arc<Metrics>>,
    audit: Option<Arc<AuditLog>>,
    without_epochs: bool,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Invocation limits. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Directory for precompiled components. Default: none (compile on
    /// every load).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Where secret values come from. Default: [`EnvOrFile`].
    pub fn secret_provider(mut self, provider: Arc<dyn SecretProvider>) -> Self {
        self.secret_provider = Some(provider);
        self
    }

    /// How outbound HTTP reaches the network (resolver, dialer). Default:
    /// [`Network::default`], the system resolver and direct connections.
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// The SQLite file holding connection state. Default: a private
    /// in-memory database, lost when the runtime drops.
    pub fn state_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_path = Some(path.into());
        self
    }

    /// Adds an observer of invocations, egress, brokered capabilities and
    /// records (metrics, audit, monitoring). Default: none.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Which plugins may load, by signature. Default:
    /// [`TrustPolicy::default`] (signatures not required, no publishers).
    pub fn trust(mut self, policy: TrustPolicy) -> Self {
        self.trust = policy;
        self
    }

    /// Monitors the runtime with `monitor` (also registered as an
    /// observer), reachable through [`Runtime::monitor`]. Default: none.
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.observers.push(Arc::new(monitor.clone()));
        self.monitor = Some(monitor);
        self
    }

    /// Counts into `metrics` (registered as an observer) and hands it out
    /// as [`Runtime::metrics`]. Default: none.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.observers.push(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Records the audit trail into `audit` (registered as an observer)
    /// and hands it out as [`Runtime::audit`]. Default: none.
    pub fn audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.observers.push(audit.clone());
        self.audit = Some(audit);
        self
    }

    /// Benchmarks only: no epoch interruption, so **deadlines do not stop
    /// guest code** (see [`SharedEngine::with_epochs`]). The benchmark suite
    /// uses it to measure what the deadline checks cost.
    #[doc(hidden)]
    pub fn without_epoch_deadlines_for_benchmarks(mut self) -> Self {
        self.without_epochs = true;
        self
    }

    /// Creates the engine and linker.
    pub fn build(self) -> Result<Runtime, LoadError> {
        self.limits.validate().map_err(LoadError::Config)?;
        let engine = SharedEngine::with_epochs(&self.limits, !self.without_epochs)
            .map_err(|e| LoadError::Config(format!("cannot create engine: {e:#}")))?;
        let mut linker = Linker::new(engine.engine());
        let link = |linker: &mut Linker<InvocationState>| -> wasmtime::Result<()> {
            // WASI p2 with nothing granted, so guests from any toolchain
            // link; the context in InvocationState denies every resource.
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            crate::host::log::add_to_linker(linker)?;
            crate::host::config::add_to_linker(linker)?;
            crate::host::secrets::add_to_linker(linker)?;
            crate::host::state::add_to_linker(linker)?;
            crate::host::rate_limit::add_to_linker(linker)?;
            crate::host::http::add_to_linker(linker)?;
            Ok(())
        };
        link(&mut linker).map_err(|e| LoadError::Config(format!("cannot link host: {e:#}")))?;
        let state = match &self.state_path {
            Some(path) => StateStore::open(path),
            None => StateStore::in_memory(),
        }
        .map_err(|e| LoadError::Config(format!("cannot open the state store: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits: self.limits,
                cache: self.cache_dir.map(CompileCache::new),
                secret_provider: self.secret_provider.unwrap_or_else(|| Arc::new(EnvOrFile)),
                network: self.network.unwrap_or_default(),
                state: Some(state),
                registry: RwLock::default(),
                deploy_lock: tokio::sync::Mutex::new(()),
                load_failures: Mutex::default(),
                next_invocation: AtomicU64::new(1),
                observers: Observers::new(self.observers),
                trust: self.trust,
                monitor: self.monitor,
                metrics: self.metrics,
                audit: self.audit,
            }),
        })
    }
}

/// Loads connector plugins and calls them, each call in a fresh instance.
/// Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: SharedEngine,
    linker: Linker<InvocationState>,
    limits: Limits,
    cache: Option<CompileCache>,
    secret_provider: Arc<dyn SecretProvider>,
    network: Network,
    state: Option<Arc<StateStore>>,
    registry: RwLock<Registry>,
    /// Serialises hot loads (compilation itself runs concurrently).
    deploy_lock: tokio::sync::Mutex<()>,
    load_failures: Mutex<BTreeMap<PathBuf, LoadFailure>>,
    next_invocation: AtomicU64,
    observers: Observers,
    trust: TrustPolicy,
    monitor: Option<Monitor>,
    metrics: Option<Arc<Metrics>>,
    audit: Option<Arc<AuditLog>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .field("cache", &self.cache)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder with default limits and no compile cache.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// A runtime configured from `config`, with every plugin in the plugin
    /// directory and under `[plugins]` loaded and every connection created.
    pub async fn from_config(config: &SwitchyardConfig) -> Result<Runtime, LoadError> {
        let mut builder = Runtime::builder()
            .limits(config.limits.clone())
            .cache_dir(config.cache_dir())
            .state_path(config.state_path())
            .trust(TrustPolicy::from_config(&config.trust).map_err(LoadError::Config)?)
            .metrics(Arc::new(Metrics::new()));
        if config.audit.enabled {
            let audit = AuditLog::open(&config.audit_path(), config.audit.retention())
                .map_err(|e| LoadError::Config(format!("[audit]: {e}")))?;
            builder = builder.audit(Arc::new(audit));
        }
        if config.monitoring.enabled {
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
            builder = builder.monitor(monitor);
        }
        let runtime = builder.build()?;
        if let Some(monitor) = runtime.monitor() {
            monitor
                .start(runtime.secret_provider())
                .map_err(|e| LoadError::Config(format!("monitoring: {e}")))?;
        }
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
            if let Some((_, existing)) = files.iter().find(|(n, p)| n == name && p != &plugin.path)
            {
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
        for (name, path) in &files {
            runtime.load_plugin(name, path).await?;
        }
        for (name, connection) in &config.connections {
            let values = connection
                .values()
                .map_err(|e| LoadError::Config(format!("connections.{name}.config: {e}")))?;
            runtime.add_connection_with_grants(
                name,
                &connection.plugin,
                values,
                &connection.grants,
            )?;
        }
        let named: Vec<String> = config
            .connections
            .values()
            .map(|c| c.plugin.clone())
            .collect();
        let names: BTreeSet<&String> = files.iter().map(|(name, _)| name).collect();
        for name in names {
            let has_connection = named.contains(name) || config.connections.contains_key(name);
            let plugin = runtime.plugin(name).expect("loaded above");
            if has_connection {
                continue;
            }
            if needs_grants(&plugin) {
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
        Ok(runtime)
    }

    /// Where secret values come from.
    pub fn secret_provider(&self) -> &dyn SecretProvider {
        &*self.inner.secret_provider
    }

    /// The monitor, when monitoring is on.
    pub fn monitor(&self) -> Option<&Monitor> {
        self.inner.monitor.as_ref()
    }

    /// The observers events are reported to.
    pub fn observers(&self) -> &Observers {
        &self.inner.observers
    }

    /// The Prometheus metrics, when the runtime collects them
    /// ([`RuntimeBuilder::metrics`]; [`Runtime::from_config`] always does).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.inner.metrics.as_ref()
    }

    /// The audit trail, when the runtime keeps one
    /// ([`RuntimeBuilder::audit`]; `[audit] enabled`, the default, in
    /// [`Runtime::from_config`]).
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.inner.audit.as_ref()
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The wasmtime engine (for embedders that inspect components).
    pub fn engine(&self) -> &wasmtime::Engine {
        self.inner.engine.engine()
    }

    /// The signature policy plugins load under.
    pub fn trust(&self) -> &TrustPolicy {
        &self.inner.trust
    }

    /// The compile cache, if one is configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    /// Validates, compiles and registers the component at `path` as `name`,
    /// then asks it to describe itself. Another version of the same plugin
    /// may be loaded side by side; the same version twice is a
    /// [`LoadError::Conflict`] (use [`Runtime::deploy`] to replace).
    pub async fn load_plugin(&self, name: &str, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        Ok(self.deploy(name, path, DeployMode::Add).await?.plugin)
    }

    /// Loads the component at `path` as a version of plugin `name` while
    /// the current versions keep serving, then swaps it in atomically with
    /// a variant of every connection of the plugin; `mode` says which
    /// versions it retires. Compilation runs on a blocking thread, off the
    /// request path. On any failure nothing changes and the reason is kept
    /// in [`Runtime::load_failures`] until the file loads.
    pub async fn deploy(
        &self,
        name: &str,
        path: &Path,
        mode: DeployMode,
    ) -> Result<Deployed, LoadError> {
        let result = self.deploy_inner(name, path, mode, None).await;
        let mut failures = self.inner.load_failures.lock().unwrap();
        match &result {
            Ok(_) => {
                failures.remove(path);
            }
            Err(e) => {
                tracing::warn!(plugin = name, path = %path.display(), error = %e, "plugin not loaded; the loaded versions keep serving");
                failures.insert(
                    path.to_owned(),
                    LoadFailure {
                        plugin: name.to_owned(),
                        path: path.to_owned(),
                        error: e.to_string(),
                        at_ms: now_ms(),
                    },
                );
            }
        }
        result
    }

    /// Like [`Runtime::deploy`] for a component staged outside the plugin
    /// directory (an upload): once it compiled, described itself and every
    /// connection of the plugin accepts it, the component and its side
    /// files move into `dir` as `<name>@<version>.wasm` (and
    /// `.manifest.toml`, `.sig`), so a restart loads the same set.
    pub async fn deploy_into(
        &self,
        name: &str,
        staged: &Path,
        dir: &Path,
        mode: DeployMode,
    ) -> Result<Deployed, LoadError> {
        let result = self.deploy_inner(name, staged, mode, Some(dir)).await;
        if let Err(e) = &result {
            tracing::warn!(plugin = name, error = %e, "upload not loaded; the loaded versions keep serving");
        }
        result
    }

    async fn deploy_inner(
        &self,
        name: &str,
        path: &Path,
        mode: DeployMode,
        place_into: Option<&Path>,
    ) -> Result<Deployed, LoadError> {
        if name.is_empty() || name.contains(['@', '/']) {
            return Err(LoadError::Config(format!(
                "plugin name `{name}` is not valid: it must be non-empty without `@` or `/`"
            )));
        }
        let mut plugin = self.prepare_plugin(name, path).await?;
        // One swap at a time, so the variants built below match the
        // registry they are installed into.
        let _one_at_a_time = self.inner.deploy_lock.lock().await;
        let connections = {
            let registry = self.inner.registry.read().unwrap();
            if mode == DeployMode::Add && registry.has_version(name, plugin.version()) {
                return Err(LoadError::Conflict(format!(
                    "plugin `{name}` version {} is already loaded",
                    plugin.version()
                )));
            }
            registry.connections_of(name)
        };
        if let Some(dir) = place_into {
            // Every connection must accept it before any file moves.
            let candidate = Arc::new(plugin);
            for (connection, spec, newest) in &connections {
                self.build_connection(connection, spec, &candidate, newest.as_deref())?;
            }
            plugin = Arc::into_inner(candidate).expect("variants dropped");
            plugin.path = place_files(path, dir, name, plugin.version())?;
        }
        let plugin = Arc::new(plugin);
        let mut variants = Vec::with_capacity(connections.len());
        for (connection, spec, newest) in connections {
            let variant = self.build_connection(&connection, &spec, &plugin, newest.as_deref())?;
            variants.push((connection, Arc::new(variant)));
        }
        let retired = self
            .inner
            .registry
            .write()
            .unwrap()
            .install(plugin.clone(), variants, mode);
        tracing::info!(
            plugin = name,
            version = %plugin.version,
            wit = plugin.summary.wit_version.as_deref().unwrap_or("?"),
            cached = plugin.from_cache,
            path = %plugin.path.display(),
            retired = ?retired.iter().map(|p| p.version()).collect::<Vec<_>>(),
            "plugin loaded"
        );
        Ok(Deployed { plugin, retired })
    }

    /// Gives plugin `name` a connection of its own name if no connection
    /// runs it, as [`Runtime::from_config`] does at start-up, unless it
    /// needs grants. For plugins that arrive while the host runs.
    pub fn ensure_default_connection(&self, name: &str) {
        let Some(plugin) = self.plugin(name) else {
            return;
        };
        let registry = self.inner.registry.read().unwrap();
        if !registry.connections_of(name).is_empty() || registry.has_connection(name) {
            return;
        }
        drop(registry);
        if needs_grants(&plugin) {
            tracing::warn!(
                plugin = name,
                "plugin needs grants (HTTP, secrets, state or rate limits); add a [connections.<name>] block with grants to use it"
            );
            return;
        }
        if let Err(e) = self.add_connection(name, name, BTreeMap::new()) {
            tracing::warn!(plugin = name, error = %e, "no default connection");
        }
    }

    /// Compiles (on a blocking thread) and describes one plugin version.
    async fn prepare_plugin(&self, name: &str, path: &Path) -> Result<Plugin, LoadError> {
        let source_digest = source_digest(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let inner = self.inner.clone();
        let file = path.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            load_component(
                inner.engine.engine(),
                &inner.linker,
                &file,
                inner.cache.as_ref(),
                &inner.trust,
            )
        })
        .await
        .map_err(|e| LoadError::Config(format!("compiling {}: {e}", path.display())))??;
        let mut plugin = Plugin {
            name: name.into(),
            version: "unknown".into(),
            path: path.to_owned(),
            summary: loaded.summary,
            manifest: loaded.manifest,
            publisher: loaded.publisher,
            info: ConnectorInfo {
                name: name.into(),
                version: "unknown".into(),
                description: String::new(),
                roles: Vec::new(),
                actions: Vec::new(),
                streams: Vec::new(),
            },
            from_cache: loaded.from_cache,
            loaded_at_ms: now_ms(),
            source_digest,
            pre: loaded.pre,
            gate: Gate::new(&self.inner.limits),
        };
        // Describe through a throwaway connection so the call runs under
        // the same limits and isolation as any other.
        let probe_name: Arc<str> = format!("{name}#describe").into();
        let probe = Connection {
            broker: BrokerCtx::deny_all(probe_name.clone(), &self.inner.limits),
            name: probe_name,
            plugin: Arc::new(plugin),
            rights: EffectiveRights::default(),
            redactor: Arc::default(),
            log_rate: Arc::default(),
        };
        let info = match self.run(&probe, Call::Describe).await {
            Ok(Output::Describe(info)) => info,
            Ok(other) => return Err(LoadError::Config(unexpected(other).to_string())),
            Err(e) => {
                return Err(LoadError::Invalid {
                    path: path.to_owned(),
                    reason: format!("`describe` failed: {e}"),
                });
            }
        };
        let Connection {
            plugin: probe_plugin,
            ..
        } = probe;
        plugin = Arc::into_inner(probe_plugin).expect("no other references to a new plugin");
        if info.version.is_empty() || info.version.contains(['@', '/']) {
            return Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "`describe` gave version `{}`; a version must be non-empty without `@` or `/` (semver recommended)",
                    info.version
                ),
            });
        }
        plugin.version = info.version.as_str().into();
        plugin.info = info;
        Ok(plugin)
    }

    /// Removes `version` of plugin `name` (every version when `None`) and
    /// the connection variants running it. Calls in flight finish; the
    /// connections stay configured and run the plugin again when a version
    /// is loaded. Returns what was removed.
    pub fn remove_plugin(&self, name: &str, version: Option<&str>) -> Vec<Arc<Plugin>> {
        let removed = self.inner.registry.write().unwrap().remove(name, version);
        for plugin in &removed {
            tracing::info!(plugin = name, version = plugin.version(), "plugin removed");
        }
        removed
    }

    /// Plugin files that failed to load (or reload) and why, until they
    /// load.
    pub fn load_failures(&self) -> Vec<LoadFailure> {
        self.inner
            .load_failures
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    /// Creates connection `name` running `plugin` with `config` and no
    /// grants.
    pub fn add_connection(
        &self,
        name: &str,
        plugin: &str,
        config: BTreeMap<String, String>,
    ) -> Result<Arc<Connection>, LoadError> {
        self.add_connection_with_grants(name, plugin, config, &Grants::default())
    }

    /// Creates connection `name` running `plugin` with `config`; it may use
    /// what the plugin requests and `grants` allows. It gets a variant for
    /// every loaded version of the plugin (and for versions loaded later).
    pub fn add_connection_with_grants(
        &self,
        name: &str,
        plugin: &str,
        config: BTreeMap<String, String>,
        grants: &Grants,
    ) -> Result<Arc<Connection>, LoadError> {
        if name.is_empty() || name.contains(['@', '/', '#']) {
            return Err(LoadError::Config(format!(
                "connection name `{name}` is not valid: it must be non-empty without `@`, `/` or `#`"
            )));
        }
        let versions = self.inner.registry.read().unwrap().plugin_versions(plugin);
        if versions.is_empty() {
            return Err(LoadError::Config(format!(
                "connection `{name}` names plugin `{plugin}`, which is not loaded; put {plugin}.wasm in the plugin dir or add [plugins.{plugin}]"
            )));
        }
        let spec = ConnectionSpec {
            plugin: plugin.to_owned(),
            config,
            grants: grants.clone(),
        };
        let mut variants: Vec<Arc<Connection>> = Vec::with_capacity(versions.len());
        for version in &versions {
            let previous = variants.last().map(|c| &**c);
            variants.push(Arc::new(
                self.build_connection(name, &spec, version, previous)?,
            ));
        }
        let newest = variants.last().cloned().expect("one per version");
        let mut registry = self.inner.registry.write().unwrap();
        if registry.has_connection(name) {
            return Err(LoadError::Conflict(format!(
                "connection `{name}` already exists"
            )));
        }
        registry.add_connection(name, spec, variants);
        Ok(newest)
    }

    /// One variant of connection `name`: `spec` on `plugin`. Shares the
    /// log budget and, when the buckets are the same, the rate limits of
    /// `previous` (another variant of the same connection).
    fn build_connection(
        &self,
        name: &str,
        spec: &ConnectionSpec,
        plugin: &Arc<Plugin>,
        previous: Option<&Connection>,
    ) -> Result<Connection, LoadError> {
        let grants = &spec.grants;
        let rights = EffectiveRights::new(plugin.manifest(), grants)
            .map_err(|e| LoadError::Config(format!("connection `{name}`: {e}")))?;
        if !rights.missing.is_empty() {
            tracing::warn!(
                connection = name,
                plugin = plugin.name(),
                version = plugin.version(),
                missing = %rights.missing.join(", "),
                "the plugin requests rights this connection is not granted; they stay denied"
            );
        }
        check_imports_granted(name, plugin, &rights)?;
        // Resolve only what is both requested and granted.
        let in_connection = |e: String| LoadError::Config(format!("connection `{name}`: {e}"));
        let wanted = only(&grants.secrets, &rights.secrets);
        let secrets = ConnectionSecrets::resolve(&wanted, &*self.inner.secret_provider)
            .map_err(|e| in_connection(e.to_string()))?;
        let redactor = Arc::new(secrets.redactor());
        let secrets = Arc::new(secrets);
        let rate_limits = match previous {
            Some(p) if p.rights.rate_limits == rights.rate_limits => {
                p.broker.rate_limit.buckets.clone()
            }
            _ => Arc::new(
                ConnectionRateLimits::new(&only(&grants.rate_limits, &rights.rate_limits))
                    .map_err(in_connection)?,
            ),
        };
        let connection_name: Arc<str> = name.into();
        let observe = ObserveCtx::new(
            self.inner.observers.clone(),
            plugin.name_arc(),
            plugin.version_arc(),
            connection_name.clone(),
        );
        let state = match (&self.inner.state, rights.state) {
            (Some(store), true) => Some(store.namespace(name)),
            (None, true) => {
                return Err(in_connection(
                    "state is granted but the runtime has no state store".into(),
                ));
            }
            _ => None,
        };
        let egress = Egress::new(
            plugin.name_arc(),
            connection_name.clone(),
            rights.clone(),
            secrets.clone(),
            rate_limits.clone(),
            grants.retry.clone(),
            &self.inner.limits,
            self.inner.network.clone(),
        )
        .observed(self.inner.observers.clone(), plugin.version_arc());
        let broker = BrokerCtx {
            config: ConfigCtx::new(spec.config.clone()),
            secrets: SecretsCtx {
                connection: connection_name.clone(),
                secrets,
                observe: observe.clone(),
            },
            state: StateCtx {
                connection: connection_name.clone(),
                namespace: state,
                observe: observe.clone(),
            },
            rate_limit: RateLimitCtx {
                connection: connection_name.clone(),
                buckets: rate_limits,
                max_wait: std::time::Duration::from_millis(self.inner.limits.rate_limit_wait_ms),
                observe,
            },
            egress: Arc::new(egress),
        };
        Ok(Connection {
            name: connection_name,
            plugin: plugin.clone(),
            rights,
            broker,
            redactor,
            log_rate: previous.map(|p| p.log_rate.clone()).unwrap_or_default(),
        })
    }

    /// The newest loaded version of plugin `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.inner.registry.read().unwrap().plugin(name)
    }

    /// Every loaded version of plugin `name`, oldest first.
    pub fn plugin_versions(&self, name: &str) -> Vec<Arc<Plugin>> {
        self.inner.registry.read().unwrap().plugin_versions(name)
    }

    /// Every loaded plugin version, by name then version.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.inner.registry.read().unwrap().plugins()
    }

    /// The connection at `address`: `name` runs the newest version of its
    /// plugin, `name@version` that version.
    pub fn connection(&self, address: &str) -> Option<Arc<Connection>> {
        self.inner.registry.read().unwrap().connection(address)
    }

    /// Every connection (its newest variant), sorted by name.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.inner.registry.read().unwrap().connections()
    }

    /// Every variant of connection `name`, oldest version first.
    pub fn connection_versions(&self, name: &str) -> Vec<Arc<Connection>> {
        self.inner
            .registry
            .read()
            .unwrap()
            .connection_versions(name)
    }

    /// Calls `action` on connection `connection` with `input` (JSON by
    /// convention) and returns the connector's output.
    pub async fn call_action(
        &self,
        connection: &str,
        action: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let call = Call::Action {
            action: action.to_owned(),
            input: input.to_vec(),
        };
        self.call(connection, call).await?.into_action()
    }

    /// Hands an inbound webhook to the connection.
    pub async fn handle_webhook(
        &self,
        connection: &str,
        request: WebhookRequest,
    ) -> Result<Vec<Message>, InvokeError> {
        self.call(connection, Call::Webhook(request))
            .await?
            .into_messages()
    }

    /// Transforms a batch of messages.
    pub async fn transform(
        &self,
        connection: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, InvokeError> {
        self.call(connection, Call::Transform(messages))
            .await?
            .into_messages()
    }

    /// Reads the next page of a stream.
    pub async fn read(&self, connection: &str, request: ReadRequest) -> Result<Page, InvokeError> {
        match self.call(connection, Call::Read(request)).await? {
            Output::Page(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a batch of messages.
    pub async fn write(
        &self,
        connection: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<WriteOutcome>, InvokeError> {
        match self.call(connection, Call::Write(messages)).await? {
            Output::Write(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a [`Session`]: one instance reused across calls. Faster, but
    /// calls are not isolated from each other.
    pub async fn session(&self, connection: &str) -> Result<Session, InvokeError> {
        let connection = self.lookup(connection)?;
        let id = self.inner.next_invocation.fetch_add(1, Ordering::Relaxed);
        Session::start(self.engine(), &self.inner.limits, &connection, id).await
    }

    fn lookup(&self, connection: &str) -> Result<Arc<Connection>, InvokeError> {
        self.connection(connection)
            .ok_or_else(|| InvokeError::UnknownConnection(connection.to_owned()))
    }

    async fn call(&self, connection: &str, call: Call) -> Result<Output, InvokeError> {
        let connection = self.lookup(connection)?;
        self.run(&connection, call).await
    }

    async fn run(&self, connection: &Connection, call: Call) -> Result<Output, InvokeError> {
        let id = self.inner.next_invocation.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let pattern = call_kind(&call);
        let action = match &call {
            Call::Action { action, .. } => Some(action.clone()),
            _ => None,
        };
        let plugin = connection.plugin();
        let span = tracing::info_span!(
            "invocation",
            plugin = plugin.name(),
            version = plugin.version(),
            connection = connection.name(),
            pattern,
            invocation = id,
        );
        let result = invoke(self.engine(), &self.inner.limits, connection, id, call)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let _entered = span.enter();
        let elapsed_us = elapsed.as_micros() as u64;
        match &result {
            Ok(_) => tracing::debug!(elapsed_us, "invocation ok"),
            Err(e) => tracing::warn!(
                elapsed_us,
                error.kind = e.kind(),
                error = %e,
                "invocation failed"
            ),
        }
        self.inner.observers.invocation(&InvocationEvent {
            plugin: plugin.name(),
            version: plugin.version(),
            connection: connection.name(),
            pattern,
            action: action.as_deref(),
            invocation: id,
            elapsed,
            error: result.as_ref().err(),
        });
        result
    }
}

/// Moves a staged component and its side files into `dir` as
/// `<name>@<version>.*`; returns the component's new path.
fn place_files(staged: &Path, dir: &Path, name: &str, version: &str) -> Result<PathBuf, LoadError> {
    let target = dir.join(format!("{name}@{version}.wasm"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| LoadError::Read { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (from, to) in side_files(staged).iter().zip(side_files(&target)) {
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No such side file in the upload: none may stay behind
                // from an earlier upload of this version.
                let _ = std::fs::remove_file(&to);
            }
            Err(e) => return Err(io(&to)(e)),
        }
    }
    // The component last: a watcher that sees it sees its side files.
    std::fs::rename(staged, &target).map_err(io(&target))?;
    Ok(target)
}

/// The `*.wasm` files of a plugin directory, sorted.
pub(crate) fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

/// The entries of `granted` whose names are in `effective`.
/// Refuses a connection whose plugin imports a brokered interface the
/// connection has no right to, naming the grant that would allow it.
fn check_imports_granted(
    connection: &str,
    plugin: &Plugin,
    rights: &EffectiveRights,
) -> Result<(), LoadError> {
    let grants = format!("[connections.{connection}.grants]");
    let table = |key: &str| format!("[connections.{connection}.grants.{key}.<name>]");
    for import in &plugin.summary.imports {
        let needed = if import.starts_with("wasi:http/outgoing-handler") {
            (!rights.allows_http()).then(|| {
                format!("`allow = [\"https://host\"]` under {grants} (and the same in the manifest's `http`)")
            })
        } else if import.starts_with("switchyard:connector/secrets@") {
            rights.secrets.is_empty().then(|| {
                format!(
                    "a secret as {} (and its name in the manifest's `secrets`)",
                    table("secrets")
                )
            })
        } else if import.starts_with("switchyard:connector/state@") {
            (!rights.state).then(|| format!("`state = true` under {grants} (and in the manifest)"))
        } else if import.starts_with("switchyard:connector/rate-limit@") {
            rights.rate_limits.is_empty().then(|| {
                format!(
                    "a bucket as {} (and its name in the manifest's `rate_limits`)",
                    table("rate_limits")
                )
            })
        } else {
            None
        };
        if let Some(grant) = needed {
            return Err(LoadError::NotGranted {
                connection: connection.to_owned(),
                plugin: plugin.name.to_string(),
                import: import.clone(),
                grant,
            });
        }
    }
    Ok(())
}

/// Whether a plugin imports any brokered interface that needs a grant.
pub(crate) fn needs_grants(plugin: &Plugin) -> bool {
    check_imports_granted("_", plugin, &EffectiveRights::default()).is_err()
}

fn only<T: Clone>(
    granted: &BTreeMap<String, T>,
    effective: &BTreeSet<String>,
) -> BTreeMap<String, T> {
    granted
        .iter()
        .filter(|(name, _)| effective.contains(*name))
        .map(|(name, grant)| (name.clone(), grant.clone()))
        .collect()
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Describe => "describe",
        Call::Action { .. } => "action",
        Call::Webhook(_) => "webhook",
        Call::Transform(_) => "transform",
        Call::Read(_) => "read",
        Call::Write(_) => "write",
    }
}
