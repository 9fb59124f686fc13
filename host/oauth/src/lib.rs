//! OAuth 2.0 handled by the host: connectors send `{{oauth:NAME}}` and
//! never hold a token, a refresh token or a client secret.
//!
//! [`OAuthManager`] is the broker's [`TokenBroker`]: for each connection's
//! granted `[connections.X.grants.oauth.NAME]` it keeps a [`grant::Grant`]
//! that caches the access token, refreshes it ahead of expiry (single-flight
//! in the process and, through the [`TokenStore`]'s lock, across hosts),
//! stores tokens sealed under the host key ([`seal`]) and marks a dead
//! grant "needs re-authorisation". Operators connect accounts with the
//! authorization-code flow and PKCE ([`connect`]). Token requests leave
//! through the host's egress, under the same address rules and TLS as
//! guests' requests.
//!
//! Layering: this crate knows the broker (its seam and egress) and nothing
//! of servers, queues or metrics backends; it reports through
//! [`OAuthObserver`].

mod client;
pub mod connect;
mod grant;
pub mod seal;
pub mod store;

use grant::Grant;
use seal::SealKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::TokenStore;
use switchyard_broker::egress::{Egress, EgressLimits, Network};
use switchyard_broker::oauth::{
    GrantType, LiveValues, OAuthGrant, TokenBroker, TokenError, TokenSource,
};
use switchyard_broker::secrets::{SecretGrant, SecretProvider, SecretValue};
use zeroize::Zeroize;

/// `[oauth]`: the host's side of OAuth. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// The key sealing tokens at rest (`{ env = … }` or `{ file = … }`,
    /// base64 of 32 bytes). Default: `<data_dir>/oauth.key`, created with
    /// mode 0600 on first start. Hosts sharing a `[cluster]` need the same
    /// key.
    pub key: Option<SecretGrant>,
    /// Where operators' browsers reach this host, for the redirect URI
    /// `<public_url>/oauth/callback` registered with each authorization
    /// server. Default: `http://<listen>`.
    pub public_url: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a grant stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No token yet: an `authorization_code` grant nobody connected, or a
    /// `client_credentials` grant not used yet.
    #[default]
    NotConnected,
    Connected,
    /// The server refused the grant (`invalid_grant`, revoked): an operator
    /// must connect the account again.
    NeedsReauthorization,
}

/// What the store keeps per grant, sealed. Tokens are wiped from memory
/// when a record is dropped.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct Record {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_at_ms: Option<u64>,
    obtained_at_ms: u64,
    scope: Option<String>,
    status: Status,
    reason: Option<String>,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.access_token.zeroize();
        self.refresh_token.zeroize();
    }
}

/// Hears what happens to grants (metrics, alerts, the audit trail). Every
/// method has an empty default.
pub trait OAuthObserver: Send + Sync + 'static {
    /// A request to the token endpoint: `kind` is the grant type sent,
    /// `outcome` `ok`, `dead` (the grant is refused) or `failed`.
    fn token_request(
        &self,
        _connection: &str,
        _grant: &str,
        _kind: &str,
        _outcome: &str,
        _elapsed: Duration,
    ) {
    }
    /// A grant was marked "needs re-authorisation".
    fn needs_reauthorization(&self, _connection: &str, _grant: &str, _reason: &str) {}
    /// A grant got its first token, or its first after being dead.
    fn connected(&self, _connection: &str, _grant: &str) {}
    /// Where a grant stands, as read at start-up
    /// ([`OAuthManager::publish_statuses`]).
    fn status(&self, _connection: &str, _grant: &str, _status: Status) {}
}

/// What every grant shares: the store, its key and who is told.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn TokenStore>,
    key: SealKey,
    /// This host's name as a lock holder.
    pub(crate) holder: String,
    pub(crate) observer: Option<Arc<dyn OAuthObserver>>,
    /// Refresh tasks under way, so shutdown can wait for them.
    pub(crate) refreshes: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
}

/// Counts a refresh task as under way until dropped (panic or not).
struct RefreshRunning(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

impl Drop for RefreshRunning {
    fn drop(&mut self) {
        if self.0.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.1.notify_waiters();
        }
    }
}

impl Shared {
    /// Runs a refresh in a task of its own (a caller that goes away
    /// cannot cut it off between the server rotating a refresh token and
    /// the store keeping it), counted for [`OAuthManager::drain`].
    pub(crate) fn spawn_refresh<T: Send + 'static>(
        &self,
        refresh: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.refreshes
            .0
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let running = RefreshRunning(self.refreshes.clone());
        tokio::spawn(async move {
            let _running = running;
            refresh.await
        })
    }

    pub(crate) async fn load(&self, key: &str) -> Result<Option<(Record, u64)>, String> {
        let Some(found) = self.store.load(key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let plain = self.key.open(key, &found.sealed)?;
        let record: Record = serde_json::from_slice(&plain)
            .map_err(|e| format!("stored token record `{key}`: {e}"))?;
        Ok(Some((record, found.revision)))
    }

    pub(crate) async fn save(
        &self,
        key: &str,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(record).expect("a record serializes"));
        let sealed = self.key.seal(key, &plain);
        self.store
            .save(key, &sealed, expected)
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) fn observer_connected(&self, grant: &Grant) {
        if let Some(observer) = &self.observer {
            observer.connected(&grant.connection, &grant.name);
        }
    }

    pub(crate) fn observer_dead(&self, grant: &Grant, reason: &str) {
        if let Some(observer) = &self.observer {
            observer.needs_reauthorization(&grant.connection, &grant.name, reason);
        }
    }
}

/// A grant as the admin API and status page show it. No token in it.
#[derive(Debug, Clone, Serialize)]
pub struct GrantStatus {
    pub connection: String,
    pub grant: String,
    pub grant_type: GrantType,
    pub status: Status,
    /// Why the grant needs re-authorisation.
    pub reason: Option<String>,
    /// When the stored access token expires (ms since the epoch).
    pub expires_at_ms: Option<u64>,
    /// When the stored access token was obtained (ms since the epoch).
    pub obtained_at_ms: Option<u64>,
    pub scope: Option<String>,
    /// Whether an operator can (re)connect it from the status page.
    pub connectable: bool,
    /// Why the stored record could not be read (the store failed, or it
    /// does not open with this host's key); `status` is then a guess.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The host's OAuth grants. Cheap to clone.
#[derive(Clone)]
pub struct OAuthManager {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    secret_provider: Arc<dyn SecretProvider>,
    network: Network,
    limits: EgressLimits,
    redirect_url: String,
    grants: Mutex<HashMap<String, Arc<Grant>>>,
    live: Mutex<HashMap<String, Arc<LiveValues>>>,
}

impl std::fmt::Debug for OAuthManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthManager")
            .field("redirect_url", &self.inner.redirect_url)
            .finish_non_exhaustive()
    }
}

/// The path of the callback route the redirect URI names.
pub const CALLBACK_PATH: &str = "/oauth/callback";

impl OAuthManager {
    /// A manager over `store`, sealing with `key`, reaching token
    /// endpoints through `network` under `limits`, answering the
    /// authorization server at `<public_url>/oauth/callback`.
    pub fn new(
        store: Arc<dyn TokenStore>,
        key: SealKey,
        secret_provider: Arc<dyn SecretProvider>,
        network: Network,
        limits: EgressLimits,
        public_url: &str,
        observer: Option<Arc<dyn OAuthObserver>>,
    ) -> Self {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the OS random source works");
        let holder = format!(
            "{}-{}",
            std::process::id(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        OAuthManager {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    store,
                    key,
                    holder,
                    observer,
                    refreshes: Arc::default(),
                }),
                secret_provider,
                network,
                limits,
                redirect_url: format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/')),
                grants: Mutex::default(),
                live: Mutex::default(),
            }),
        }
    }

    /// The redirect URI to register with authorization servers.
    pub fn redirect_url(&self) -> &str {
        &self.inner.redirect_url
    }

    fn grant(&self, connection: &str, name: &str) -> Option<Arc<Grant>> {
        let grants = self.inner.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.get(&format!("{connection}/{name}")).cloned()
    }

    /// Every grant of every connection, with its stored state.
    pub async fn statuses(&self) -> Vec<GrantStatus> {
        let mut grants: Vec<Arc<Grant>> = {
            let grants = self.inner.grants.lock().unwrap_or_else(|p| p.into_inner());
            grants.values().cloned().collect()
        };
        grants.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::with_capacity(grants.len());
        for grant in grants {
            let record = self.inner.shared.load(&grant.key).await;
            let (status, reason, expires, obtained, scope) = match &record {
                Ok(Some((r, _))) => (
                    r.status,
                    r.reason.clone(),
                    r.expires_at_ms,
                    (r.obtained_at_ms > 0).then_some(r.obtained_at_ms),
                    r.scope.clone(),
                ),
                Ok(None) | Err(_) => (Status::NotConnected, None, None, None, None),
            };
            out.push(GrantStatus {
                connection: grant.connection.clone(),
                grant: grant.name.clone(),
                grant_type: grant.config.grant_type,
                status,
                reason,
                expires_at_ms: expires,
                obtained_at_ms: obtained,
                scope,
                connectable: grant.config.grant_type == GrantType::AuthorizationCode,
                error: record.err(),
            });
        }
        out
    }

    /// Waits, up to `limit`, for refreshes under way to finish: a shutdown
    /// that cut one off after the server rotated a refresh token but
    /// before the store kept it would leave the grant needing
    /// re-authorisation. Whether none was left running.
    pub async fn drain(&self, limit: Duration) -> bool {
        let refreshes = &self.inner.shared.refreshes;
        let waited = tokio::time::timeout(limit, async {
            loop {
                let notified = refreshes.1.notified();
                if refreshes.0.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        });
        waited.await.is_ok()
    }

    /// Tells the observer where every grant stands (at start-up, so a
    /// gauge is right before anything happens).
    pub async fn publish_statuses(&self) {
        let Some(observer) = &self.inner.shared.observer else {
            return;
        };
        for status in self.statuses().await {
            observer.status(&status.connection, &status.grant, status.status);
        }
    }
}

impl TokenBroker for OAuthManager {
    fn for_connection(
        &self,
        connection: &str,
        grants: &BTreeMap<String, OAuthGrant>,
    ) -> Result<Arc<dyn TokenSource>, String> {
        let live = {
            let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
            live.entry(connection.to_owned()).or_default().clone()
        };
        let mut mine = BTreeMap::new();
        // Held while grants are made, so two loads of one connection cannot
        // both make one: one record, one refresh queue.
        let mut all = self.inner.grants.lock().unwrap_or_else(|p| p.into_inner());
        for (name, config) in grants {
            config.validate(name)?;
            let key = format!("{connection}/{name}");
            let grant = match all.get(&key) {
                // A reload with the same grant keeps its cache and queue.
                Some(grant) if grant.config == *config => grant.clone(),
                existing => {
                    // A changed grant: a new one, on the same refresh queue,
                    // while calls of the old one may still run.
                    let flight = existing.map(|g| g.flight()).unwrap_or_default();
                    let secret = self
                        .inner
                        .secret_provider
                        .resolve(
                            &format!("oauth {name} client_secret"),
                            &config.client_secret,
                        )
                        .map_err(|e| format!("oauth grant `{name}`: client_secret: {e}"))?;
                    let origin = origin_of(&config.token_url)
                        .map_err(|e| format!("oauth grant `{name}`: token_url: {e}"))?;
                    let egress = Egress::for_host(
                        &format!("oauth:{key}"),
                        &[origin],
                        self.inner.limits.clone(),
                        self.inner.network.clone(),
                    )
                    .map_err(|e| format!("oauth grant `{name}`: token_url: {e}"))?;
                    let grant = Arc::new(Grant::new(
                        connection,
                        name,
                        config.clone(),
                        secret,
                        egress,
                        live.clone(),
                        self.inner.shared.clone(),
                        flight,
                    ));
                    all.insert(key, grant.clone());
                    grant
                }
            };
            mine.insert(name.clone(), grant);
        }
        drop(all);
        Ok(Arc::new(ConnectionTokens { grants: mine, live }))
    }
}

/// `scheme://host[:port]` of `url`, as an egress rule.
fn origin_of(url: &str) -> Result<String, String> {
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => return Err("no host".into()),
    };
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// One connection's grants, as its egress asks for tokens.
#[derive(Debug)]
struct ConnectionTokens {
    grants: BTreeMap<String, Arc<Grant>>,
    live: Arc<LiveValues>,
}

#[async_trait::async_trait]
impl TokenSource for ConnectionTokens {
    async fn access_token(
        &self,
        grant: &str,
        rejected: Option<&SecretValue>,
    ) -> Result<SecretValue, TokenError> {
        let Some(found) = self.grants.get(grant) else {
            return Err(TokenError::Config {
                grant: grant.to_owned(),
                reason: "not granted to this connection".into(),
            });
        };
        found.access_token(rejected).await
    }

    fn live_values(&self) -> Arc<LiveValues> {
        self.live.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_egress_rules() {
        assert_eq!(
            origin_of("https://login.example.com/oauth/token").unwrap(),
            "https://login.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:9000/token").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            origin_of("http://[::1]:9000/t").unwrap(),
            "http://[::1]:9000"
        );
    }

    /// Small, quick egress limits for unit tests.
    pub(crate) fn test_limits() -> EgressLimits {
        EgressLimits {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            total: Duration::from_secs(1),
            request_bytes: 1 << 16,
            response_bytes: 1 << 16,
            rate_wait: Duration::ZERO,
            destination_per_second: 0,
            invocation_bytes: 0,
            connection_destination_per_second: 0,
        }
    }

    fn manager(dir: &std::path::Path) -> OAuthManager {
        let limits = test_limits();
        OAuthManager::new(
            Arc::new(store::SqliteTokenStore::open(&dir.join("oauth.sqlite")).unwrap()),
            SealKey::from_bytes(&[5; 32]).unwrap(),
            Arc::new(switchyard_broker::secrets::EnvOrFile),
            Network::default(),
            limits,
            "http://127.0.0.1:1",
            None,
        )
    }

    #[tokio::test]
    async fn drain_waits_for_refreshes_under_way_panics_included() {
        let dir = tempfile::tempdir().unwrap();
        let oauth = manager(dir.path());
        let shared = &oauth.inner.shared;
        assert!(oauth.drain(Duration::from_millis(10)).await, "none running");

        let landed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = landed.clone();
        drop(shared.spawn_refresh(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        assert!(
            !oauth.drain(Duration::from_millis(20)).await,
            "still running"
        );
        assert!(oauth.drain(Duration::from_secs(5)).await);
        assert!(landed.load(std::sync::atomic::Ordering::SeqCst));

        let panicked = shared.spawn_refresh(async { panic!("a refresh that panics") });
        assert!(panicked.await.is_err());
        assert!(
            oauth.drain(Duration::from_millis(10)).await,
            "a panicked refresh is not counted as running"
        );
    }
}
