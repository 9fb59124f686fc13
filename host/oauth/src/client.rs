//! Talking to the authorization server with the `oauth2` crate, over the
//! host's own egress ([`Egress::send_as_host`]): the token endpoint is
//! reached under the same address checks and TLS as guests' requests.

use crate::grant::Grant;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use std::time::{Duration, Instant};
use switchyard_broker::egress::Egress;
use switchyard_broker::oauth::ClientAuth;
use switchyard_broker::secrets::SecretValue;

/// Tokens the server issued.
pub(crate) struct Issued {
    pub access: SecretValue,
    pub refresh: Option<SecretValue>,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

/// How a token request ended.
pub(crate) enum Answer {
    Issued(Issued),
    /// The grant or client is dead (`invalid_grant`, `invalid_client`,
    /// `unauthorized_client`): retrying cannot help.
    Dead(String),
    /// The server or the network failed; later may work.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

/// The `oauth2` crate's HTTP client: the host's egress. (A named type
/// with a boxed `Send` future, as a closure's future would not be `Send`
/// for every lifetime the crate asks for.)
struct HostHttp<'a>(&'a Egress);

impl<'c> oauth2::AsyncHttpClient<'c> for HostHttp<'_> {
    type Error = Transport;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, Transport>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move { self.0.send_as_host(request).await.map_err(Transport) })
    }
}

fn client(grant: &Grant) -> Result<BasicClient, String> {
    let config = &grant.config;
    let _ = TokenUrl::new(config.token_url.clone()).map_err(|e| format!("token_url: {e}"))?;
    Ok(BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(
            String::from_utf8_lossy(grant.client_secret.expose()).into_owned(),
        ))
        .set_auth_type(match config.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post => AuthType::RequestBody,
        }))
}

fn token_url(grant: &Grant) -> Result<TokenUrl, String> {
    TokenUrl::new(grant.config.token_url.clone()).map_err(|e| format!("token_url: {e}"))
}

/// Asks for a token with the grant's kind: `client_credentials` or, with
/// `refresh`, `refresh_token`.
pub(crate) async fn request_token(grant: &Grant, refresh: Option<&SecretValue>) -> Answer {
    let started = Instant::now();
    let kind = if refresh.is_some() {
        "refresh_token"
    } else {
        "client_credentials"
    };
    let answer = match (client(grant), token_url(grant)) {
        (Ok(client), Ok(url)) => {
            let client = client.set_token_uri(url);
            let http = HostHttp(&grant.egress);
            let scopes = grant.config.scopes.iter().map(|s| Scope::new(s.clone()));
            let result = match refresh {
                Some(token) => {
                    let token =
                        RefreshToken::new(String::from_utf8_lossy(token.expose()).into_owned());
                    let mut request = client.exchange_refresh_token(&token);
                    for (k, v) in &grant.config.extra_params {
                        request = request.add_extra_param(k.clone(), v.clone());
                    }
                    request.request_async(&http).await
                }
                None => {
                    let mut request = client.exchange_client_credentials().add_scopes(scopes);
                    for (k, v) in &grant.config.extra_params {
                        request = request.add_extra_param(k.clone(), v.clone());
                    }
                    request.request_async(&http).await
                }
            };
            judge(result)
        }
        (Err(e), _) | (_, Err(e)) => Answer::Failed(e),
    };
    grant.observe_request(kind, &answer, started.elapsed());
    answer
}

/// Exchanges an authorization code (with its PKCE verifier).
pub(crate) async fn exchange_code(
    grant: &Grant,
    code: String,
    verifier: PkceCodeVerifier,
    redirect: &str,
) -> Answer {
    let started = Instant::now();
    let answer = match (
        client(grant),
        token_url(grant),
        RedirectUrl::new(redirect.to_owned()),
    ) {
        (Ok(client), Ok(url), Ok(redirect)) => {
            let client = client.set_token_uri(url).set_redirect_uri(redirect);
            let http = HostHttp(&grant.egress);
            let mut request = client
                .exchange_code(AuthorizationCode::new(code))
                .set_pkce_verifier(verifier);
            for (k, v) in &grant.config.extra_params {
                request = request.add_extra_param(k.clone(), v.clone());
            }
            judge(request.request_async(&http).await)
        }
        (Err(e), _, _) | (_, Err(e), _) => Answer::Failed(e),
        (_, _, Err(e)) => Answer::Failed(format!("redirect URL: {e}")),
    };
    grant.observe_request("authorization_code", &answer, started.elapsed());
    answer
}

/// Where to send the operator's browser: the authorization URL with a
/// fresh `state` and a PKCE S256 challenge, plus the state and verifier.
pub(crate) fn authorize_url(
    grant: &Grant,
    redirect: &str,
) -> Result<(String, CsrfToken, PkceCodeVerifier), String> {
    let auth = grant
        .config
        .authorize_url
        .clone()
        .ok_or("this grant has no `authorize_url`")?;
    let auth = AuthUrl::new(auth).map_err(|e| format!("authorize_url: {e}"))?;
    let redirect =
        RedirectUrl::new(redirect.to_owned()).map_err(|e| format!("redirect URL: {e}"))?;
    let client = client(grant)?.set_auth_uri(auth).set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(grant.config.scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge);
    for (k, v) in &grant.config.extra_params {
        request = request.add_extra_param(k.clone(), v.clone());
    }
    let (url, state) = request.url();
    Ok((url.to_string(), state, verifier))
}

type TokenResult = Result<
    oauth2::basic::BasicTokenResponse,
    RequestTokenError<Transport, oauth2::basic::BasicErrorResponse>,
>;

fn judge(result: TokenResult) -> Answer {
    match result {
        Ok(response) => Answer::Issued(Issued {
            access: SecretValue::new(response.access_token().secret().as_bytes().to_vec()),
            refresh: response
                .refresh_token()
                .map(|t| SecretValue::new(t.secret().as_bytes().to_vec())),
            expires_in: response.expires_in(),
            scope: response.scopes().map(|scopes| {
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        }),
        Err(RequestTokenError::ServerResponse(error)) => {
            // The server's description is shown to operators; it names the
            // problem, never a token (the server is not sent any in it).
            let text = match error.error_description() {
                Some(description) => format!("{}: {description}", error.error()),
                None => error.error().to_string(),
            };
            match error.error() {
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient => Answer::Dead(text),
                _ => Answer::Failed(text),
            }
        }
        Err(RequestTokenError::Request(e)) => Answer::Failed(e.to_string()),
        Err(RequestTokenError::Parse(e, _body)) => {
            Answer::Failed(format!("the token endpoint's answer does not parse: {e}"))
        }
        Err(RequestTokenError::Other(e)) => Answer::Failed(e),
    }
}
