//! [`RuntimeBuilder`]: the engine, linker and stores a runtime starts with.

use super::{Inner, Runtime};
use crate::cache::CompileCache;
use crate::engine::SharedEngine;
use crate::error::LoadError;
use crate::limits::Limits;
use crate::observe::{Observer, Observers};
use crate::signing::TrustPolicy;
use crate::state::InvocationState;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use switchyard_broker::egress::Network;
use switchyard_broker::kv::{StateBackend, StateStore};
use switchyard_broker::oauth::TokenBroker;
use switchyard_broker::secrets::{EnvOrFile, SecretProvider};
use wasmtime::component::Linker;

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    limits: Limits,
    cache_dir: Option<PathBuf>,
    secret_provider: Option<Arc<dyn SecretProvider>>,
    network: Option<Network>,
    state_path: Option<PathBuf>,
    state_backend: Option<Arc<dyn StateBackend>>,
    observers: Vec<Arc<dyn Observer>>,
    trust: TrustPolicy,
    without_epochs: bool,
    tokens: Option<Arc<dyn TokenBroker>>,
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

    /// Where connection state lives, instead of the SQLite file of
    /// [`state_path`](Self::state_path) (the cluster's shared store).
    /// The backend enforces its own quota.
    pub fn state_backend(mut self, backend: Arc<dyn StateBackend>) -> Self {
        self.state_backend = Some(backend);
        self
    }

    /// Adds an observer of invocations, egress and brokered capabilities
    /// (metrics, the audit trail and monitoring are observers). Default:
    /// none.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Who obtains OAuth access tokens for connections' `oauth` grants.
    /// Default: none, and a connection granted one does not load.
    pub fn tokens(mut self, tokens: Arc<dyn TokenBroker>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Which plugins may load, by signature. Default:
    /// [`TrustPolicy::default`] (signatures not required, no publishers).
    pub fn trust(mut self, policy: TrustPolicy) -> Self {
        self.trust = policy;
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
            use switchyard_broker::interfaces::{config, http, log, rate_limit, secrets, state};
            log::add_to_linker(linker)?;
            config::add_to_linker(linker)?;
            secrets::add_to_linker(linker)?;
            state::add_to_linker(linker)?;
            rate_limit::add_to_linker(linker)?;
            http::add_to_linker(linker)?;
            Ok(())
        };
        link(&mut linker).map_err(|e| LoadError::Config(format!("cannot link host: {e:#}")))?;
        let state: Arc<dyn StateBackend> = match self.state_backend {
            Some(backend) => backend,
            None => match &self.state_path {
                Some(path) => StateStore::open(path),
                None => StateStore::in_memory(),
            }
            .map_err(|e| LoadError::Config(format!("cannot open the state store: {e}")))?
            .with_quota(self.limits.state_quota()),
        };
        let compiles = tokio::sync::Semaphore::new(self.limits.compiles_in_flight);
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
                compiles,
                load_failures: Mutex::default(),
                next_invocation: AtomicU64::new(1),
                observers: Observers::new(self.observers),
                trust: self.trust,
                tokens: self.tokens,
            }),
        })
    }
}
