//! `switchyard.toml`: the operator's configuration.
//!
//! Every key is optional; a missing file means all defaults (see
//! [`SwitchyardConfig::default`]). Relative paths are resolved against the
//! directory of the config file.

use crate::access::AccessConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use switchyard_broker::capabilities::Grants;
use switchyard_flows::pipelines::{PipelineConfig, WebhookConfig};
use switchyard_flows::sync::SyncConfig;
use switchyard_runtime::limits::Limits;

/// The config file looked for when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "switchyard.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchyardConfig {
    /// Address the HTTP server binds. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where Switchyard keeps its own files (compile cache, state).
    /// Default: `.switchyard`.
    pub data_dir: PathBuf,
    /// Directory scanned for `*.wasm` plugins at start-up. Default:
    /// `<data_dir>/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// Load plugins that appear in or change in `plugin_dir` while the
    /// host runs, and retire those removed from it. Default: true.
    pub watch_plugin_dir: bool,
    /// Refuse to start when a plugin file fails to load. Default: false:
    /// as when hot loading, the file is logged and listed under the load
    /// failures (admin API, status page), its connections wait for it, and
    /// every other plugin serves, so a bad file cannot keep a restarted
    /// host down.
    pub strict_plugins: bool,
    /// Invocation limits. Default: see [`Limits`].
    pub limits: Limits,
    /// Plugins by name, in addition to those found in `plugin_dir`.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Named, configured instances of plugins. A plugin no connection names
    /// gets a default connection of its own name.
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Inbound webhook endpoints (`POST /v1/hooks/NAME`).
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Durable queue pipelines: transforms into a sink.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Scheduled batch syncs from a source into a sink.
    pub syncs: BTreeMap<String, SyncConfig>,
    /// The admin API (`/admin/v1`).
    pub admin: AdminConfig,
    /// Who may call actions and run syncs over HTTP. Default: nobody;
    /// see [`AccessConfig`].
    pub access: AccessConfig,
    /// `[trust]`: plugin signatures. Default: not required, no publishers.
    pub trust: switchyard_runtime::signing::TrustConfig,
    /// Volume, latency and reconciliation alerts. Default: on, with the
    /// defaults of [`MonitoringConfig`](switchyard_ops::monitor::MonitoringConfig)
    /// and no alert webhook.
    pub monitoring: switchyard_ops::monitor::MonitoringConfig,
    /// The audit trail in `<data_dir>/audit.sqlite`.
    pub audit: switchyard_ops::audit::AuditConfig,
    /// `[cluster]`: share webhooks, pipelines and syncs with other hosts
    /// on NATS JetStream. Default: none; the queue, cursors and dead
    /// letters live in `<data_dir>/queue.sqlite`, for this host alone.
    pub cluster: Option<switchyard_cluster::ClusterConfig>,
    /// `[telemetry]`: export the flows' spans over OTLP/HTTP. Default:
    /// none exported.
    pub telemetry: switchyard_ops::otlp::TelemetryConfig,
    /// `[oauth]`: the key sealing OAuth tokens at rest and the URL
    /// operators' browsers reach this host at. Default: see
    /// [`OAuthSettings`](switchyard_oauth::OAuthSettings).
    pub oauth: switchyard_oauth::OAuthSettings,
}

/// `[admin]`: the authenticated admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the bearer token comes from (`{ env = "VAR" }` or
    /// `{ file = "path" }`). Default: none, and the admin API refuses
    /// every request.
    pub token: Option<switchyard_broker::secrets::SecretGrant>,
}

impl Default for SwitchyardConfig {
    fn default() -> Self {
        SwitchyardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".switchyard"),
            plugin_dir: None,
            watch_plugin_dir: true,
            strict_plugins: false,
            limits: Limits::default(),
            plugins: BTreeMap::new(),
            connections: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            syncs: BTreeMap::new(),
            admin: AdminConfig::default(),
            access: AccessConfig::default(),
            trust: switchyard_runtime::signing::TrustConfig::default(),
            monitoring: switchyard_ops::monitor::MonitoringConfig::default(),
            audit: switchyard_ops::audit::AuditConfig::default(),
            cluster: None,
            telemetry: Default::default(),
            oauth: Default::default(),
        }
    }
}

/// One plugin: the code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path to the component file.
    pub path: PathBuf,
}

/// One connection: a plugin plus the settings it runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Name of the plugin this connection runs.
    pub plugin: String,
    /// Non-secret settings the connector reads through `config`. Scalars
    /// only; numbers and booleans are passed as their TOML text.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Rights granted to this connection; effective rights are these
    /// intersected with the plugin's manifest. Default: nothing.
    #[serde(default)]
    pub grants: Grants,
}

impl ConnectionConfig {
    /// The settings as strings, or the key that is not a scalar.
    pub fn values(&self) -> Result<BTreeMap<String, String>, String> {
        self.config
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_)
                    | toml::Value::Float(_)
                    | toml::Value::Boolean(_)
                    | toml::Value::Datetime(_) => value.to_string(),
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        return Err(format!(
                            "`{key}` must be a string, number or boolean, not a table or array"
                        ));
                    }
                };
                Ok((key.clone(), text))
            })
            .collect()
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl SwitchyardConfig {
    /// Loads `path`, or `switchyard.toml` in the working directory when
    /// `path` is `None`. A missing default file gives the defaults; a
    /// missing file the operator named is an error. Relative paths come
    /// back absolute, resolved against the file's directory (the working
    /// directory for the defaults).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // The defaults, resolved like a file's.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        // Absolute, so paths compare equal to what the plugin-dir watcher
        // reports whatever the working directory.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let base = std::path::absolute(parent.unwrap_or(Path::new("."))).map_err(|source| {
            ConfigError::Read {
                path: path.clone(),
                source,
            }
        })?;
        Self::parse(&text, &base).map_err(|message| ConfigError::Parse { path, message })
    }

    /// Parses TOML text, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: SwitchyardConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.limits.validate()?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.data_dir);
        if let Some(dir) = config.plugin_dir.as_mut() {
            resolve(dir);
        }
        for plugin in config.plugins.values_mut() {
            resolve(&mut plugin.path);
        }
        if let Some(file) = config.admin.token.as_mut().and_then(|t| t.file.as_mut()) {
            resolve(file);
        }
        for key in config.trust.publishers.values_mut() {
            if !key
                .trim_start()
                .starts_with(switchyard_runtime::signing::PUBLIC_KEY_TAG)
            {
                *key = base.join(&*key).display().to_string();
            }
        }
        let syncs = config.syncs.keys().map(String::as_str).collect();
        config.access.prepare(base, &syncs)?;
        switchyard_runtime::signing::TrustPolicy::from_config(&config.trust)?;
        config.monitoring.validate()?;
        config.telemetry.validate()?;
        if config.cluster.is_none()
            && let Some((name, _)) = config.pipelines.iter().find(|(_, p)| p.workers == 0)
        {
            return Err(format!(
                "pipelines.{name}.workers = 0 would deliver nothing: only a host in a [cluster], where other hosts deliver, may run no workers"
            ));
        }
        if let Some(cluster) = config.cluster.as_mut() {
            cluster.check()?;
            for file in [cluster.token.as_mut(), cluster.password.as_mut()]
                .into_iter()
                .flatten()
                .filter_map(|grant| grant.file.as_mut())
            {
                resolve(file);
            }
        }
        if let Some(file) =
            (config.monitoring.webhook.as_mut()).and_then(|w| w.secret.file.as_mut())
        {
            resolve(file);
        }
        if let Some(file) = config.oauth.key.as_mut().and_then(|k| k.file.as_mut()) {
            resolve(file);
        }
        if config.cluster.is_some() && config.oauth.key.is_none() && config.uses_oauth() {
            return Err(
                "hosts of a [cluster] share OAuth tokens, sealed with one key: set [oauth] key = { file = \"…\" } (base64 of 32 random bytes: head -c32 /dev/urandom | base64) to the same key on every host".into(),
            );
        }
        for connection in config.connections.values_mut() {
            for grant in connection.grants.oauth.values_mut() {
                if let Some(file) = grant.client_secret.file.as_mut() {
                    resolve(file);
                }
            }
        }
        for (name, connection) in &config.connections {
            for (grant, oauth) in &connection.grants.oauth {
                oauth
                    .validate(grant)
                    .map_err(|e| format!("connections.{name}.grants.oauth.{grant}: {e}"))?;
            }
            connection
                .values()
                .map_err(|e| format!("connections.{name}.config: {e}"))?;
            switchyard_broker::policy::EgressPolicy::parse(&connection.grants.allow)
                .map_err(|e| format!("connections.{name}.grants.allow: {e}"))?;
            switchyard_broker::rate::ConnectionRateLimits::new(&connection.grants.rate_limits)
                .map_err(|e| format!("connections.{name}.grants: {e}"))?;
        }
        Ok(config)
    }

    /// The plugin directory after defaults.
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// The durable queue database: `<data_dir>/queue.sqlite`.
    pub fn queue_path(&self) -> PathBuf {
        self.data_dir.join("queue.sqlite")
    }

    /// The connection state database: `<data_dir>/state.sqlite`.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("state.sqlite")
    }

    /// The monitor's history and alerts: `<data_dir>/monitor.sqlite`.
    pub fn monitor_path(&self) -> PathBuf {
        self.data_dir.join("monitor.sqlite")
    }

    /// The audit trail database: `<data_dir>/audit.sqlite`.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit.sqlite")
    }

    /// The OAuth token store: `<data_dir>/oauth.sqlite`.
    pub fn oauth_store_path(&self) -> PathBuf {
        self.data_dir.join("oauth.sqlite")
    }

    /// The key sealing OAuth tokens unless `[oauth] key` names another:
    /// `<data_dir>/oauth.key`.
    pub fn oauth_key_path(&self) -> PathBuf {
        self.data_dir.join("oauth.key")
    }

    /// Whether any connection is granted an OAuth grant.
    pub fn uses_oauth(&self) -> bool {
        self.connections
            .values()
            .any(|c| !c.grants.oauth.is_empty())
    }

    /// The compile cache directory: `<data_dir>/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_all_defaults() {
        let c = SwitchyardConfig::parse("", Path::new("/etc/sy")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.plugin_dir(), Path::new("/etc/sy/.switchyard/plugins"));
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = SwitchyardConfig::parse("[limits]\ndeadline = 5", Path::new("")).unwrap_err();
        assert!(err.contains("deadline"), "{err}");
    }

    #[test]
    fn a_pipeline_without_workers_needs_a_cluster() {
        let flows = "[pipelines.p]\nsink = \"s\"\nworkers = 0\n";
        let err = SwitchyardConfig::parse(flows, Path::new("")).unwrap_err();
        assert!(
            err.contains("pipelines.p.workers = 0") && err.contains("[cluster]"),
            "{err}"
        );
        let clustered = format!("{flows}[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\n");
        SwitchyardConfig::parse(&clustered, Path::new("")).unwrap();
    }

    #[test]
    fn zero_limits_are_refused() {
        let err =
            SwitchyardConfig::parse("[limits]\nmax_concurrent = 0", Path::new("")).unwrap_err();
        assert!(err.contains("limits.max_concurrent"), "{err}");
    }

    #[test]
    fn connection_values_are_stringified_and_tables_refused() {
        let ok = SwitchyardConfig::parse(
            "[connections.a]\nplugin = \"echo\"\nconfig = { n = 3, on = true, s = \"x\" }",
            Path::new(""),
        )
        .unwrap();
        let values = ok.connections["a"].values().unwrap();
        assert_eq!(values["n"], "3");
        assert_eq!(values["on"], "true");
        assert_eq!(values["s"], "x");
        let err = SwitchyardConfig::parse(
            "[connections.a]\nplugin = \"echo\"\nconfig = { t = { x = 1 } }",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("connections.a.config"), "{err}");
    }

    #[test]
    fn oauth_grants_are_checked_and_a_cluster_needs_a_shared_key() {
        let grant = "[connections.a]\nplugin = \"p\"\n[connections.a.grants.oauth.crm]\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"x\"\nclient_secret = { env = \"S\" }\n";
        let ok = SwitchyardConfig::parse(grant, Path::new("/etc/sy")).unwrap();
        assert!(ok.uses_oauth());
        let code = format!("{grant}grant_type = \"authorization_code\"\n");
        let err = SwitchyardConfig::parse(&code, Path::new("/etc/sy")).unwrap_err();
        assert!(err.contains("authorize_url"), "{err}");
        let cluster = format!("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\n{grant}");
        let err = SwitchyardConfig::parse(&cluster, Path::new("/etc/sy")).unwrap_err();
        assert!(err.contains("[oauth] key"), "{err}");
        let keyed = format!("[oauth]\nkey = {{ file = \"oauth.key\" }}\n{cluster}");
        let ok = SwitchyardConfig::parse(&keyed, Path::new("/etc/sy")).unwrap();
        let file = ok.oauth.key.unwrap().file.unwrap();
        assert_eq!(file, Path::new("/etc/sy/oauth.key"));
    }

    #[test]
    fn grants_are_parsed_and_checked() {
        let ok = SwitchyardConfig::parse(
            "[connections.a]\nplugin = \"p\"\n[connections.a.grants]\nallow = [\"https://*.stripe.com\"]\nstate = true\n",
            Path::new(""),
        )
        .unwrap();
        assert!(ok.connections["a"].grants.state);
        let err = SwitchyardConfig::parse(
            "[connections.a]\nplugin = \"p\"\ngrants = { allow = [\"gopher://x\"] }\n",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("connections.a.grants.allow"), "{err}");
    }

    #[test]
    fn monitoring_defaults_and_overrides() {
        let c = SwitchyardConfig::parse("", Path::new("")).unwrap();
        assert!(c.monitoring.enabled);
        assert_eq!(c.monitoring.window_secs, 300);
        let c = SwitchyardConfig::parse(
            "[monitoring]\ndrop_ratio = 0.25\n[monitoring.webhook]\nurl = \"http://127.0.0.1:9/a\"\nsecret = { file = \"s\" }\n",
            Path::new("/etc/sy"),
        )
        .unwrap();
        assert_eq!(c.monitoring.drop_ratio, 0.25);
        let secret = &c.monitoring.webhook.unwrap().secret;
        assert_eq!(secret.file.as_deref(), Some(Path::new("/etc/sy/s")));
        let err =
            SwitchyardConfig::parse("[monitoring]\nwindow_secs = 0", Path::new("")).unwrap_err();
        assert!(err.contains("monitoring.window_secs"), "{err}");
    }

    #[test]
    fn audit_defaults_to_on_for_30_days_and_can_be_tuned() {
        let c = SwitchyardConfig::parse("", Path::new("/sy")).unwrap();
        assert!(c.audit.enabled);
        assert_eq!(
            c.audit.retention(),
            std::time::Duration::from_secs(30 * 86_400)
        );
        assert_eq!(c.audit_path(), Path::new("/sy/.switchyard/audit.sqlite"));
        let c = SwitchyardConfig::parse(
            "[audit]
enabled = false
retention_days = 7",
            Path::new(""),
        )
        .unwrap();
        assert!(!c.audit.enabled);
        assert_eq!(c.audit.retention_days, 7);
        let err = SwitchyardConfig::parse(
            "[audit]
keep = 1",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("keep"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = SwitchyardConfig::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
