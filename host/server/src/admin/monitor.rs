//! `/admin/v1/alerts` and `/admin/v1/status`: what the monitor saw.

use crate::{AppState, error_body};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use switchyard_flows::pipelines::{hook_queue, pipeline_queue};
use switchyard_flows::sync::sync_pipeline;
use switchyard_ops::monitor::Monitor;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/alerts", get(alerts))
        .route("/admin/v1/status", get(status))
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `GET /admin/v1/alerts[?limit=N]` (default 100, at most the kept ones):
///
/// ```json
/// {"alerts": [{"id": "alert_…", "kind": "volume_drop", "subject": "sync:copy/orders",
///              "message": "…", "observed": 40.0, "baseline": 100.0, "at_ms": 1764000000000}]}
/// ```
///
/// Newest first; `kind` is `volume_drop`, `volume_zero`,
/// `latency_regression` or `reconciliation_mismatch`. 404 when monitoring
/// is off.
async fn alerts(State(state): State<AppState>, Query(limit): Query<Limit>) -> Response {
    let Some(monitor) = &state.monitor else {
        return error_body(
            StatusCode::NOT_FOUND,
            "not_configured",
            "monitoring is off ([monitoring] enabled = false)",
        );
    };
    let alerts = monitor.alerts(limit.limit.unwrap_or(100));
    axum::Json(json!({ "alerts": alerts })).into_response()
}

/// `GET /admin/v1/status`, for a status page:
///
/// ```json
/// {
///   "health": {"status": "ok", "connections": 3},
///   "plugins": [{"name": "couchdb-sink", "version": "0.1.0", "connections": ["dst"]}],
///   "series": [{"at_ms": 1764000000000, "invocations": 12, "errors": 0,
///               "p50_ms": 1.2, "p99_ms": 8.5, "records_in": 100, "records_out": 100}],
///   "volumes": [{"flow": "sync", "name": "copy", "stream": "orders",
///                "points": [{"at_ms": 1764000000000, "count": 100}]}],
///   "latency": [{"plugin": "echo", "pattern": "action", "action": "greet",
///                "baseline_p99_ms": 2.0, "windows": 5}],
///   "alerts": [/* the latest 20, as in /admin/v1/alerts */],
///   "dlq": {"pipeline:to-crm": 0, "hook:github": 1, "pipeline:sync.copy": 0},
///   "syncs": {"copy": {/* the last run report, as in GET /v1/syncs, or null */}},
///   "oauth": [/* the grants, as in GET /admin/v1/oauth */]
/// }
/// ```
///
/// `series` is the last hour in `series_bucket_secs` buckets, oldest
/// first, quiet buckets as zeros; `dlq` counts dead letters per queue of
/// every webhook, pipeline and sync; `monitor`-fed keys (`series`,
/// `volumes`, `latency`, `alerts`) are empty when monitoring is off.
async fn status(State(state): State<AppState>) -> Response {
    let runtime = &state.runtime;
    let mut plugins: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for connection in runtime.connections() {
        let plugin = connection.plugin();
        plugins
            .entry(plugin.name().to_owned())
            .or_insert_with(|| (plugin.version().to_owned(), Vec::new()))
            .1
            .push(connection.name().to_owned());
    }
    let plugins: Vec<Value> = plugins
        .into_iter()
        .map(|(name, (version, connections))| {
            json!({ "name": name, "version": version, "connections": connections })
        })
        .collect();
    let mut dlq = Map::new();
    let mut syncs = Map::new();
    if let Some(pipelines) = &state.pipelines {
        let queue = pipelines.queue();
        let mut queues: Vec<String> = pipelines.webhook_names().map(hook_queue).collect();
        queues.extend(pipelines.pipeline_names().map(pipeline_queue));
        if let Some(all) = &state.syncs {
            queues.extend(
                all.configs()
                    .keys()
                    .map(|s| pipeline_queue(&sync_pipeline(s))),
            );
            for name in all.configs().keys() {
                let last = all
                    .cursors()
                    .runs(name, 1)
                    .await
                    .unwrap_or_default()
                    .first()
                    .and_then(|r| serde_json::from_str::<Value>(r).ok());
                syncs.insert(name.clone(), last.unwrap_or(Value::Null));
            }
        }
        for name in queues {
            let dead = queue.stats(&name).await.map(|s| s.dead).ok();
            dlq.insert(name, json!(dead));
        }
    }
    let monitor = state.monitor.as_ref();
    let oauth = match &state.oauth {
        Some(oauth) => oauth.statuses().await,
        None => Vec::new(),
    };
    axum::Json(json!({
        "oauth": oauth,
        "health": { "status": "ok", "connections": runtime.connections().len() },
        "plugins": plugins,
        "series": monitor.map(Monitor::series).unwrap_or_default(),
        "volumes": monitor.map(Monitor::volumes).unwrap_or_default(),
        "latency": monitor.map(Monitor::latency).unwrap_or_default(),
        "alerts": monitor.map(|m| m.alerts(20)).unwrap_or_default(),
        "dlq": dlq,
        "syncs": syncs,
    }))
    .into_response()
}
