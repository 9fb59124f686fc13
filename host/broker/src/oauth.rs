//! OAuth grants: access tokens the host obtains, refreshes and puts into
//! requests, so a connector never holds one.
//!
//! A connection's `[connections.X.grants.oauth.NAME]` names a token
//! endpoint, a client and the destinations the token may be sent to. The
//! guest writes the placeholder `{{oauth:NAME}}` into a header (usually
//! `Authorization: Bearer {{oauth:NAME}}`); at egress the host replaces it
//! with a current access token, only for a bound destination, and scrubs
//! every token it has handed out from whatever comes back.
//!
//! This module is the seam: the grant's configuration, the
//! [`TokenSource`] egress asks, and [`LiveValues`], the redaction list that
//! grows as tokens rotate. Obtaining and storing tokens is another crate's
//! job (`switchyard-oauth`), plugged in through [`TokenBroker`].

use crate::policy::EgressPolicy;
use crate::secrets::{SecretGrant, SecretValue};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// How a grant obtains tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// The client's own token (RFC 6749 §4.4): no user, no refresh token.
    #[default]
    ClientCredentials,
    /// A user's consent (RFC 6749 §4.1 with PKCE), then refresh tokens.
    /// An operator connects the account once (admin API or status page).
    AuthorizationCode,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// `[connections.X.grants.oauth.NAME]`: one OAuth client of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthGrant {
    /// `client_credentials` (default) or `authorization_code`.
    #[serde(default)]
    pub grant_type: GrantType,
    /// The token endpoint. Requested by the host through the same egress
    /// rules as guests' requests (resolved and checked addresses, TLS).
    pub token_url: String,
    /// The authorization endpoint; required for `authorization_code`.
    pub authorize_url: Option<String>,
    /// The client id (not a secret).
    pub client_id: String,
    /// Where the client secret comes from (`{ env = … }` or `{ file = … }`).
    pub client_secret: SecretGrant,
    /// `basic` (default) or `post`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Scopes asked for. Default: none (the server's default).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra parameters sent with token and authorization requests
    /// (`audience`, `resource`, `access_type`, …). Default: none.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// Egress rules the access token may be sent to. Default: none, which
    /// makes every use of the placeholder a refusal.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Refresh this long before the token expires (at most half its
    /// lifetime), less up to a tenth of that at random so connections
    /// sharing a server do not refresh in step. Default: 300 s.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead_secs: u64,
}

fn default_refresh_ahead() -> u64 {
    300
}

impl OAuthGrant {
    /// Checks what can be checked without the network.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let at = |what: &str| format!("oauth grant `{name}`: {what}");
        EgressPolicy::parse(&self.destinations).map_err(|e| at(&e))?;
        url::Url::parse(&self.token_url).map_err(|e| at(&format!("token_url: {e}")))?;
        match (&self.grant_type, &self.authorize_url) {
            (GrantType::AuthorizationCode, None) => {
                return Err(at(
                    "grant_type = \"authorization_code\" needs `authorize_url`",
                ));
            }
            (_, Some(url)) => {
                url::Url::parse(url).map_err(|e| at(&format!("authorize_url: {e}")))?;
            }
            _ => {}
        }
        if self.client_id.is_empty() {
            return Err(at("`client_id` is empty"));
        }
        Ok(())
    }
}

/// `{{oauth:NAME}}`.
pub fn placeholder(name: &str) -> String {
    format!("{{{{oauth:{name}}}}}")
}

/// What the guest's placeholder marker starts with.
pub const PLACEHOLDER_START: &[u8] = b"{{oauth:";

/// Why no token could be had. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The grant is dead (`invalid_grant`, revoked, never connected): an
    /// operator must connect the account again. Permanent.
    #[error(
        "connection `{connection}` needs re-authorisation for oauth grant `{grant}` ({reason}); reconnect it on the status page or with POST /admin/v1/oauth/{connection}/{grant}/connect"
    )]
    NeedsReauthorization {
        connection: String,
        grant: String,
        reason: String,
    },
    /// The server refused the client itself (`invalid_client`,
    /// `unauthorized_client`) on a client-credentials grant: the operator
    /// must fix `client_id` or `client_secret`. Retried every minute.
    #[error(
        "oauth grant `{grant}`: the authorization server refused this client ({reason}); check the grant's client_id and client_secret"
    )]
    ClientRefused { grant: String, reason: String },
    /// The token endpoint failed in a way worth retrying later.
    #[error("oauth grant `{grant}`: the token endpoint failed: {reason}")]
    Unavailable { grant: String, reason: String },
    /// The grant is misconfigured (bad client secret source, bad URL).
    #[error("oauth grant `{grant}`: {reason}")]
    Config { grant: String, reason: String },
}

/// A connection's access tokens, asked for at egress.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A current access token of `grant`. `rejected` is a token an
    /// upstream just refused (401): a token other than it is wanted, so the
    /// source refreshes unless someone already did.
    async fn access_token(
        &self,
        grant: &str,
        rejected: Option<&SecretValue>,
    ) -> Result<SecretValue, TokenError>;

    /// Every token and client secret value of these grants, current and
    /// recently rotated: redaction consults it on every use.
    fn live_values(&self) -> Arc<LiveValues>;
}

/// Hands out the token sources of connections; the host's OAuth manager
/// implements it.
pub trait TokenBroker: Send + Sync + std::fmt::Debug {
    /// The source for `connection`'s `grants` (the ones both granted and
    /// requested). Errors name what to fix.
    fn for_connection(
        &self,
        connection: &str,
        grants: &BTreeMap<String, OAuthGrant>,
    ) -> Result<Arc<dyn TokenSource>, String>;
}

/// The connection's bound grants, as egress consults them.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOAuth {
    pub(crate) bound: BTreeMap<String, EgressPolicy>,
    pub(crate) source: Option<Arc<dyn TokenSource>>,
}

impl ConnectionOAuth {
    /// `grants` served by `source`.
    pub fn new(
        grants: &BTreeMap<String, OAuthGrant>,
        source: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, String> {
        let mut bound = BTreeMap::new();
        for (name, grant) in grants {
            grant.validate(name)?;
            bound.insert(
                name.clone(),
                EgressPolicy::parse(&grant.destinations).map_err(|e| format!("{name}: {e}"))?,
            );
        }
        Ok(ConnectionOAuth { bound, source })
    }
}

/// How many superseded values per [`LiveValues`] are remembered beside the
/// current ones: enough for every token a busy connection went through in
/// the time a response or a log line could still carry an old one.
pub const LIVE_VALUES_KEPT: usize = 64;

type Forms = Vec<Zeroizing<Vec<u8>>>;

/// Values that change while the host runs (access and refresh tokens,
/// client secrets), kept with their encoded forms for redaction. Shared by
/// every variant of a connection. Current values sit in named slots and are
/// never forgotten; a value a slot no longer holds joins the newest
/// [`LIVE_VALUES_KEPT`] superseded ones.
#[derive(Default)]
pub struct LiveValues {
    values: RwLock<Slots>,
}

#[derive(Default)]
struct Slots {
    current: BTreeMap<String, Forms>,
    superseded: VecDeque<Forms>,
    /// Every form of both, longest first: rebuilt when a value changes
    /// (once per token), read on every request and log line.
    sorted: Vec<Zeroizing<Vec<u8>>>,
}

impl Slots {
    fn supersede(&mut self, forms: Forms) {
        if self.superseded.len() == LIVE_VALUES_KEPT {
            self.superseded.pop_front();
        }
        self.superseded.push_back(forms);
    }

    fn sort(&mut self) {
        let mut sorted: Vec<Zeroizing<Vec<u8>>> = (self.current.values())
            .chain(self.superseded.iter())
            .flatten()
            .cloned()
            .collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.len()));
        self.sorted = sorted;
    }
}

impl std::fmt::Debug for LiveValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .values
            .read()
            .map(|v| v.current.len() + v.superseded.len())
            .unwrap_or(0);
        write!(f, "LiveValues({n})")
    }
}

impl LiveValues {
    /// Makes `value` the current value of `slot` (`GRANT/access`, …); the
    /// value it replaces is still redacted, as a superseded one.
    pub fn set(&self, slot: &str, value: &SecretValue) {
        if value.expose().is_empty() {
            return;
        }
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        let same = values
            .current
            .get(slot)
            .and_then(|forms| forms.first())
            .is_some_and(|raw| **raw == *value.expose());
        if same {
            return;
        }
        let forms = crate::secrets::encoded_forms(value.expose());
        if let Some(old) = values.current.insert(slot.to_owned(), forms) {
            values.supersede(old);
        }
        values.sort();
    }

    /// Calls `f` with every form of every value, longest first.
    pub(crate) fn with_forms<T>(&self, f: impl FnOnce(&[Zeroizing<Vec<u8>>]) -> T) -> T {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        f(&values.sorted)
    }
}
