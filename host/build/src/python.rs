//! Python connectors: a folder with `app.py` (binding `Connector =
//! switchyard_connector.export(...)`) and a `<name>.manifest.toml`, built
//! with componentize-py into a component.
//!
//! The component imports only what the manifest requests: the build
//! writes a world with `log`, `config`, and `secrets`, `state`,
//! `rate-limit` and `wasi:http/outgoing-handler` only when the manifest
//! asks for them (componentize-py imports every interface of the world it
//! is given). The WIT and the Python SDK (`sdk/python`) are built into
//! this crate, so `switchyard plugin build` needs nothing but
//! componentize-py ([`COMPONENTIZE_PY`], from PyPI).

use crate::BuildError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-py release the SDK is tested with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The connector WIT and its WASI dependencies, as `(path, text)`.
pub const WIT: &[(&str, &str)] = &[
    ("connector.wit", include_str!("../../../wit/connector.wit")),
    (
        "deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

/// The Python SDK, as `(path, text)`.
const SDK: &[(&str, &str)] = &[
    (
        "switchyard_connector/__init__.py",
        include_str!("../../../sdk/python/switchyard_connector/__init__.py"),
    ),
    (
        "switchyard_connector/errors.py",
        include_str!("../../../sdk/python/switchyard_connector/errors.py"),
    ),
    (
        "switchyard_connector/config.py",
        include_str!("../../../sdk/python/switchyard_connector/config.py"),
    ),
    (
        "switchyard_connector/http.py",
        include_str!("../../../sdk/python/switchyard_connector/http.py"),
    ),
    (
        "switchyard_connector/log.py",
        include_str!("../../../sdk/python/switchyard_connector/log.py"),
    ),
    (
        "switchyard_connector/rate_limit.py",
        include_str!("../../../sdk/python/switchyard_connector/rate_limit.py"),
    ),
    (
        "switchyard_connector/secrets.py",
        include_str!("../../../sdk/python/switchyard_connector/secrets.py"),
    ),
    (
        "switchyard_connector/state.py",
        include_str!("../../../sdk/python/switchyard_connector/state.py"),
    ),
];

/// What a connector's manifest requests, as far as imports go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub http: bool,
    pub secrets: bool,
    pub state: bool,
    pub rate_limits: bool,
}

#[derive(serde::Deserialize)]
struct ManifestRequests {
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    rate_limits: Vec<String>,
    #[serde(default)]
    state: bool,
}

/// A connector folder's name and manifest: the one `*.manifest.toml` in
/// it (its name before `.manifest.toml`), or the folder's name and no
/// requests when there is none.
pub fn manifest(dir: &Path) -> Result<(String, Option<PathBuf>, Requests), BuildError> {
    let io = |source| BuildError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(".manifest.toml") {
            found.push((stem.to_owned(), path.clone()));
        }
    }
    let folder = || {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "connector".into())
    };
    match found.len() {
        0 => Ok((folder(), None, Requests::default())),
        1 => {
            let (name, path) = found.remove(0);
            let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Io {
                path: path.clone(),
                source,
            })?;
            let parsed: ManifestRequests = toml::from_str(&text)
                .map_err(|e| BuildError::Manifest(format!("{}: {e}", path.display())))?;
            let requests = Requests {
                http: !parsed.http.is_empty(),
                secrets: !parsed.secrets.is_empty(),
                state: parsed.state,
                rate_limits: !parsed.rate_limits.is_empty(),
            };
            Ok((name, Some(path), requests))
        }
        _ => Err(BuildError::Manifest(format!(
            "{}: more than one *.manifest.toml; keep the one named after the connector",
            dir.display()
        ))),
    }
}

/// The world a connector with `requests` is built against.
pub fn world(name: &str, requests: Requests) -> String {
    let mut imports = vec!["log", "config"];
    for (wanted, interface) in [
        (requests.secrets, "secrets"),
        (requests.state, "state"),
        (requests.rate_limits, "rate-limit"),
        (requests.http, "wasi:http/outgoing-handler@0.2.12"),
    ] {
        if wanted {
            imports.push(interface);
        }
    }
    let imports: String = imports
        .iter()
        .map(|i| format!("    import {i};\n"))
        .collect();
    format!(
        "package switchyard:connector@0.1.1;\n\n/// Written by `switchyard plugin build`: what the manifest requests.\nworld {name} {{\n{imports}    export connector;\n}}\n"
    )
}

/// Writes `files` under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) -> Result<(), BuildError> {
    for (path, text) in files {
        let path = dir.join(path);
        let io = |source| BuildError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
        std::fs::write(&path, text).map_err(io)?;
    }
    Ok(())
}

/// componentize-py: `SWITCHYARD_COMPONENTIZE_PY`, else on `PATH`, else
/// the one `./dev setup` installs in the checkout.
fn componentize_py() -> Result<PathBuf, BuildError> {
    find_tool(
        "SWITCHYARD_COMPONENTIZE_PY",
        "componentize-py",
        ".switchyard/guest-venv/bin/componentize-py",
        &format!("(Python connectors): `pip install {COMPONENTIZE_PY}`"),
    )
}

/// A guest build tool: the path in `env_var`, else `program` on `PATH`,
/// else `in_checkout` (relative to this checkout, where `./dev setup`
/// installs it); `how` says how to install it otherwise.
pub(crate) fn find_tool(
    env_var: &str,
    program: &str,
    in_checkout: &str,
    how: &str,
) -> Result<PathBuf, BuildError> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(in_checkout);
    on_path
        .or_else(|| local.is_file().then_some(local))
        .ok_or_else(|| BuildError::NoToolchain(format!("{program} is not installed {how}")))
}

/// The world a Python or JavaScript build targets: [`world`] with only
/// what the manifest requests.
pub(crate) const WORLD_NAME: &str = "connector-build";

/// A fresh scratch folder `<out_dir>/.<name>-build` holding the WIT
/// package and the [`WORLD_NAME`] world for `requests` under `wit/`.
pub(crate) fn scratch(
    out_dir: &Path,
    name: &str,
    requests: Requests,
) -> Result<PathBuf, BuildError> {
    let work = out_dir.join(format!(".{name}-build"));
    let _ = std::fs::remove_dir_all(&work);
    write_tree(&work.join("wit"), WIT)?;
    write_tree(
        &work.join("wit"),
        &[("build-world.wit", &world(WORLD_NAME, requests))],
    )?;
    Ok(work)
}

/// Builds the Python connector in `dir` into `<out_dir>/<name>.wasm`.
pub fn build(dir: &Path, out_dir: &Path) -> Result<(String, PathBuf), BuildError> {
    if !dir.join("app.py").is_file() {
        return Err(BuildError::NotAConnector(dir.to_owned()));
    }
    let (name, _, requests) = manifest(dir)?;
    let work = scratch(out_dir, &name, requests)?;
    write_tree(&work.join("sdk"), SDK)?;
    let out = out_dir.join(format!("{name}.wasm"));
    let program = componentize_py()?;
    let status = Command::new(&program)
        .arg("-d")
        .arg(work.join("wit"))
        .args(["-w", WORLD_NAME, "componentize", "app", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(work.join("sdk"))
        .arg("-o")
        .arg(&out)
        .status();
    // The scratch copy goes whatever happened.
    let _ = std::fs::remove_dir_all(&work);
    succeeded(status, &program, "componentize-py")?;
    Ok((name, out))
}

/// A guest build tool's exit as a [`BuildError`] unless it succeeded.
pub(crate) fn succeeded(
    status: std::io::Result<std::process::ExitStatus>,
    program: &Path,
    tool: &str,
) -> Result<(), BuildError> {
    let status = status.map_err(|source| BuildError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::Guest {
        tool: tool.into(),
        code: status
            .code()
            .map_or_else(|| "signal".into(), |c| c.to_string()),
    })
}
