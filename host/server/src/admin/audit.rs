//! `GET /admin/v1/audit?connection=&plugin=&kind=&since=&until=&limit=`:
//! the audit trail, newest first.
//!
//! `kind` is `egress`, `secret` or `state`; `since` and `until` are a
//! duration back from now (`1h`, `30m`, `7d`) or an RFC 3339 time;
//! `limit` defaults to 100 (at most 10 000). Answers
//! `{"records":[…]}`, 404 `audit_disabled` when the trail is off and 400
//! `invalid_input` for a bad filter.

use crate::{AppState, error_body};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use switchyard_ops::audit::{AuditFilter, AuditKind, now_ms, parse_time};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/audit", get(list))
}

#[derive(Debug, Deserialize)]
struct Params {
    connection: Option<String>,
    plugin: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

fn filter(params: Params) -> Result<AuditFilter, String> {
    let now = now_ms();
    let time = |t: Option<String>| t.map(|t| parse_time(&t, now)).transpose();
    Ok(AuditFilter {
        connection: params.connection,
        plugin: params.plugin,
        kind: params
            .kind
            .map(|k| k.parse::<AuditKind>())
            .transpose()
            .map_err(|e| format!("kind {e}"))?,
        since_ms: time(params.since).map_err(|e| format!("since {e}"))?,
        until_ms: time(params.until).map_err(|e| format!("until {e}"))?,
        limit: params.limit,
    })
}

async fn list(State(state): State<AppState>, Query(params): Query<Params>) -> Response {
    let Some(audit) = state.audit.clone() else {
        return error_body(
            StatusCode::NOT_FOUND,
            "audit_disabled",
            "the audit trail is off: set [audit] enabled = true in switchyard.toml",
        );
    };
    let filter = match filter(params) {
        Ok(filter) => filter,
        Err(message) => return error_body(StatusCode::BAD_REQUEST, "invalid_input", &message),
    };
    // Read-your-writes: what happened before this request is on disk first.
    let found = tokio::task::spawn_blocking(move || {
        audit.flush();
        audit.query(&filter)
    })
    .await;
    match found {
        Ok(Ok(records)) => axum::Json(json!({ "records": records })).into_response(),
        Ok(Err(e)) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "host", &e.to_string()),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "host", &e.to_string()),
    }
}
