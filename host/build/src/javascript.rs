//! JavaScript connectors: a folder with `app.js` (ending in `export const
//! connector = sy.exportConnector(...)`) and a `<name>.manifest.toml`,
//! built with componentize-js ([`COMPONENTIZE_JS`], from npm).
//!
//! As for Python, the world holds only what the manifest requests. The
//! SDK (`sdk/js/switchyard-connector.js`, built into this crate) is put in
//! front of the app as one module: its `// requires: X` import lines are
//! dropped when the manifest does not request X, and the app's
//! `import * as sy from "switchyard-connector";` line names it.

use crate::BuildError;
use crate::python::{Requests, WORLD_NAME, find_tool, manifest, scratch, succeeded, write_tree};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-js release the SDK is tested with.
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

const SDK: &str = include_str!("../../../sdk/js/switchyard-connector.js");
const SDK_IMPORT: &str = "import * as sy from \"switchyard-connector\";";

/// The SDK and the app as the one module componentize-js takes.
pub fn source(app: &str, requests: Requests) -> Result<String, BuildError> {
    if !app.lines().any(|l| l.trim() == SDK_IMPORT) {
        return Err(BuildError::Manifest(format!(
            "app.js must import the SDK as `{SDK_IMPORT}`"
        )));
    }
    let wanted = |what: &str| match what {
        "secrets" => requests.secrets,
        "state" => requests.state,
        "rate_limits" => requests.rate_limits,
        _ => true,
    };
    let mut out = String::new();
    for line in SDK.lines() {
        match line.split_once("// requires: ") {
            Some((_, what)) if !wanted(what.trim()) => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for line in app.lines() {
        if line.trim() != SDK_IMPORT {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// componentize-js: `SWITCHYARD_COMPONENTIZE_JS`, else on `PATH`, else
/// the one `./dev setup` installs in the checkout.
fn componentize_js() -> Result<PathBuf, BuildError> {
    find_tool(
        "SWITCHYARD_COMPONENTIZE_JS",
        "componentize-js",
        ".switchyard/guest-node/node_modules/.bin/componentize-js",
        &format!("(JavaScript connectors): `npm install -g {COMPONENTIZE_JS}`"),
    )
}

/// Builds the JavaScript connector in `dir` into `<out_dir>/<name>.wasm`.
pub fn build(dir: &Path, out_dir: &Path) -> Result<(String, PathBuf), BuildError> {
    let app_path = dir.join("app.js");
    let app = std::fs::read_to_string(&app_path).map_err(|source| BuildError::Io {
        path: app_path.clone(),
        source,
    })?;
    let (name, _, requests) = manifest(dir)?;
    let work = scratch(out_dir, &name, requests)?;
    write_tree(&work, &[("connector.js", &source(&app, requests)?)])?;
    let out = out_dir.join(format!("{name}.wasm"));
    let program = componentize_js()?;
    let mut command = Command::new(&program);
    command.arg("--wit").arg(work.join("wit")).args([
        "--world-name",
        WORLD_NAME,
        "-d",
        "fetch-event",
    ]);
    if !requests.http {
        command.args(["-d", "http"]);
    }
    let status = command
        .arg("-o")
        .arg(&out)
        .arg(work.join("connector.js"))
        .status();
    let _ = std::fs::remove_dir_all(&work);
    succeeded(status, &program, "componentize-js")?;
    Ok((name, out))
}
