//! Loading, replacing and retiring plugin versions.

use super::{Connection, Deployed, LoadFailure, Plugin, Runtime, now_ms};
use crate::bindings::ConnectorInfo;
use crate::error::LoadError;
use crate::invoke::{Call, Gate, Output, unexpected};
use crate::plugin::{load_component, side_files, source_digest_with};
use crate::registry::DeployMode;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchyard_broker::BrokerCtx;
use switchyard_broker::capabilities::EffectiveRights;

impl Runtime {
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
    /// runs it, as the host does for every plugin at start-up, unless it
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
        if plugin.needs_grants() {
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
        let io = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        // Nothing reads a file whole before its length passed.
        let len = std::fs::metadata(path).map_err(io)?.len();
        crate::admission::check_file_size(path, len, &self.inner.limits)?;
        // Compiles in flight are bounded (`limits.compiles_in_flight`):
        // each may take a good part of the host's memory.
        let compile_slot = self
            .inner
            .compiles
            .acquire()
            .await
            .expect("the compile semaphore is never closed");
        let inner = self.inner.clone();
        let file = path.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            load_component(
                inner.engine.engine(),
                &inner.linker,
                &file,
                inner.cache.as_ref(),
                &inner.trust,
                &inner.limits,
            )
        })
        .await
        .map_err(|e| LoadError::Config(format!("compiling {}: {e}", path.display())))??;
        drop(compile_slot);
        // Of the bytes that were loaded, not of a second read.
        let component_sha256 = hex::decode(&loaded.summary.sha256).expect("sha256 is hex");
        let source_digest = source_digest_with(&component_sha256, path).map_err(io)?;
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
            broker: BrokerCtx::deny_all(probe_name.clone(), (&self.inner.limits).into()),
            name: probe_name,
            plugin: Arc::new(plugin),
            rights: EffectiveRights::default(),
            log_rate: Arc::default(),
            share: Arc::new(tokio::sync::Semaphore::new(
                self.inner.limits.connection_share(),
            )),
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
        let mut info = info;
        crate::plugin::check_description(&mut info).map_err(|reason| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("`describe` is refused: {reason}"),
        })?;
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

    /// Compiles running now, at most `limits.compiles_in_flight`.
    pub fn compiles_running(&self) -> usize {
        self.inner.limits.compiles_in_flight - self.inner.compiles.available_permits()
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
