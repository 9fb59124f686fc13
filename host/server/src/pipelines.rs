//! Webhook intake and the dead-letter admin API.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/hooks/{name}` | verify, queue durably, `202 {"id":…}` |
//! | `GET /v1/hooks` | per-webhook accepted / rejected counters |
//! | `GET /v1/pipelines` | per-queue counts (ready, in flight, done, dead) |
//! | `GET /v1/dlq[?queue=Q]` | dead letters |
//! | `GET /v1/dlq/{seq}` | one dead letter with its message |
//! | `POST /v1/dlq/{seq}/replay`, `POST /v1/dlq/replay[?queue=Q]` | back onto the queue |
//! | `GET /v1/syncs` | each sync's cursors and latest runs |
//! | `POST /v1/syncs/{name}/run` | run a sync now; its report |

use crate::{AppState, error_body};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use switchyard_flows::pipelines::{IngestError, hook_queue, pipeline_queue};
use switchyard_flows::queue::dead_letter_view;
use switchyard_flows::webhooks::Rejection;
use switchyard_runtime::WebhookRequest;

fn not_configured() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "not_configured",
        "no webhooks, pipelines or syncs are configured",
    )
}

pub(crate) async fn receive_hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = WebhookRequest {
        method: "POST".into(),
        path: String::new(),
        query: String::new(),
        headers,
        body: body.to_vec(),
    };
    // In a task of its own: a sender that hangs up mid-commit must not cut
    // the count and the wake-up that follow the commit.
    let pipelines = pipelines.clone();
    let ingest = tokio::spawn(async move { pipelines.ingest(&name, request).await });
    let result = match ingest.await {
        Ok(result) => result,
        Err(e) => {
            return error_body(StatusCode::INTERNAL_SERVER_ERROR, "host", &e.to_string());
        }
    };
    match result {
        Ok(id) => (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response(),
        Err(IngestError::Unknown(name)) => error_body(
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            &format!("no webhook `{name}` is configured"),
        ),
        Err(IngestError::Rejected(rejection)) => {
            let status = match rejection {
                Rejection::Missing(_) | Rejection::Malformed { .. } => StatusCode::BAD_REQUEST,
                Rejection::Replayed(_) => StatusCode::CONFLICT,
                _ => StatusCode::UNAUTHORIZED,
            };
            error_body(status, rejection.kind(), &rejection.to_string())
        }
        Err(IngestError::Queue(e)) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue",
            &format!("cannot queue the event, retry later: {e}"),
        ),
    }
}

pub(crate) async fn list_hooks(State(state): State<AppState>) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    let mut hooks = serde_json::Map::new();
    for name in pipelines.webhook_names() {
        let Some(counters) = pipelines.webhook_counters(name) else {
            continue;
        };
        let rejected = counters.rejected.lock().unwrap().clone();
        let queue = pipelines.queue().stats(&hook_queue(name)).await.ok();
        hooks.insert(
            name.to_owned(),
            json!({
                "accepted": counters.accepted.load(Ordering::Relaxed),
                "duplicates": counters.duplicates.load(Ordering::Relaxed),
                "rejected": rejected,
                "queue": queue,
            }),
        );
    }
    axum::Json(json!({ "webhooks": hooks })).into_response()
}

pub(crate) async fn list_pipelines(State(state): State<AppState>) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    let mut stats = serde_json::Map::new();
    for name in pipelines.pipeline_names() {
        let counts = pipelines.queue().stats(&pipeline_queue(name)).await.ok();
        stats.insert(name.to_owned(), json!(counts));
    }
    axum::Json(json!({ "pipelines": stats })).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueFilter {
    queue: Option<String>,
}

pub(crate) async fn list_dead_letters(
    State(state): State<AppState>,
    Query(filter): Query<QueueFilter>,
) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    match pipelines
        .queue()
        .dead_letters(filter.queue.as_deref(), 1000)
        .await
    {
        Ok(letters) => axum::Json(json!({ "dead_letters": letters })).into_response(),
        Err(e) => error_body(StatusCode::SERVICE_UNAVAILABLE, "queue", &e.to_string()),
    }
}

pub(crate) async fn show_dead_letter(
    State(state): State<AppState>,
    Path(seq): Path<i64>,
) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    match pipelines.queue().dead_letter_message(seq).await {
        Ok(Some((letter, message))) => {
            axum::Json(dead_letter_view(&letter, &message)).into_response()
        }
        Ok(None) => error_body(
            StatusCode::NOT_FOUND,
            "unknown_dead_letter",
            &format!("no dead letter {seq}"),
        ),
        Err(e) => error_body(StatusCode::SERVICE_UNAVAILABLE, "queue", &e.to_string()),
    }
}

pub(crate) async fn replay_one(State(state): State<AppState>, Path(seq): Path<i64>) -> Response {
    replay(&state, None, Some(seq)).await
}

pub(crate) async fn replay_all(
    State(state): State<AppState>,
    Query(filter): Query<QueueFilter>,
) -> Response {
    replay(&state, filter.queue.as_deref(), None).await
}

async fn replay(state: &AppState, queue: Option<&str>, seq: Option<i64>) -> Response {
    let Some(pipelines) = &state.pipelines else {
        return not_configured();
    };
    match pipelines.queue().replay(queue, seq).await {
        Ok(0) if seq.is_some() => error_body(
            StatusCode::NOT_FOUND,
            "unknown_dead_letter",
            "no such dead letter",
        ),
        Ok(n) => {
            pipelines.wake();
            axum::Json(json!({ "replayed": n })).into_response()
        }
        Err(e) => error_body(StatusCode::SERVICE_UNAVAILABLE, "queue", &e.to_string()),
    }
}

pub(crate) async fn list_syncs(State(state): State<AppState>) -> Response {
    let Some(syncs) = &state.syncs else {
        return error_body(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no syncs are configured",
        );
    };
    let store = syncs.cursors();
    let mut all = serde_json::Map::new();
    for (name, sync) in syncs.configs() {
        let mut cursors = serde_json::Map::new();
        for stream in &sync.streams {
            let cursor = store.cursor(name, stream).await.ok().flatten();
            cursors.insert(stream.clone(), json!(cursor));
        }
        let runs: Vec<serde_json::Value> = store
            .runs(name, 10)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect();
        all.insert(
            name.clone(),
            json!({ "schedule": sync.schedule, "mode": sync.mode, "cursors": cursors, "runs": runs }),
        );
    }
    axum::Json(json!({ "syncs": all })).into_response()
}

pub(crate) async fn run_sync(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) =
        crate::access::check(&state, &headers, &crate::access::Target::Sync(&name))
    {
        return *refused;
    }
    let Some(syncs) = &state.syncs else {
        return error_body(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no syncs are configured",
        );
    };
    if !syncs.configs().contains_key(&name) {
        let message = format!("no sync `{name}` is configured");
        return error_body(StatusCode::NOT_FOUND, "unknown_sync", &message);
    }
    match syncs.run(&name).await {
        Ok(report) => axum::Json(json!({ "report": report })).into_response(),
        Err(e) => error_body(StatusCode::SERVICE_UNAVAILABLE, "sync", &e),
    }
}
