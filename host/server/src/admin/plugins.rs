//! `/admin/v1/plugins`: list, upload and remove plugins at runtime.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/plugins", get(list))
}

async fn list(State(state): State<AppState>) -> Response {
    let plugins: Vec<_> = state
        .runtime
        .connections()
        .iter()
        .map(|c| json!({"name": c.plugin().name(), "version": c.plugin().version()}))
        .collect();
    axum::Json(json!({ "plugins": plugins })).into_response()
}
