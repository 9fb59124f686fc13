//! HTTP front end for a [`Runtime`]: a thin axum router over the library.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | liveness: `{"status":"ok","connections":N}` |
//! | `GET /v1/connectors` | every connection with its plugin, version and actions |
//! | `POST /v1/connectors/{name}/actions/{action}` | JSON in, JSON out; a caller key unless the connection is public (see [`Access`]) |
//! | `GET /metrics` | Prometheus / OpenMetrics text, public like most exporters |
//! | `GET /status` | the status page, over the admin API (`status.rs`) |
//!
//! plus `POST /v1/hooks/{name}` (signature-checked webhooks), `POST
//! /v1/syncs/{name}/run` (a caller key naming the sync, or the admin
//! token), the operator
//! routes of [`pipelines`] (webhook counters, pipelines, dead letters,
//! syncs) and the [`admin`] API, both behind the admin bearer token.
//! `openapi.json` beside this crate describes every route.
//!
//! Errors are JSON, `{"error":{"kind":…,"message":…}}`, with a status the
//! caller can act on; see [`status_for`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use switchyard_broker::secrets::SecretValue;
use switchyard_flows::pipelines::Pipelines;
use switchyard_flows::sync::Syncs;
use switchyard_host::{Access, Host};
use switchyard_ops::audit::AuditLog;
use switchyard_ops::metrics::Metrics;
use switchyard_ops::monitor::Monitor;
use switchyard_runtime::error::guest_error_message;
use switchyard_runtime::{ConnectorError, InvokeError, Role, Runtime};

mod access;
pub mod admin;
pub mod pipelines;
mod status;

/// What handlers share: the runtime, and the pipelines when configured.
#[derive(Clone)]
pub(crate) struct AppState {
    runtime: Runtime,
    pipelines: Option<Arc<Pipelines>>,
    syncs: Option<Arc<Syncs>>,
    metrics: Option<Arc<Metrics>>,
    audit: Option<Arc<AuditLog>>,
    monitor: Option<Monitor>,
    admin: admin::AdminState,
    access: Arc<Access>,
    oauth: Option<switchyard_oauth::OAuthManager>,
}

/// Everything the server fronts. Only `runtime` is required.
#[derive(Debug, Clone)]
pub struct Services {
    pub runtime: Runtime,
    /// Webhooks and pipelines, when configured.
    pub pipelines: Option<Arc<Pipelines>>,
    /// Batch syncs, when configured.
    pub syncs: Option<Arc<Syncs>>,
    /// Served on `GET /metrics`. Default: none, and it answers 404.
    pub metrics: Option<Arc<Metrics>>,
    /// Queried by `/admin/v1/audit`. Default: none.
    pub audit: Option<Arc<AuditLog>>,
    /// Shown by `/admin/v1/monitor` and the status page. Default: none.
    pub monitor: Option<Monitor>,
    /// The bearer token of `/admin/v1`. Default: none, and the admin API
    /// answers 403 until one is configured.
    pub admin_token: Option<SecretValue>,
    /// Where plugin uploads are written (the watched plugin dir). Default:
    /// none, and uploads are refused.
    pub plugin_dir: Option<std::path::PathBuf>,
    /// Who may call actions and run syncs. Default: nobody (no connection
    /// public, no keys).
    pub access: Arc<Access>,
    /// OAuth grants, shown and connected through `/admin/v1/oauth`.
    /// Default: none.
    pub oauth: Option<switchyard_oauth::OAuthManager>,
}

impl Services {
    /// Just the runtime: no pipelines, no operations backends, no admin
    /// token.
    pub fn new(runtime: Runtime) -> Self {
        Services {
            runtime,
            pipelines: None,
            syncs: None,
            metrics: None,
            audit: None,
            monitor: None,
            admin_token: None,
            plugin_dir: None,
            access: Arc::new(Access::default()),
            oauth: None,
        }
    }

    /// Everything `host` runs; no admin token and no plugin dir yet.
    pub fn from_host(host: &Host) -> Self {
        Services {
            pipelines: host.pipelines.clone(),
            syncs: host.syncs.clone(),
            metrics: Some(host.metrics.clone()),
            audit: host.audit.clone(),
            monitor: host.monitor.clone(),
            access: host.access.clone(),
            oauth: host.oauth.clone(),
            ..Services::new(host.runtime.clone())
        }
    }
}

impl FromRef<AppState> for Runtime {
    fn from_ref(state: &AppState) -> Runtime {
        state.runtime.clone()
    }
}

/// Largest request body accepted. Default: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// The router with every connection public ([`Access::open`]): for tests,
/// and for embedding behind authentication of your own. `serve` uses
/// [`app`] with the config's `[access]`.
pub fn router(runtime: Runtime) -> Router {
    router_with(runtime, None, None)
}

/// [`router`] with webhook, dead-letter and sync routes over `pipelines`
/// and `syncs`; every connection public, syncs run with the admin token
/// only (there is none).
pub fn router_with(
    runtime: Runtime,
    pipelines: Option<Arc<Pipelines>>,
    syncs: Option<Arc<Syncs>>,
) -> Router {
    app(Services {
        pipelines,
        syncs,
        access: Arc::new(Access::open()),
        ..Services::new(runtime)
    })
}

/// The whole HTTP surface over `services`: the public API, webhooks,
/// dead letters, syncs and the authenticated admin API.
pub fn app(services: Services) -> Router {
    use self::pipelines as p;
    let state = AppState {
        admin: admin::AdminState::new(services.admin_token, services.plugin_dir),
        runtime: services.runtime,
        pipelines: services.pipelines,
        syncs: services.syncs,
        metrics: services.metrics,
        audit: services.audit,
        monitor: services.monitor,
        access: services.access,
        oauth: services.oauth,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/connectors", get(list_connectors))
        .route("/v1/connectors/{name}/actions/{action}", post(call_action))
        .route("/v1/hooks/{name}", post(p::receive_hook))
        .route("/v1/syncs/{name}/run", post(p::run_sync))
        .merge(admin::protect(operator_routes(), state.clone()))
        .layer(DefaultBodyLimit::max(DEFAULT_MAX_REQUEST_BYTES))
        .merge(admin::router(state.clone()))
        .merge(status::routes())
        .merge(admin::oauth_callback_routes())
        .with_state(state)
}

/// Routes that show message payloads or change what flows: behind the
/// admin token like `/admin/v1`, although older than it.
fn operator_routes() -> Router<AppState> {
    use self::pipelines as p;
    Router::new()
        .route("/v1/hooks", get(p::list_hooks))
        .route("/v1/pipelines", get(p::list_pipelines))
        .route("/v1/dlq", get(p::list_dead_letters))
        .route("/v1/dlq/replay", post(p::replay_all))
        .route("/v1/dlq/{seq}", get(p::show_dead_letter))
        .route("/v1/dlq/{seq}/replay", post(p::replay_one))
        .route("/v1/syncs", get(p::list_syncs))
}

/// Serves [`router_with`] on `listener` until `shutdown` resolves, then
/// finishes in-flight requests.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The OpenAPI 3.1 description of every route (`tests/openapi.rs` checks
/// it against the router).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn healthz(State(runtime): State<Runtime>) -> Response {
    axum::Json(json!({ "status": "ok", "connections": runtime.connections().len() }))
        .into_response()
}

/// The host's metrics, gauges read now; 404 when it collects none.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(metrics) = state.metrics.clone() else {
        return error_body(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "this runtime collects no metrics",
        );
    };
    let connections = state.runtime.connections();
    let mut plugins: Vec<(&str, &str)> = connections
        .iter()
        .map(|c| (c.plugin().name(), c.plugin().version()))
        .collect();
    plugins.sort_unstable();
    plugins.dedup();
    let queue_stats = match &state.pipelines {
        Some(p) => Some(p.queue().all_stats().await),
        None => None,
    };
    if let Some(audit) = &state.audit {
        metrics.observe_audit_drops(audit.dropped());
    }
    let text = metrics.encode(plugins, queue_stats);
    (
        [(header::CONTENT_TYPE, switchyard_ops::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn list_connectors(State(runtime): State<Runtime>) -> Response {
    let connections: Vec<_> = runtime
        .connections()
        .iter()
        .map(|c| {
            let plugin = c.plugin();
            let info = plugin.info();
            json!({
                "name": c.name(),
                "plugin": plugin.name(),
                "version": plugin.version(),
                "wit": plugin.summary().wit_version,
                "description": info.description,
                "roles": info.roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>(),
                "actions": info.actions.iter().map(|a| json!({"name": a.name, "description": a.description})).collect::<Vec<_>>(),
                "streams": info.streams.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "connections": connections })).into_response()
}

async fn call_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Decided before anything else, so a stranger learns nothing about
    // which connections and actions exist.
    let target = access::Target::Action {
        connection: name.split_once('@').map_or(name.as_str(), |(c, _)| c),
        action: &action,
    };
    let caller = match access::check(&state, &headers, &target) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let runtime = &state.runtime;
    let Some(connection) = runtime.connection(&name) else {
        return error_response(&InvokeError::UnknownConnection(name));
    };
    let info = connection.plugin().info();
    if !info.actions.iter().any(|a| a.name == action) {
        let known: Vec<&str> = info.actions.iter().map(|a| a.name.as_str()).collect();
        let message = format!(
            "connection `{name}` has no action `{action}`; it has: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
        return error_body(StatusCode::NOT_FOUND, "unknown_action", &message);
    }
    let input: &[u8] = if body.is_empty() { b"null" } else { &body };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(input) {
        let message = format!("request body is not JSON: {e}");
        return error_body(StatusCode::BAD_REQUEST, "invalid_input", &message);
    }
    match runtime
        .call_action_as(&name, &action, input, caller.id())
        .await
    {
        Ok(output) => {
            let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok() {
                "application/json"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, content_type)], output).into_response()
        }
        Err(err) => error_response(&err),
    }
}

/// The HTTP status for an invocation error: 400 invalid input, 404 unknown
/// connection, 422 permanent, 429 rate limited, 503 retryable or busy, 504
/// timeout, 502 when the connector crashed or broke a limit, 500 host.
pub fn status_for(err: &InvokeError) -> StatusCode {
    match err {
        InvokeError::Guest(ConnectorError::InvalidInput(_)) => StatusCode::BAD_REQUEST,
        InvokeError::Guest(ConnectorError::Permanent(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        InvokeError::Guest(ConnectorError::RateLimited(_)) => StatusCode::TOO_MANY_REQUESTS,
        InvokeError::Guest(ConnectorError::Retryable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        InvokeError::UnknownConnection(_) => StatusCode::NOT_FOUND,
        InvokeError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        InvokeError::Trap { .. }
        | InvokeError::ResourceLimit(_)
        | InvokeError::OutputTooLarge { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(err: &InvokeError) -> Response {
    let message = match err {
        InvokeError::Guest(inner) => guest_error_message(inner).to_owned(),
        // Trap text carries a backtrace; keep the first line for callers.
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    let mut response = error_body(status_for(err), err.kind(), &message);
    let retry_after_secs = match err {
        InvokeError::Guest(ConnectorError::RateLimited(r)) => {
            Some(r.retry_after_ms.map_or(1, |ms| ms.div_ceil(1000)))
        }
        InvokeError::Busy { .. } => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub(crate) fn error_body(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({ "error": { "kind": kind, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Action => "action",
        Role::Webhook => "webhook",
        Role::Transform => "transform",
        Role::Source => "source",
        Role::Sink => "sink",
    }
}
