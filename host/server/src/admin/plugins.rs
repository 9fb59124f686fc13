//! `/admin/v1/plugins`: list, upload and remove plugins at runtime.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/v1/plugins` | every plugin, its versions (newest is the default), connections and failed loads |
//! | `GET /admin/v1/plugins/{plugin}` | one plugin (`name`) or one version (`name@version`) |
//! | `POST /admin/v1/plugins/{name}?mode=replace\|side-by-side` | upload a version: multipart with `component` (required), `manifest`, `signature` |
//! | `DELETE /admin/v1/plugins/{plugin}` | remove every version (`name`) or one (`name@version`) |
//!
//! An upload is staged in `<plugin_dir>/.incoming`, compiled off the
//! request path and described while the loaded versions keep serving; it
//! moves into the plugin dir as `<name>@<version>.wasm` only once it loaded.
//! `mode=replace` (the default) retires the other versions and deletes
//! their files from the plugin dir; `mode=side-by-side` keeps them.
//! Calls in flight finish on the version they started on.

use crate::{AppState, error_body};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_runtime::{DeployMode, Plugin, Runtime};

/// Room in an upload for the manifest, the signature and the multipart
/// framing, beside the component itself.
const UPLOAD_SIDE_FILES_BYTES: usize = 1 << 20;

/// `component_bytes` is `limits.component_bytes`: an upload may be that
/// plus its side files; the component is then checked like any file.
pub(crate) fn routes(component_bytes: usize) -> Router<AppState> {
    Router::new().route("/admin/v1/plugins", get(list)).route(
        "/admin/v1/plugins/{plugin}",
        get(show)
            .post(upload)
            .delete(remove)
            .layer(DefaultBodyLimit::max(
                component_bytes.saturating_add(UPLOAD_SIDE_FILES_BYTES),
            )),
    )
}

async fn list(State(state): State<AppState>) -> Response {
    let runtime = &state.runtime;
    let mut names: Vec<String> = runtime
        .plugins()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    names.dedup();
    let plugins: Vec<Value> = names.iter().map(|n| plugin_json(runtime, n)).collect();
    let failures = runtime.load_failures();
    axum::Json(json!({ "plugins": plugins, "failures": failures })).into_response()
}

async fn show(State(state): State<AppState>, Path(address): Path<String>) -> Response {
    let runtime = &state.runtime;
    match address.split_once('@') {
        Some((name, version)) => match find_version(runtime, name, version) {
            Some(plugin) => axum::Json(version_json(runtime, &plugin)).into_response(),
            None => not_loaded(&address),
        },
        None if runtime.plugin(&address).is_some() => {
            axum::Json(plugin_json(runtime, &address)).into_response()
        }
        None => not_loaded(&address),
    }
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    mode: Option<String>,
}

async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    multipart: Multipart,
) -> Response {
    let mode = match query.mode.as_deref() {
        None | Some("replace") => DeployMode::Replace,
        Some("side-by-side") => DeployMode::SideBySide,
        Some(other) => {
            let message = format!("mode `{other}` is not one of: replace, side-by-side");
            return error_body(StatusCode::BAD_REQUEST, "invalid_input", &message);
        }
    };
    let Some(dir) = state.admin.plugin_dir.clone() else {
        return error_body(
            StatusCode::CONFLICT,
            "no_plugin_dir",
            "this server has no plugin dir to upload into; serve with a config (plugin_dir)",
        );
    };
    let staging = match stage(&dir, &name, multipart).await {
        Ok(staging) => staging,
        Err(response) => return response,
    };
    let staged = staging.path().join(format!("{name}.wasm"));
    let runtime = &state.runtime;
    match runtime.deploy_into(&name, &staged, &dir, mode).await {
        Ok(deployed) => {
            runtime.ensure_default_connection(&name);
            for old in &deployed.retired {
                if old.path() != deployed.plugin.path() {
                    delete_files_in(&dir, old);
                }
            }
            let body = json!({
                "plugin": version_json(runtime, &deployed.plugin),
                "retired": deployed.retired.iter().map(|p| p.version()).collect::<Vec<_>>(),
            });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Err(e) => error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_failed",
            &format!("{e}; the loaded versions keep serving"),
        ),
    }
}

/// Writes the multipart fields into a fresh staging dir.
async fn stage(
    dir: &std::path::Path,
    name: &str,
    mut multipart: Multipart,
) -> Result<tempfile::TempDir, Response> {
    let bad = |message: String| error_body(StatusCode::BAD_REQUEST, "invalid_input", &message);
    let incoming = dir.join(".incoming");
    let staging = std::fs::create_dir_all(&incoming)
        .and_then(|()| tempfile::tempdir_in(&incoming))
        .map_err(|e| {
            let message = format!("cannot stage the upload in {}: {e}", incoming.display());
            error_body(StatusCode::INTERNAL_SERVER_ERROR, "host", &message)
        })?;
    let mut has_component = false;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("multipart body: {e}")))?
    {
        let file = match field.name() {
            Some("component") => {
                has_component = true;
                format!("{name}.wasm")
            }
            Some("manifest") => format!("{name}.manifest.toml"),
            Some("signature") => format!("{name}.sig"),
            other => {
                return Err(bad(format!(
                    "unknown form field {other:?}; send `component` (required), `manifest` and `signature`"
                )));
            }
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("multipart body: {e}")))?;
        std::fs::write(staging.path().join(file), &bytes)
            .map_err(|e| error_body(StatusCode::INTERNAL_SERVER_ERROR, "host", &e.to_string()))?;
    }
    if !has_component {
        return Err(bad(
            "no `component` field: send the .wasm as multipart field `component`".into(),
        ));
    }
    Ok(staging)
}

async fn remove(State(state): State<AppState>, Path(address): Path<String>) -> Response {
    let (name, version) = match address.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (address.as_str(), None),
    };
    let removed = state.runtime.remove_plugin(name, version);
    if removed.is_empty() {
        return not_loaded(&address);
    }
    let mut kept_on_disk = Vec::new();
    for plugin in &removed {
        match &state.admin.plugin_dir {
            Some(dir) if plugin.path().starts_with(dir) => delete_files_in(dir, plugin),
            _ => kept_on_disk.push(plugin.path().display().to_string()),
        }
    }
    let body = json!({
        "removed": removed.iter().map(|p| p.version()).collect::<Vec<_>>(),
        // Configured under [plugins.X]: loads again at the next start.
        "kept_on_disk": kept_on_disk,
    });
    axum::Json(body).into_response()
}

/// Deletes a plugin's component and side files if they live in `dir`.
fn delete_files_in(dir: &std::path::Path, plugin: &Plugin) {
    let path = plugin.path();
    if !path.starts_with(dir) {
        return;
    }
    for side in switchyard_runtime::plugin::side_files(path) {
        let _ = std::fs::remove_file(side);
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete a retired plugin file");
    }
}

fn find_version(runtime: &Runtime, name: &str, version: &str) -> Option<Arc<Plugin>> {
    runtime
        .plugin_versions(name)
        .into_iter()
        .find(|p| p.version() == version)
}

fn plugin_json(runtime: &Runtime, name: &str) -> Value {
    let versions: Vec<Value> = runtime
        .plugin_versions(name)
        .iter()
        .rev()
        .map(|p| version_json(runtime, p))
        .collect();
    json!({ "name": name, "versions": versions })
}

fn version_json(runtime: &Runtime, plugin: &Plugin) -> Value {
    let is_default = runtime
        .plugin(plugin.name())
        .is_some_and(|p| p.version() == plugin.version());
    let connections: Vec<String> = runtime
        .connections()
        .iter()
        .filter(|c| c.plugin().name() == plugin.name())
        .map(|c| format!("{}@{}", c.name(), plugin.version()))
        .collect();
    let summary = plugin.summary();
    json!({
        "name": plugin.name(),
        "version": plugin.version(),
        "default": is_default,
        "description": plugin.info().description,
        "actions": plugin.info().actions.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
        "wit": summary.wit_version,
        "path": plugin.path(),
        "sha256": summary.sha256,
        "size": summary.size,
        "loaded_at_ms": plugin.loaded_at_ms(),
        "from_cache": plugin.from_cache(),
        "publisher": plugin.publisher(),
        "in_flight": plugin.in_flight(),
        "connections": connections,
    })
}

fn not_loaded(address: &str) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "unknown_plugin",
        &format!("no plugin `{address}` is loaded; GET /admin/v1/plugins lists them"),
    )
}
