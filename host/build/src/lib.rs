//! Builds connector crates into WebAssembly components.
//!
//! [`Toolchain::detect`] picks, in order: a rustup toolchain with the
//! `wasm32-wasip2` target (rustc emits a component directly), one with
//! `wasm32-unknown-unknown`, or Debian's `rustc-web` + `rust-web-src` +
//! `lld-19`, which builds std from source with `-Zbuild-std`. The last two
//! produce a core module that [`componentize`] turns into a component using
//! the type information wit-bindgen embeds. Set `SWITCHYARD_TOOLCHAIN` to
//! `wasip2`, `unknown` or `debian` to force one.
//!
//! Python connectors are built by [`python::build`] with componentize-py,
//! JavaScript ones by [`javascript::build`] with componentize-js;
//! [`Language::detect`] tells a folder's language.

pub mod javascript;
pub mod python;
mod toolchain;

pub use toolchain::Toolchain;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No usable wasm toolchain was found.
    #[error(
        "no toolchain can build wasm components: {0}\n  install one of: `rustup target add wasm32-wasip2`, `rustup target add wasm32-unknown-unknown`, or (Debian) `apt-get install rustc-web cargo-web rust-web-src lld-19`"
    )]
    NoToolchain(String),
    /// `dir` has no Cargo.toml.
    #[error("{0}: no Cargo.toml here; pass the directory of a connector crate")]
    NotACrate(PathBuf),
    /// `dir` is no connector project of a language this builds.
    #[error(
        "{0}: not a connector project: expected Cargo.toml (Rust), app.py (Python) or app.js (JavaScript); `switchyard plugin new <name> --lang rust|python|js` makes one"
    )]
    NotAConnector(PathBuf),
    /// The connector's manifest cannot be read.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A guest language's build tool failed (its output is above).
    #[error("{tool} failed (exit {code}); see its output above")]
    Guest { tool: String, code: String },
    /// cargo could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// cargo reported errors (already printed to stderr).
    #[error("cargo build failed (exit {0}); see the compiler output above")]
    Cargo(String),
    /// cargo built nothing that looks like a connector.
    #[error(
        "{0}: the build produced no .wasm library; make sure Cargo.toml has `[lib] crate-type = [\"cdylib\"]`"
    )]
    NoArtifact(PathBuf),
    /// The core module could not be turned into a component.
    #[error(
        "{path}: cannot make a component: {reason}\n  does the crate use switchyard-sdk (or wit-bindgen) and call `export!`?"
    )]
    Componentize { path: PathBuf, reason: String },
    /// Reading or writing an artifact failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The language of a connector project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A crate: `Cargo.toml`.
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `app.js`, built with componentize-js.
    JavaScript,
}

/// A Python or JavaScript builder: the connector folder and the output
/// folder in; the connector's name and its component's path out.
pub type GuestBuilder = fn(&Path, &Path) -> Result<(String, PathBuf), BuildError>;

impl Language {
    /// What `dir` holds: `Cargo.toml` means Rust, `app.py` Python.
    pub fn detect(dir: &Path) -> Result<Language, BuildError> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join("app.py").is_file() {
            Ok(Language::Python)
        } else if dir.join("app.js").is_file() {
            Ok(Language::JavaScript)
        } else {
            Err(BuildError::NotAConnector(dir.to_owned()))
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The `Cargo.toml` of the crate, or of the workspace when `packages` is
    /// not empty.
    pub manifest_path: PathBuf,
    /// Packages to build (`-p`); empty builds the manifest's own package.
    pub packages: Vec<String>,
    /// Cargo target directory. Default: cargo's own choice.
    pub target_dir: Option<PathBuf>,
    /// Print cargo's progress to stderr. Default: true.
    pub verbose: bool,
}

impl BuildRequest {
    /// Builds the crate in `dir`.
    pub fn crate_dir(dir: impl AsRef<Path>) -> Result<Self, BuildError> {
        let manifest_path = dir.as_ref().join("Cargo.toml");
        if !manifest_path.is_file() {
            return Err(BuildError::NotACrate(dir.as_ref().to_owned()));
        }
        Ok(BuildRequest {
            manifest_path,
            packages: Vec::new(),
            target_dir: None,
            verbose: true,
        })
    }
}

/// One built component.
#[derive(Debug, Clone)]
pub struct BuiltComponent {
    /// The cargo package it came from.
    pub package: String,
    /// Where the component was written: `<target dir>/components/<lib>.wasm`.
    pub path: PathBuf,
}

/// Builds every requested package and writes one component each.
pub fn build(
    request: &BuildRequest,
    toolchain: &Toolchain,
) -> Result<Vec<BuiltComponent>, BuildError> {
    let mut cmd = toolchain.cargo_build();
    cmd.arg("--manifest-path").arg(&request.manifest_path);
    for package in &request.packages {
        cmd.arg("-p").arg(package);
    }
    if let Some(dir) = &request.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    cmd.arg("--message-format=json-render-diagnostics");
    cmd.stdout(Stdio::piped());
    cmd.stderr(if request.verbose {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let program = format!("{:?}", cmd.get_program());
    let output = cmd
        .output()
        .map_err(|source| BuildError::Spawn { program, source })?;
    if !output.status.success() {
        if !request.verbose {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        }
        let code = output
            .status
            .code()
            .map_or_else(|| "signal".to_owned(), |c| c.to_string());
        return Err(BuildError::Cargo(code));
    }
    let artifacts = wasm_artifacts(&output.stdout);
    if artifacts.is_empty() {
        return Err(BuildError::NoArtifact(request.manifest_path.clone()));
    }
    artifacts
        .into_iter()
        .map(|(package, wasm)| {
            let path = component_path(&wasm);
            let bytes = std::fs::read(&wasm).map_err(|source| BuildError::Io {
                path: wasm.clone(),
                source,
            })?;
            let component = if wasmparser::Parser::is_component(&bytes) {
                bytes
            } else {
                componentize(&bytes).map_err(|reason| BuildError::Componentize {
                    path: wasm.clone(),
                    reason,
                })?
            };
            write_atomic(&path, &component)?;
            Ok(BuiltComponent { package, path })
        })
        .collect()
}

/// Turns a core module carrying wit-bindgen's component-type section into a
/// component.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    let has_type_info = wasmparser::Parser::new(0)
        .parse_all(module)
        .any(|payload| match payload {
            Ok(wasmparser::Payload::CustomSection(section)) => {
                section.name().starts_with("component-type")
            }
            _ => false,
        });
    if !has_type_info {
        return Err(
            "the module carries no component type information (wit-bindgen's `component-type` section)"
                .into(),
        );
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

/// `(package name, .wasm path)` of every cdylib artifact in cargo's JSON.
fn wasm_artifacts(stdout: &[u8]) -> Vec<(String, PathBuf)> {
    #[derive(serde::Deserialize)]
    struct Message {
        reason: String,
        #[serde(default)]
        package_id: String,
        #[serde(default)]
        target: Option<Target>,
        #[serde(default)]
        filenames: Vec<PathBuf>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        name: String,
        crate_types: Vec<String>,
    }
    let mut found = Vec::new();
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Message>(line) else {
            continue;
        };
        let Some(target) = msg.target else { continue };
        if msg.reason != "compiler-artifact" || !target.crate_types.iter().any(|t| t == "cdylib") {
            continue;
        }
        let package = package_name(&msg.package_id).unwrap_or(target.name);
        for file in msg.filenames {
            if file.extension().is_some_and(|e| e == "wasm") {
                found.push((package.clone(), file));
            }
        }
    }
    found
}

/// Package name from a cargo package id (`path+file:///x/echo#0.1.0` or
/// `path+file:///x/dir#echo@0.1.0`).
fn package_name(id: &str) -> Option<String> {
    let (path, fragment) = id.rsplit_once('#')?;
    match fragment.split_once('@') {
        Some((name, _)) => Some(name.to_owned()),
        None => path.rsplit('/').next().map(str::to_owned),
    }
}

/// `<target>/<triple>/release/x.wasm` → `<target>/components/x.wasm`.
fn component_path(wasm: &Path) -> PathBuf {
    let file = wasm.file_name().unwrap_or_default();
    let target_dir = wasm.ancestors().nth(3).unwrap_or(Path::new("."));
    target_dir.join("components").join(file)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let io = |source| BuildError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("wasm.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Runs `cmd` and returns its trimmed stdout when it succeeds.
pub(crate) fn capture(mut cmd: Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_from_both_id_formats() {
        assert_eq!(
            package_name("path+file:///w/plugins/echo#0.1.0").unwrap(),
            "echo"
        );
        assert_eq!(
            package_name("path+file:///w/plugins/x#echo-plugin@0.1.0").unwrap(),
            "echo-plugin"
        );
    }

    #[test]
    fn components_go_beside_the_triple_dirs() {
        let p = component_path(Path::new("/t/wasm32-unknown-unknown/release/echo.wasm"));
        assert_eq!(p, Path::new("/t/components/echo.wasm"));
    }

    #[test]
    fn a_module_without_type_info_is_refused() {
        // (module) — the smallest valid core module, with no wit-bindgen section.
        let module = b"\0asm\x01\0\0\0";
        assert!(componentize(module).is_err());
    }
}
