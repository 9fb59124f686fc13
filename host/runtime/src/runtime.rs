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
use crate::observe::{InvocationEvent, ObserveCtx, Observer, Observers};
use crate::plugin::{ComponentSummary, load_component, plugin_name_from_path};
use crate::rate::ConnectionRateLimits;
use crate::secrets::{ConnectionSecrets, EnvOrFile, Redactor, SecretProvider};
use crate::state::{BrokerCtx, InvocationState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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
    from_cache: bool,
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
    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }
    pub(crate) fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }
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
    metrics: Option<Arc<Metrics>>,
    audit: Option<Arc<AuditLog>>,
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

    /// Creates the engine and linker.
    pub fn build(self) -> Result<Runtime, LoadError> {
        self.limits.validate().map_err(LoadError::Config)?;
        let engine = SharedEngine::new(&self.limits)
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
                plugins: RwLock::default(),
                connections: RwLock::default(),
                next_invocation: AtomicU64::new(1),
                observers: Observers::new(self.observers),
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
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    connections: RwLock<BTreeMap<String, Arc<Connection>>>,
    next_invocation: AtomicU64,
    observers: Observers,
    metrics: Option<Arc<Metrics>>,
    audit: Option<Arc<AuditLog>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .field("cache", &self.cache)
            .field("plugins", &self.plugins)
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
            .metrics(Arc::new(Metrics::new()));
        if config.audit.enabled {
            let audit = AuditLog::open(&config.audit_path(), config.audit.retention())
                .map_err(|e| LoadError::Config(format!("[audit]: {e}")))?;
            builder = builder.audit(Arc::new(audit));
        }
        let runtime = builder.build()?;
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let dir = config.plugin_dir();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Read {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "wasm")
                    && let Some(name) = plugin_name_from_path(&path)
                {
                    files.insert(name, path);
                }
            }
        }
        for (name, plugin) in &config.plugins {
            if let Some(existing) = files.get(name)
                && existing != &plugin.path
            {
                return Err(LoadError::Conflict(format!(
                    "plugin `{name}` is both {} (plugin dir) and {} ([plugins.{name}])",
                    existing.display(),
                    plugin.path.display()
                )));
            }
            files.insert(name.clone(), plugin.path.clone());
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
        for name in files.keys() {
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

    /// The compile cache, if one is configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    /// Validates, compiles and registers the component at `path` as `name`,
    /// then asks it to describe itself. Replaces nothing: a second plugin of
    /// the same name is a [`LoadError::Conflict`].
    pub async fn load_plugin(&self, name: &str, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        if self.inner.plugins.read().unwrap().contains_key(name) {
            return Err(LoadError::Conflict(format!(
                "plugin `{name}` is already loaded"
            )));
        }
        let manifest = PluginManifest::load_for(path).map_err(LoadError::Manifest)?;
        let loaded = load_component(
            self.engine(),
            &self.inner.linker,
            path,
            self.inner.cache.as_ref(),
        )?;
        let mut plugin = Plugin {
            name: name.into(),
            version: "unknown".into(),
            path: path.to_owned(),
            summary: loaded.summary,
            manifest,
            info: ConnectorInfo {
                name: name.into(),
                version: "unknown".into(),
                description: String::new(),
                roles: Vec::new(),
                actions: Vec::new(),
                streams: Vec::new(),
            },
            from_cache: loaded.from_cache,
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
        plugin.version = info.version.as_str().into();
        plugin.info = info;
        let plugin = Arc::new(plugin);
        tracing::info!(
            plugin = name,
            version = %plugin.version,
            wit = plugin.summary.wit_version.as_deref().unwrap_or("?"),
            cached = plugin.from_cache,
            path = %path.display(),
            "plugin loaded"
        );
        self.inner
            .plugins
            .write()
            .unwrap()
            .insert(name.to_owned(), plugin.clone());
        Ok(plugin)
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
    /// what the plugin requests and `grants` allows.
    pub fn add_connection_with_grants(
        &self,
        name: &str,
        plugin: &str,
        config: BTreeMap<String, String>,
        grants: &Grants,
    ) -> Result<Arc<Connection>, LoadError> {
        let Some(plugin_ref) = self.plugin(plugin) else {
            return Err(LoadError::Config(format!(
                "connection `{name}` names plugin `{plugin}`, which is not loaded; put {plugin}.wasm in the plugin dir or add [plugins.{plugin}]"
            )));
        };
        let rights = EffectiveRights::new(plugin_ref.manifest(), grants)
            .map_err(|e| LoadError::Config(format!("connection `{name}`: {e}")))?;
        if !rights.missing.is_empty() {
            tracing::warn!(
                connection = name,
                plugin,
                missing = %rights.missing.join(", "),
                "the plugin requests rights this connection is not granted; they stay denied"
            );
        }
        check_imports_granted(name, &plugin_ref, &rights)?;
        // Resolve only what is both requested and granted.
        let in_connection = |e: String| LoadError::Config(format!("connection `{name}`: {e}"));
        let wanted = only(&grants.secrets, &rights.secrets);
        let secrets = ConnectionSecrets::resolve(&wanted, &*self.inner.secret_provider)
            .map_err(|e| in_connection(e.to_string()))?;
        let redactor = Arc::new(secrets.redactor());
        let secrets = Arc::new(secrets);
        let rate_limits = Arc::new(
            ConnectionRateLimits::new(&only(&grants.rate_limits, &rights.rate_limits))
                .map_err(in_connection)?,
        );
        let connection_name: Arc<str> = name.into();
        let observe = ObserveCtx::new(
            self.inner.observers.clone(),
            plugin_ref.name_arc(),
            plugin_ref.version_arc(),
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
            plugin_ref.name_arc(),
            connection_name.clone(),
            rights.clone(),
            secrets.clone(),
            rate_limits.clone(),
            grants.retry.clone(),
            &self.inner.limits,
            self.inner.network.clone(),
        )
        .observed(self.inner.observers.clone(), plugin_ref.version_arc());
        let broker = BrokerCtx {
            config: ConfigCtx::new(config),
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
        let mut connections = self.inner.connections.write().unwrap();
        if connections.contains_key(name) {
            return Err(LoadError::Conflict(format!(
                "connection `{name}` already exists"
            )));
        }
        let connection = Arc::new(Connection {
            name: connection_name,
            plugin: plugin_ref,
            rights,
            broker,
            redactor,
            log_rate: Arc::default(),
        });
        connections.insert(name.to_owned(), connection.clone());
        Ok(connection)
    }

    /// The plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.inner.plugins.read().unwrap().get(name).cloned()
    }

    /// The connection called `name`.
    pub fn connection(&self, name: &str) -> Option<Arc<Connection>> {
        self.inner.connections.read().unwrap().get(name).cloned()
    }

    /// All connections, sorted by name.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.inner
            .connections
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect()
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
