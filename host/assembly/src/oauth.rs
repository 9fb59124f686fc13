//! The host's OAuth manager, built from `[oauth]` and the connections'
//! grants, reporting to the metrics and the monitor's alerts.

use crate::config::SwitchyardConfig;
use std::sync::Arc;
use std::time::Duration;
use switchyard_broker::egress::Network;
use switchyard_broker::secrets::{EnvOrFile, SecretProvider, SecretValue};
use switchyard_oauth::seal::SealKey;
use switchyard_oauth::store::{SqliteTokenStore, TokenStore};
use switchyard_oauth::{OAuthManager, OAuthObserver, Status};
use switchyard_ops::metrics::Metrics;
use switchyard_ops::monitor::Monitor;

/// Token requests and dead grants, as metrics and alerts.
struct OAuthEvents {
    metrics: Arc<Metrics>,
    monitor: Option<Monitor>,
}

impl OAuthObserver for OAuthEvents {
    fn token_request(
        &self,
        connection: &str,
        grant: &str,
        kind: &str,
        outcome: &str,
        elapsed: Duration,
    ) {
        tracing::info!(
            target: "switchyard::oauth",
            connection,
            grant,
            kind,
            outcome,
            elapsed_ms = elapsed.as_millis() as u64,
            "token request"
        );
        self.metrics
            .oauth_token_request(connection, grant, kind, outcome);
    }

    fn needs_reauthorization(&self, connection: &str, grant: &str, reason: &str) {
        self.metrics
            .oauth_needs_reauthorization(connection, grant, true);
        if let Some(monitor) = &self.monitor {
            monitor.oauth_needs_reauthorization(connection, grant, reason);
        }
    }

    fn connected(&self, connection: &str, grant: &str) {
        self.metrics
            .oauth_needs_reauthorization(connection, grant, false);
    }

    fn status(&self, connection: &str, grant: &str, status: Status) {
        self.metrics.oauth_needs_reauthorization(
            connection,
            grant,
            status == Status::NeedsReauthorization,
        );
    }
}

/// The manager for `config`, or `None` when no connection has an OAuth
/// grant. Tokens live in `store` when given (the cluster's), else in
/// `<data_dir>/oauth.sqlite`.
pub(crate) fn manager(
    config: &SwitchyardConfig,
    store: Option<Arc<dyn TokenStore>>,
    secrets: Arc<dyn SecretProvider>,
    network: Network,
    metrics: Arc<Metrics>,
    monitor: Option<Monitor>,
) -> Result<Option<OAuthManager>, String> {
    let events: Arc<dyn OAuthObserver> = Arc::new(OAuthEvents { metrics, monitor });
    manager_with(
        config,
        store,
        secrets.as_ref(),
        secrets.clone(),
        network,
        Some(events),
    )
}

/// The grants of every configured connection over the store a server of
/// `config` uses (SQLite, or the cluster's JetStream), with no server
/// running: what `switchyard oauth` reads and starts connects with. A
/// running server finishes such a connect at its callback (the pending
/// flow is in the shared store). `None` when nothing uses OAuth.
pub async fn offline_manager(config: &SwitchyardConfig) -> Result<Option<OAuthManager>, String> {
    use switchyard_broker::oauth::TokenBroker;
    if !config.uses_oauth() {
        return Ok(None);
    }
    let store = match &config.cluster {
        Some(cluster) => {
            let cluster = switchyard_cluster::Cluster::connect(cluster, &EnvOrFile)
                .await
                .map_err(|e| e.to_string())?;
            let store = (cluster.token_store().await)
                .map_err(|e| format!("[cluster] oauth tokens: {e}"))?;
            Some(store)
        }
        None => None,
    };
    // The CLI neither creates the host's key (a key made by another user
    // than the server's would lock the server out) nor needs one made.
    if config.oauth.key.is_none() && config.cluster.is_none() {
        let path = config.oauth_key_path();
        if !path.exists() {
            return Err(format!(
                "no {}: start `switchyard serve` with this config once (it creates the key), or set [oauth] key",
                path.display()
            ));
        }
    }
    let Some(manager) = manager_with(
        config,
        store,
        &EnvOrFile,
        Arc::new(ClientSecretsUnused),
        Network::default(),
        None,
    )?
    else {
        return Ok(None);
    };
    for (name, connection) in &config.connections {
        if !connection.grants.oauth.is_empty() {
            manager
                .for_connection(name, &connection.grants.oauth)
                .map_err(|e| format!("connections.{name}: {e}"))?;
        }
    }
    Ok(Some(manager))
}

/// What the CLI gives grants for client secrets: it never sends one (the
/// server exchanges codes and refreshes), so it resolves none and runs
/// without the server's secret environment. Each grant gets random bytes
/// that match nothing.
struct ClientSecretsUnused;

impl SecretProvider for ClientSecretsUnused {
    fn resolve(
        &self,
        _name: &str,
        _grant: &switchyard_broker::secrets::SecretGrant,
    ) -> Result<SecretValue, switchyard_broker::secrets::SecretError> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Ok(SecretValue::new(bytes))
    }
}

/// The manager over `store` (default: `<data_dir>/oauth.sqlite`), its key
/// from `[oauth] key` via `key_secrets` (default: `<data_dir>/oauth.key`,
/// created if missing), client secrets from `grant_secrets`.
fn manager_with(
    config: &SwitchyardConfig,
    store: Option<Arc<dyn TokenStore>>,
    key_secrets: &dyn SecretProvider,
    grant_secrets: Arc<dyn SecretProvider>,
    network: Network,
    observer: Option<Arc<dyn OAuthObserver>>,
) -> Result<Option<OAuthManager>, String> {
    if !config.uses_oauth() {
        return Ok(None);
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let key = match &config.oauth.key {
        Some(grant) => {
            let text = key_secrets
                .resolve("oauth key", grant)
                .map_err(|e| format!("[oauth] key: {e}"))?;
            SealKey::from_text(text.expose()).map_err(|e| format!("[oauth] key: {e}"))?
        }
        None => SealKey::load_or_create(&config.oauth_key_path())?,
    };
    let store = match store {
        Some(store) => store,
        None => {
            Arc::new(SqliteTokenStore::open(&config.oauth_store_path()).map_err(|e| e.to_string())?)
        }
    };
    let public_url = config
        .oauth
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    Ok(Some(OAuthManager::new(
        store,
        key,
        grant_secrets,
        network,
        (&config.limits).into(),
        &public_url,
        observer,
    )))
}
