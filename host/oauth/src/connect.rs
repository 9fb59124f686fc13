//! Connecting an account: the authorization-code flow with PKCE (S256) and
//! a `state` check.
//!
//! [`OAuthManager::start_connect`] (the admin API, the status page's
//! Connect / Reconnect button) returns the authorization URL and keeps the
//! flow in the token store, sealed, under a hash of its random `state`;
//! the server sends the browser back to `/oauth/callback?code=…&state=…`,
//! where [`OAuthManager::finish_connect`] takes the flow out (a `state`
//! works once, for ten minutes), exchanges the code with the PKCE
//! verifier, and stores the tokens, replacing a dead grant.
//!
//! Because flows live in the store, the callback may reach any host that
//! shares it (several hosts behind one `public_url` on a cluster).

use crate::client::{self, Answer};
use crate::{OAuthManager, Record, unix_ms};
use oauth2::PkceCodeVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use switchyard_broker::oauth::GrantType;

/// How long an operator has to finish consenting.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// A flow started and not finished, as sealed in the store.
#[derive(Serialize, Deserialize)]
struct Flow {
    grant_key: String,
    verifier: String,
    started_ms: u64,
    /// The redirect URI the authorization request named: the code
    /// exchange must name the same, whichever host finishes it.
    redirect_url: String,
}

/// The store's name for the flow of `state`: a hash, so the store never
/// holds a usable `state`.
fn flow_id(state: &str) -> String {
    format!("flow/{}", hex::encode(Sha256::digest(state.as_bytes())))
}

/// Why connecting failed. Holds no token, code or verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("connection `{connection}` has no oauth grant `{grant}`")]
    UnknownGrant { connection: String, grant: String },
    #[error(
        "oauth grant `{0}` uses client credentials: there is no account to connect, the host gets tokens itself"
    )]
    NotAuthorizationCode(String),
    #[error("unknown or expired `state`: start connecting again from the status page")]
    UnknownState,
    #[error("the authorization server refused: {0}")]
    Refused(String),
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("oauth grant `{grant}`: {reason}")]
    Config { grant: String, reason: String },
    #[error("the token store failed: {0}")]
    Store(String),
}

impl OAuthManager {
    /// Starts connecting `connection`'s `grant`: the URL to send the
    /// operator's browser to.
    pub async fn start_connect(
        &self,
        connection: &str,
        grant: &str,
    ) -> Result<String, ConnectError> {
        let found = self
            .grant(connection, grant)
            .ok_or_else(|| ConnectError::UnknownGrant {
                connection: connection.to_owned(),
                grant: grant.to_owned(),
            })?;
        if found.config.grant_type != GrantType::AuthorizationCode {
            return Err(ConnectError::NotAuthorizationCode(grant.to_owned()));
        }
        let (url, state, verifier) = client::authorize_url(&found, &self.inner.redirect_url)
            .map_err(|reason| ConnectError::Config {
                grant: grant.to_owned(),
                reason,
            })?;
        let flow = Flow {
            grant_key: found.key.clone(),
            verifier: verifier.into_secret(),
            started_ms: unix_ms(),
            redirect_url: self.inner.redirect_url.clone(),
        };
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&flow).expect("a flow serializes"));
        let id = flow_id(state.secret());
        let shared = &self.inner.shared;
        let sealed = shared.key.seal(&id, &plain);
        (shared.store.put_flow(&id, &sealed, FLOW_LIFETIME).await)
            .map_err(|e| ConnectError::Store(e.to_string()))?;
        tracing::info!(connection, grant, "oauth connect started");
        Ok(url)
    }

    /// Finishes a flow from the callback's query: `(connection, grant)`
    /// once the tokens are stored. Runs in a task of its own (counted for
    /// [`OAuthManager::drain`]): a browser that goes away mid-exchange
    /// cannot lose tokens the server has issued.
    pub async fn finish_connect(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> Result<(String, String), ConnectError> {
        let manager = self.clone();
        let (state, code, error) = (
            state.to_owned(),
            code.map(str::to_owned),
            error.map(str::to_owned),
        );
        let finish = async move {
            (manager.finish_in_task(&state, code.as_deref(), error.as_deref())).await
        };
        (self.inner.shared.spawn_refresh(finish).await).unwrap_or_else(|e| {
            Err(ConnectError::Exchange(format!(
                "the connect task failed: {e}"
            )))
        })
    }

    async fn finish_in_task(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> Result<(String, String), ConnectError> {
        let id = flow_id(state);
        let shared = &self.inner.shared;
        let sealed = (shared.store.take_flow(&id).await)
            .map_err(|e| ConnectError::Store(e.to_string()))?
            .ok_or(ConnectError::UnknownState)?;
        // Each refusal below looks the same to the browser; the log says
        // which it was.
        let unknown = |why: &str| {
            tracing::warn!(reason = why, "oauth callback refused");
            ConnectError::UnknownState
        };
        let plain = (shared.key.open(&id, &sealed))
            .map_err(|_| unknown("the flow does not open with this host's [oauth] key"))?;
        let flow: Flow =
            serde_json::from_slice(&plain).map_err(|_| unknown("the stored flow is unreadable"))?;
        if unix_ms().saturating_sub(flow.started_ms) >= FLOW_LIFETIME.as_millis() as u64 {
            return Err(unknown("the flow expired"));
        }
        let grant = {
            let grants = self.inner.grants.lock().unwrap_or_else(|p| p.into_inner());
            grants.get(&flow.grant_key).cloned()
        }
        .ok_or_else(|| unknown("this host has no such grant (is its config the same?)"))?;
        if let Some(error) = error {
            return Err(ConnectError::Refused(error.chars().take(200).collect()));
        }
        let code = code.ok_or_else(|| ConnectError::Refused("no code in the callback".into()))?;
        let issued = match client::exchange_code(
            &grant,
            code.to_owned(),
            PkceCodeVerifier::new(flow.verifier),
            &flow.redirect_url,
        )
        .await
        {
            Answer::Issued(issued) => issued,
            Answer::Dead(reason) | Answer::Failed(reason) => {
                return Err(ConnectError::Exchange(grant.redact(&reason)));
            }
        };
        // Replace whatever is stored (a dead grant, an older account),
        // under the same lock refreshes take.
        let _flight = grant.flight_lock().await;
        let shared = &grant.shared;
        let mut locked = false;
        for _ in 0..200 {
            locked = shared
                .store
                .lock(&grant.key, &shared.holder, Duration::from_secs(30))
                .await
                .map_err(|e| ConnectError::Exchange(e.to_string()))?;
            if locked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !locked {
            return Err(ConnectError::Exchange(
                "another host held this grant's refresh lock for 20 s; connect again".into(),
            ));
        }
        let stored = shared
            .load(&grant.key)
            .await
            .map_err(ConnectError::Exchange);
        let result = match stored {
            Ok(stored) => {
                let revision = stored.as_ref().map(|(_, r)| *r);
                // The new tokens replace the record, and `connected` is
                // reported. Only a refresh token the server did not send
                // again (some do not on a repeat consent) is kept.
                let kept = stored.and_then(|(record, _)| record.refresh_token.clone());
                if issued.refresh.is_none() {
                    tracing::warn!(connection = %grant.connection, grant = %grant.name, kept = kept.is_some(), "the code exchange gave no refresh token");
                }
                let mut old = Record::default();
                old.refresh_token = kept;
                grant.forget();
                grant
                    .store_issued(old, revision, issued, true)
                    .await
                    .map(|_| ())
                    .map_err(|e| ConnectError::Exchange(e.to_string()))
            }
            Err(e) => Err(e),
        };
        let _ = shared.store.unlock(&grant.key, &shared.holder).await;
        result?;
        tracing::info!(connection = %grant.connection, grant = %grant.name, "oauth account connected");
        Ok((grant.connection.clone(), grant.name.clone()))
    }
}
