//! The broker: everything a Switchyard connector may reach, served by the
//! host under the operator's policy, default deny.
//!
//! A connector never touches the network, a credential or a disk. It
//! imports WIT interfaces and this crate serves them, one module per
//! interface under [`interfaces`], each in wasmtime's capability shape: a
//! cheap-to-clone context (`XCtx`), a borrowed view the generated `Host`
//! trait is implemented on (`XCtxView`), a trait the store data implements
//! to hand out that view (`XView`), and `add_to_linker`:
//!
//! | interface | module | backed by |
//! |---|---|---|
//! | `wasi:http/outgoing-handler` | [`interfaces::http`] | [`egress`]: URL policy, secret substitution, pacing, checked dialing |
//! | `secrets` | [`interfaces::secrets`] | [`secrets`]: providers, bound grants, the [`Redactor`](secrets::Redactor) |
//! | `state` | [`interfaces::state`] | [`kv`]: the SQLite state store |
//! | `rate-limit` | [`interfaces::rate_limit`] | [`rate`]: governor buckets |
//! | `config` | [`interfaces::config`] | the connection's settings |
//! | (`{{oauth:NAME}}` in headers) | [`egress`] | [`oauth`]: the grant's current access token, from a [`TokenBroker`](oauth::TokenBroker) |
//! | `log` | [`interfaces::log`] | `tracing`, redacted and rate-limited |
//!
//! What a connection may use is the plugin's manifest intersected with the
//! operator's grants ([`capabilities`]); URL patterns and the
//! private-address rule live in [`policy`]. [`BrokerCtx::for_connection`]
//! turns those rights into the contexts above, the one place that decides
//! what a connection reaches.
//!
//! The broker knows nothing of the sandbox that calls it: it reports what
//! guests use through [`observe::BrokerObserver`].

pub mod bindings;
pub mod capabilities;
pub mod egress;
pub mod interfaces;
pub mod kv;
pub mod oauth;
pub mod observe;
pub mod policy;
pub mod rate;
pub mod secrets;

use capabilities::{EffectiveRights, Grants};
use egress::{Egress, EgressLimits, Network};
use interfaces::config::ConfigCtx;
use interfaces::rate_limit::RateLimitCtx;
use interfaces::secrets::SecretsCtx;
use interfaces::state::StateCtx;
use kv::{ConnectionState, StateBackend};
use observe::{BrokerObserver, ObserveCtx};
use rate::ConnectionRateLimits;
use secrets::{ConnectionSecrets, Redactor, SecretProvider};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The brokered contexts of one connection, cloned into each invocation.
#[derive(Debug, Clone)]
pub struct BrokerCtx {
    pub config: ConfigCtx,
    pub secrets: SecretsCtx,
    pub state: StateCtx,
    pub rate_limit: RateLimitCtx,
    pub egress: Arc<Egress>,
    /// Scrubs the connection's secret values from what the guest says.
    pub redactor: Arc<Redactor>,
}

/// What [`BrokerCtx::for_connection`] needs to know about a connection.
pub struct ConnectionBroker<'a> {
    pub plugin: Arc<str>,
    /// The plugin version, as events name it.
    pub version: Arc<str>,
    pub connection: Arc<str>,
    /// The manifest's requests intersected with `grants`.
    pub rights: &'a EffectiveRights,
    /// The operator's grants (secret sources, bucket sizes, retries).
    pub grants: &'a Grants,
    /// The connection's non-secret settings, read through `config`.
    pub config: BTreeMap<String, String>,
    pub secret_provider: &'a dyn SecretProvider,
    /// The state store, when the host keeps one.
    pub state: Option<&'a Arc<dyn StateBackend>>,
    pub network: Network,
    pub limits: EgressLimits,
    /// Rate-limit buckets to keep (a new version of the same connection
    /// with the same buckets shares them, so a reload cannot reset a
    /// third party's limit). Default: fresh buckets.
    pub keep_buckets: Option<Arc<ConnectionRateLimits>>,
    /// Who hears of egress and brokered uses. Default: nobody.
    pub observer: Option<Arc<dyn BrokerObserver>>,
    /// Who obtains OAuth access tokens. Default: none, and a connection
    /// granted an OAuth grant is refused.
    pub tokens: Option<&'a Arc<dyn oauth::TokenBroker>>,
}

impl std::fmt::Debug for ConnectionBroker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionBroker")
            .field("plugin", &self.plugin)
            .field("version", &self.version)
            .field("connection", &self.connection)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl BrokerCtx {
    /// Nothing granted: no config, secrets, state, buckets or egress.
    pub fn deny_all(name: Arc<str>, limits: EgressLimits) -> Self {
        BrokerCtx {
            config: ConfigCtx::default(),
            secrets: SecretsCtx::default(),
            state: StateCtx::default(),
            rate_limit: RateLimitCtx::default(),
            egress: Arc::new(Egress::deny_all(name, limits)),
            redactor: Arc::default(),
        }
    }

    /// The contexts of one connection: resolves only the secrets that are
    /// both requested and granted, opens its state namespace if state is
    /// granted, and builds its egress. Errors name what to fix.
    pub fn for_connection(c: ConnectionBroker<'_>) -> Result<Self, String> {
        let rights = c.rights;
        let wanted = only(&c.grants.secrets, &rights.secrets);
        let secrets =
            ConnectionSecrets::resolve(&wanted, c.secret_provider).map_err(|e| e.to_string())?;
        let wanted_oauth = only(&c.grants.oauth, &rights.oauth);
        let token_source = match (wanted_oauth.is_empty(), c.tokens) {
            (true, _) => None,
            (false, Some(tokens)) => Some(tokens.for_connection(&c.connection, &wanted_oauth)?),
            (false, None) => {
                return Err(
                    "an oauth grant is granted but the runtime has no token manager".into(),
                );
            }
        };
        let oauth = oauth::ConnectionOAuth::new(&wanted_oauth, token_source.clone())?;
        let mut redactor = secrets.redactor();
        if let Some(source) = &token_source {
            redactor = redactor.with_live(source.live_values());
        }
        let redactor = Arc::new(redactor);
        let secrets = Arc::new(secrets);
        let rate_limits = match c.keep_buckets {
            Some(buckets) => buckets,
            None => Arc::new(ConnectionRateLimits::new(&only(
                &c.grants.rate_limits,
                &rights.rate_limits,
            ))?),
        };
        let observe = ObserveCtx::new(
            c.observer.clone(),
            c.plugin.clone(),
            c.version.clone(),
            c.connection.clone(),
        )
        .with_redactor(redactor.clone());
        let state = match (c.state, rights.state) {
            (Some(store), true) => Some(ConnectionState::new(store.clone(), &c.connection)),
            (None, true) => {
                return Err("state is granted but the runtime has no state store".into());
            }
            _ => None,
        };
        let rate_wait = c.limits.rate_wait;
        let egress = Egress::new(
            c.plugin.clone(),
            c.connection.clone(),
            rights.clone(),
            secrets.clone(),
            rate_limits.clone(),
            c.grants.retry.clone(),
            c.limits,
            c.network,
        )
        .with_oauth(oauth)
        .observed(c.observer, c.version);
        Ok(BrokerCtx {
            config: ConfigCtx::new(c.config),
            secrets: SecretsCtx {
                connection: c.connection.clone(),
                secrets,
                observe: observe.clone(),
            },
            state: StateCtx {
                connection: c.connection.clone(),
                namespace: state,
                observe: observe.clone(),
            },
            rate_limit: RateLimitCtx {
                connection: c.connection,
                buckets: rate_limits,
                max_wait: rate_wait,
                observe,
            },
            egress: Arc::new(egress),
            redactor,
        })
    }

    /// The same contexts for invocation `id`: events name it.
    pub fn for_invocation(&self, id: u64) -> Self {
        let mut ctx = self.clone();
        ctx.secrets.observe = ctx.secrets.observe.for_invocation(id);
        ctx.state.observe = ctx.state.observe.for_invocation(id);
        ctx.rate_limit.observe = ctx.rate_limit.observe.for_invocation(id);
        ctx
    }

    /// The connection's secrets.
    pub fn connection_secrets(&self) -> &ConnectionSecrets {
        &self.secrets.secrets
    }

    /// The connection's rate-limit buckets.
    pub fn rate_limits(&self) -> &Arc<ConnectionRateLimits> {
        &self.rate_limit.buckets
    }
}

/// The entries of `granted` whose names are in `wanted`.
fn only<T: Clone>(
    granted: &BTreeMap<String, T>,
    wanted: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, T> {
    granted
        .iter()
        .filter(|(name, _)| wanted.contains(*name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
