//! Connections: a plugin bound to the broker under the operator's grants,
//! one variant per loaded version.

use super::{Connection, Plugin, Runtime};
use crate::error::LoadError;
use crate::registry::ConnectionSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_broker::capabilities::{EffectiveRights, Grants};
use switchyard_broker::{BrokerCtx, ConnectionBroker};

impl Runtime {
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
        check_connection_name(name)?;
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
    pub(super) fn build_connection(
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
        let connection_name: Arc<str> = name.into();
        let keep_buckets = match previous {
            Some(p) if p.rights.rate_limits == rights.rate_limits => {
                Some(p.broker.rate_limits().clone())
            }
            _ => None,
        };
        let inner = &self.inner;
        let broker = BrokerCtx::for_connection(ConnectionBroker {
            plugin: plugin.name_arc(),
            version: plugin.version_arc(),
            connection: connection_name.clone(),
            rights: &rights,
            grants,
            config: spec.config.clone(),
            secret_provider: &*inner.secret_provider,
            state: inner.state.as_ref(),
            network: inner.network.clone(),
            limits: (&inner.limits).into(),
            keep_buckets,
            observer: inner.observers.for_broker(),
            tokens: inner.tokens.as_ref(),
        })
        .map_err(|e| LoadError::Config(format!("connection `{name}`: {e}")))?;
        Ok(Connection {
            name: connection_name,
            plugin: plugin.clone(),
            rights,
            broker,
            log_rate: previous.map(|p| p.log_rate.clone()).unwrap_or_default(),
            share: previous.map_or_else(
                || Arc::new(tokio::sync::Semaphore::new(inner.limits.connection_share())),
                |p| p.share.clone(),
            ),
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

    /// Whether connection `name` is configured, whether or not a version
    /// of its plugin is loaded to run it (see
    /// [`Runtime::add_waiting_connection`]).
    pub fn has_connection(&self, name: &str) -> bool {
        self.inner.registry.read().unwrap().has_connection(name)
    }

    /// Configures connection `name` of plugin `plugin` while no version of
    /// that plugin is loaded (its file failed to load at start-up): calls
    /// to it fail as an unknown connection, and it runs as soon as a
    /// version loads, its grants checked then like any new version's.
    pub fn add_waiting_connection(
        &self,
        name: &str,
        plugin: &str,
        config: BTreeMap<String, String>,
        grants: &Grants,
    ) -> Result<(), LoadError> {
        check_connection_name(name)?;
        let mut registry = self.inner.registry.write().unwrap();
        if registry.has_connection(name) {
            return Err(LoadError::Conflict(format!(
                "connection `{name}` already exists"
            )));
        }
        let spec = ConnectionSpec {
            plugin: plugin.to_owned(),
            config,
            grants: grants.clone(),
        };
        registry.add_connection(name, spec, Vec::new());
        tracing::warn!(
            connection = name,
            plugin,
            "connection waits for its plugin to load"
        );
        Ok(())
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
}

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

impl Plugin {
    /// Whether the plugin imports a brokered interface that needs a grant
    /// (it cannot run on a default connection).
    pub fn needs_grants(&self) -> bool {
        check_imports_granted("_", self, &EffectiveRights::default()).is_err()
    }
}

fn check_connection_name(name: &str) -> Result<(), LoadError> {
    if name.is_empty() || name.contains(['@', '/', '#']) {
        return Err(LoadError::Config(format!(
            "connection name `{name}` is not valid: it must be non-empty without `@`, `/` or `#`"
        )));
    }
    Ok(())
}
