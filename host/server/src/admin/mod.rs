//! The admin API, `/admin/v1`: plugins, audit trail, alerts and status.
//!
//! Every route needs `Authorization: Bearer <token>`, the token coming from
//! the host's secret providers (`[admin] token = { env = … }` or
//! `{ file = … }`). Without a configured token every admin route answers
//! 403 and says how to configure one: the admin API is default-deny.

use crate::{AppState, error_body};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_broker::secrets::SecretValue;

mod audit;
mod monitor;
mod oauth;
mod plugins;

pub(crate) use oauth::callback_routes as oauth_callback_routes;

/// Admin state shared by the handlers.
#[derive(Clone, Default)]
pub(crate) struct AdminState {
    /// sha256 of the token: comparing digests keeps the comparison's
    /// timing independent of where the presented token first differs.
    token_sha256: Option<Arc<[u8; 32]>>,
    /// Where uploads go.
    pub(crate) plugin_dir: Option<PathBuf>,
}

impl AdminState {
    pub(crate) fn new(token: Option<SecretValue>, plugin_dir: Option<PathBuf>) -> Self {
        AdminState {
            token_sha256: token.map(|t| Arc::new(Sha256::digest(t.expose()).into())),
            plugin_dir,
        }
    }
}

impl AdminState {
    /// Whether `token` is the admin token (a digest compared in constant
    /// time).
    pub(crate) fn is_admin_token(&self, token: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.token_sha256.as_ref().is_some_and(|expected| {
            bool::from(Sha256::digest(token).as_slice().ct_eq(&expected[..]))
        })
    }
}

/// `routes` behind the bearer-token check.
pub(crate) fn protect(routes: Router<AppState>, state: AppState) -> Router<AppState> {
    routes.route_layer(axum::middleware::from_fn_with_state(state, require_token))
}

/// The admin routes, behind the bearer-token check.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let routes = Router::new()
        .merge(plugins::routes(
            state.runtime.limits().component_bytes as usize,
        ))
        .merge(monitor::routes())
        .merge(oauth::routes())
        .merge(audit::routes());
    protect(routes, state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.admin.token_sha256.is_none() {
        return error_body(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is off: set [admin] token = { env = \"VAR\" } (or { file = \"path\" }) in switchyard.toml",
        );
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if state.admin.is_admin_token(token.as_bytes()) => next.run(request).await,
        Some(_) => error_body(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the admin token",
        ),
        None => {
            let mut response = error_body(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the admin token as `Authorization: Bearer <token>`",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            response
        }
    }
}
