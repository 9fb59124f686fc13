//! `/admin/v1/oauth`: connections' OAuth grants, and connecting accounts.
//! `GET /oauth/callback` (no admin token: the single-use `state` is the
//! proof) finishes what `POST …/connect` started.

use crate::{AppState, error_body};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use switchyard_oauth::connect::ConnectError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/oauth", get(list)).route(
        "/admin/v1/oauth/{connection}/{grant}/connect",
        post(connect),
    )
}

/// The callback route, outside the admin token check.
pub(crate) fn callback_routes() -> Router<AppState> {
    // The path is `switchyard_oauth::CALLBACK_PATH`, spelled out for the
    // OpenAPI check that reads routes from the source.
    Router::new().route("/oauth/callback", get(callback))
}

fn not_configured() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "not_configured",
        "no connection has an oauth grant ([connections.NAME.grants.oauth.GRANT])",
    )
}

/// `GET /admin/v1/oauth`:
///
/// ```json
/// {"redirect_url": "http://127.0.0.1:8080/oauth/callback",
///  "grants": [{"connection": "crm", "grant": "crm", "grant_type": "authorization_code",
///              "status": "needs_reauthorization", "reason": "invalid_grant: …",
///              "expires_at_ms": 1764000000000, "obtained_at_ms": 1763999000000,
///              "scope": "api:read", "connectable": true}]}
/// ```
///
/// `status` is `not_connected`, `connected` or `needs_reauthorization`.
/// No token is ever in it.
async fn list(State(state): State<AppState>) -> Response {
    let Some(oauth) = &state.oauth else {
        return not_configured();
    };
    axum::Json(json!({
        "redirect_url": oauth.redirect_url(),
        "grants": oauth.statuses().await,
    }))
    .into_response()
}

/// `POST /admin/v1/oauth/{connection}/{grant}/connect` →
/// `{"authorize_url": "https://…"}`: send the operator's browser there.
/// The authorization server sends it back to `/oauth/callback`, which
/// stores the tokens (replacing a dead grant's). 404 for an unknown grant,
/// 409 for a `client_credentials` grant (nothing to connect).
async fn connect(
    State(state): State<AppState>,
    Path((connection, grant)): Path<(String, String)>,
) -> Response {
    let Some(oauth) = &state.oauth else {
        return not_configured();
    };
    match oauth.start_connect(&connection, &grant).await {
        Ok(url) => axum::Json(json!({ "authorize_url": url })).into_response(),
        Err(e @ ConnectError::UnknownGrant { .. }) => {
            error_body(StatusCode::NOT_FOUND, "unknown_grant", &e.to_string())
        }
        Err(e @ ConnectError::NotAuthorizationCode(_)) => {
            error_body(StatusCode::CONFLICT, "not_connectable", &e.to_string())
        }
        Err(e @ ConnectError::Store(_)) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "token_store",
            &e.to_string(),
        ),
        Err(e) => error_body(StatusCode::BAD_REQUEST, "oauth_config", &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oauth/callback?code=…&state=…`: a small page saying whether the
/// account is connected, linking back to the status page.
async fn callback(State(state): State<AppState>, Query(query): Query<Callback>) -> Response {
    let Some(oauth) = &state.oauth else {
        return not_configured();
    };
    let error = query
        .error
        .as_ref()
        .map(|e| match &query.error_description {
            Some(d) => format!("{e}: {d}"),
            None => e.clone(),
        });
    let result = match &query.state {
        Some(flow) => {
            oauth
                .finish_connect(flow, query.code.as_deref(), error.as_deref())
                .await
        }
        None => Err(ConnectError::UnknownState),
    };
    let (status, title, text) = match &result {
        Ok((connection, grant)) => (
            StatusCode::OK,
            "Connected",
            format!("Connection {connection} is connected (oauth grant {grant})."),
        ),
        Err(ConnectError::Store(detail)) => {
            // The page is public: the store's detail goes to the log only.
            tracing::error!(error = %detail, "oauth callback: the token store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Not connected",
                "The host's token store is unavailable; try the callback again shortly.".to_owned(),
            )
        }
        Err(e) => (StatusCode::BAD_REQUEST, "Not connected", e.to_string()),
    };
    let outcome = if result.is_ok() {
        "connected"
    } else {
        "failed"
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1 data-testid=\"oauth-outcome\" data-outcome=\"{outcome}\">{title}</h1><p>{}</p>\
         <p><a href=\"/status\">Back to the status page</a></p></body></html>",
        escape(&text)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
