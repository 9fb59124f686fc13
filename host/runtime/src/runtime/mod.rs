//! The [`Runtime`]: plugins, connections and the calls into them.
//!
//! Split by what each part does: [`builder`] makes a runtime, `deploy`
//! loads and retires plugin versions, `connections` binds plugins to the
//! broker under the operator's grants, `calls` runs invocations.

mod builder;
mod calls;
mod connections;
mod deploy;

pub use builder::RuntimeBuilder;

use crate::bindings::{ConnectorInfo, PluginPre};
use crate::cache::CompileCache;
use crate::engine::SharedEngine;
use crate::invoke::Gate;
use crate::limits::Limits;
use crate::observe::Observers;
use crate::plugin::ComponentSummary;
use crate::registry::Registry;
use crate::signing::TrustPolicy;
use crate::state::InvocationState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use switchyard_broker::BrokerCtx;
use switchyard_broker::capabilities::{EffectiveRights, PluginManifest};
use switchyard_broker::egress::Network;
use switchyard_broker::interfaces::log::LogRate;
use switchyard_broker::kv::StateBackend;
use switchyard_broker::rate::ConnectionRateLimits;
use switchyard_broker::secrets::{ConnectionSecrets, Redactor, SecretProvider};
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
    /// Of those, the CPU-bound ones running right now: at most
    /// `limits.cpu_bound_per_plugin`.
    pub fn cpu_bound_running(&self) -> usize {
        self.gate.cpu_bound_running()
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
    log_rate: Arc<LogRate>,
    /// The connection's share of its plugin's slots
    /// (`limits.max_concurrent_per_connection`), shared by its variants.
    pub(crate) share: Arc<tokio::sync::Semaphore>,
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
        self.broker.connection_secrets()
    }
    /// The connection's rate-limit buckets (requested and granted only).
    pub fn rate_limits(&self) -> &ConnectionRateLimits {
        self.broker.rate_limits()
    }
    pub(crate) fn log_rate(&self) -> &Arc<LogRate> {
        &self.log_rate
    }
    pub(crate) fn redactor(&self) -> &Arc<Redactor> {
        &self.broker.redactor
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
    state: Option<Arc<dyn StateBackend>>,
    registry: RwLock<Registry>,
    /// Serialises hot loads (compilation itself runs concurrently).
    deploy_lock: tokio::sync::Mutex<()>,
    /// Compiles running at once (`limits.compiles_in_flight`).
    compiles: tokio::sync::Semaphore,
    load_failures: Mutex<BTreeMap<PathBuf, LoadFailure>>,
    next_invocation: AtomicU64,
    observers: Observers,
    trust: TrustPolicy,
    tokens: Option<Arc<dyn switchyard_broker::oauth::TokenBroker>>,
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

    /// Where secret values come from.
    pub fn secret_provider(&self) -> &dyn SecretProvider {
        &*self.inner.secret_provider
    }

    /// The observers events are reported to.
    pub fn observers(&self) -> &Observers {
        &self.inner.observers
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
}
