//! What is live: plugin versions and the connections running them.
//!
//! One [`Registry`] sits behind one lock, so a hot load swaps a plugin
//! version and every connection variant that runs it in one step. Calls
//! hold an `Arc<Connection>` for their whole run: a call in flight
//! finishes on the version it started on, whatever is swapped meanwhile.
//!
//! Each connection has one variant per loaded version of its plugin,
//! addressed as `connection@version`; a bare `connection` is the newest
//! version (semver order; versions that are not semver sort below those
//! that are, then by text).

use crate::runtime::{Connection, Plugin};
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_broker::capabilities::Grants;

/// A plugin version as an ordering key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VersionKey {
    semver: Option<semver::Version>,
    text: String,
}

impl VersionKey {
    pub(crate) fn new(text: &str) -> Self {
        VersionKey {
            semver: semver::Version::parse(text).ok(),
            text: text.to_owned(),
        }
    }
}

/// What the operator configured for a connection; kept so a new plugin
/// version gets a variant with the same settings and grants.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// The plugin it runs.
    pub plugin: String,
    /// Settings the connector reads through `config`.
    pub config: BTreeMap<String, String>,
    /// Rights granted to it.
    pub grants: Grants,
}

/// One connection: its spec and a variant per loaded plugin version.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    pub spec: Arc<ConnectionSpec>,
    pub versions: BTreeMap<VersionKey, Arc<Connection>>,
}

/// How a newly loaded version relates to the versions already loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// Refuse if this version is already loaded; keep the others.
    Add,
    /// Keep other versions side by side; replace this version if loaded.
    SideBySide,
    /// Retire every other version of the plugin.
    Replace,
    /// Retire the versions that were loaded from the same file (the file
    /// now holds this one).
    ReplaceFile,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    plugins: BTreeMap<String, BTreeMap<VersionKey, Arc<Plugin>>>,
    connections: BTreeMap<String, ConnectionSlot>,
}

impl Registry {
    /// The newest loaded version of plugin `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name)?.values().next_back().cloned()
    }

    /// Every loaded version of plugin `name`, oldest first.
    pub fn plugin_versions(&self, name: &str) -> Vec<Arc<Plugin>> {
        self.plugins
            .get(name)
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every loaded plugin version, by name then version.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .values()
            .flat_map(|v| v.values().cloned())
            .collect()
    }

    /// `name` (the newest variant) or `name@version`.
    pub fn connection(&self, address: &str) -> Option<Arc<Connection>> {
        let (name, version) = match address.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (address, None),
        };
        let versions = &self.connections.get(name)?.versions;
        match version {
            Some(v) => versions.get(&VersionKey::new(v)).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }

    /// The newest variant of every connection that has one, by name.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.connections
            .values()
            .filter_map(|slot| slot.versions.values().next_back().cloned())
            .collect()
    }

    /// Every variant of connection `name`, oldest first.
    pub fn connection_versions(&self, name: &str) -> Vec<Arc<Connection>> {
        self.connections
            .get(name)
            .map(|slot| slot.versions.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn has_connection(&self, name: &str) -> bool {
        self.connections.contains_key(name)
    }

    pub fn has_version(&self, name: &str, version: &str) -> bool {
        self.plugins
            .get(name)
            .is_some_and(|v| v.contains_key(&VersionKey::new(version)))
    }

    /// Connections that run plugin `name`: name, spec and newest variant.
    pub fn connections_of(
        &self,
        plugin: &str,
    ) -> Vec<(String, Arc<ConnectionSpec>, Option<Arc<Connection>>)> {
        self.connections
            .iter()
            .filter(|(_, slot)| slot.spec.plugin == plugin)
            .map(|(name, slot)| {
                let newest = slot.versions.values().next_back().cloned();
                (name.clone(), slot.spec.clone(), newest)
            })
            .collect()
    }

    /// Adds connection `name` with a variant per version in `variants`.
    pub fn add_connection(
        &mut self,
        name: &str,
        spec: ConnectionSpec,
        variants: Vec<Arc<Connection>>,
    ) {
        let versions = variants
            .into_iter()
            .map(|c| (VersionKey::new(c.plugin().version()), c))
            .collect();
        let slot = ConnectionSlot {
            spec: Arc::new(spec),
            versions,
        };
        self.connections.insert(name.to_owned(), slot);
    }

    /// Installs `plugin` and its connection `variants` (by connection
    /// name) in one step; returns the versions it retired.
    pub fn install(
        &mut self,
        plugin: Arc<Plugin>,
        variants: Vec<(String, Arc<Connection>)>,
        mode: DeployMode,
    ) -> Vec<Arc<Plugin>> {
        let name = plugin.name().to_owned();
        let key = VersionKey::new(plugin.version());
        let versions = self.plugins.entry(name.clone()).or_default();
        let mut retired: Vec<Arc<Plugin>> = Vec::new();
        let others: Vec<VersionKey> = versions
            .iter()
            .filter(|(k, old)| {
                **k != key
                    && match mode {
                        DeployMode::Replace => true,
                        DeployMode::ReplaceFile => old.path() == plugin.path(),
                        DeployMode::Add | DeployMode::SideBySide => false,
                    }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &others {
            retired.extend(versions.remove(k));
        }
        retired.extend(versions.insert(key.clone(), plugin));
        for (connection, variant) in variants {
            if let Some(slot) = self.connections.get_mut(&connection) {
                for k in &others {
                    slot.versions.remove(k);
                }
                slot.versions.insert(key.clone(), variant);
            }
        }
        retired
    }

    /// Removes `version` of plugin `name` (every version when `None`) and
    /// the connection variants running it; returns what it removed.
    pub fn remove(&mut self, name: &str, version: Option<&str>) -> Vec<Arc<Plugin>> {
        let Some(versions) = self.plugins.get_mut(name) else {
            return Vec::new();
        };
        let keys: Vec<VersionKey> = match version {
            Some(v) => vec![VersionKey::new(v)],
            None => versions.keys().cloned().collect(),
        };
        let removed: Vec<Arc<Plugin>> = keys.iter().filter_map(|k| versions.remove(k)).collect();
        if versions.is_empty() {
            self.plugins.remove(name);
        }
        for slot in self.connections.values_mut() {
            if slot.spec.plugin == name {
                for k in &keys {
                    slot.versions.remove(k);
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::VersionKey;

    #[test]
    fn versions_order_by_semver_then_text() {
        let mut keys: Vec<VersionKey> = ["1.10.0", "1.2.0", "dev", "2.0.0-rc.1", "2.0.0", "0.9.0"]
            .iter()
            .map(|v| VersionKey::new(v))
            .collect();
        keys.sort();
        let texts: Vec<&str> = keys.iter().map(|k| k.text.as_str()).collect();
        assert_eq!(
            texts,
            ["dev", "0.9.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "2.0.0"]
        );
    }
}
