//! Loading a connector component: validation, compilation and inspection.
//!
//! Everything here runs before any guest code: a file that fails a check is
//! refused with a [`LoadError`] naming the file and the fix.

use crate::bindings::{CONNECTOR_EXPORT, PluginPre, SUPPORTED_VERSIONS};
use crate::cache::{CompileCache, sha256_hex};
use crate::error::LoadError;
use crate::signing::{TrustPolicy, read_beside};
use crate::state::InvocationState;
use std::path::{Path, PathBuf};
use switchyard_broker::capabilities::PluginManifest;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// What a component file is, read from its own type information.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentSummary {
    /// The `switchyard:connector` version it was built against, if any.
    pub wit_version: Option<String>,
    /// Names of everything the component imports, sorted.
    pub imports: Vec<String>,
    /// Names of everything the component exports, sorted.
    pub exports: Vec<String>,
    /// File size in bytes.
    pub size: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
}

/// A validated, compiled plugin, ready to instantiate.
pub(crate) struct LoadedComponent {
    pub summary: ComponentSummary,
    pub pre: PluginPre<InvocationState>,
    pub from_cache: bool,
    /// Parsed from the same bytes the signature was checked against.
    pub manifest: PluginManifest,
    /// The trusted publisher that signed it, if verified.
    pub publisher: Option<String>,
}

/// Reads and classifies `path`: WebAssembly at all, and a component rather
/// than a core module.
pub(crate) fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !bytes.starts_with(b"\0asm") {
        let head: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        let magic = if head.is_empty() {
            "nothing: the file is empty".to_owned()
        } else {
            format!("bytes {head}, not \\0asm")
        };
        return Err(LoadError::NotWasm {
            path: path.to_owned(),
            magic,
        });
    }
    if wasmparser::Parser::is_core_wasm(&bytes) {
        return Err(LoadError::CoreModule {
            path: path.to_owned(),
        });
    }
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(LoadError::Invalid {
            path: path.to_owned(),
            reason: "unknown WebAssembly encoding version".into(),
        });
    }
    Ok(bytes)
}

/// Compiles (or loads from `cache`) and summarises a component without
/// checking it against the connector world. Used by `plugin inspect`.
pub fn inspect_component(
    engine: &Engine,
    path: &Path,
    cache: Option<&CompileCache>,
) -> Result<(Component, ComponentSummary), LoadError> {
    let bytes = read_component(path)?;
    compile_and_summarise(engine, path, &bytes, cache).map(|(c, s, _)| (c, s))
}

/// Checks the signature beside `path` against `trust` and parses the
/// manifest, both from the bytes read here, before anything is compiled.
fn check_signed(
    path: &Path,
    bytes: &[u8],
    trust: &TrustPolicy,
) -> Result<(PluginManifest, Option<String>), LoadError> {
    let beside = read_beside(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let label = path.display().to_string();
    let signer = trust
        .verify(
            bytes,
            beside.manifest.as_deref(),
            beside.signature.as_deref(),
            &label,
        )
        .map_err(|source| LoadError::Signature {
            path: path.to_owned(),
            source,
        })?;
    let manifest = match beside.manifest {
        None => PluginManifest::default(),
        Some(bytes) => {
            let shown = PluginManifest::path_for(path).display().to_string();
            let text = String::from_utf8(bytes)
                .map_err(|_| LoadError::Manifest(format!("{shown}: not UTF-8 text")))?;
            PluginManifest::parse(&text)
                .map_err(|e| LoadError::Manifest(format!("{shown}: {e}")))?
        }
    };
    Ok((manifest, signer.map(|s| s.publisher)))
}

fn compile_and_summarise(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cache: Option<&CompileCache>,
) -> Result<(Component, ComponentSummary, bool), LoadError> {
    let sha256 = sha256_hex(bytes);
    let compiled = match cache {
        Some(cache) => cache.load(engine, bytes, &sha256),
        None => Component::new(engine, bytes).map(|c| (c, false)),
    };
    let (component, from_cache) = compiled.map_err(|err| LoadError::Invalid {
        path: path.to_owned(),
        reason: format!("{err:#}"),
    })?;
    let ty = component.component_type();
    let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let mut exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    imports.sort();
    exports.sort();
    let wit_version = exports
        .iter()
        .find_map(|e| e.strip_prefix(CONNECTOR_EXPORT)?.strip_prefix('@'))
        .map(str::to_owned);
    let summary = ComponentSummary {
        wit_version,
        imports,
        exports,
        size: bytes.len() as u64,
        sha256,
    };
    Ok((component, summary, from_cache))
}

/// Loads `path` for `linker`: its signature under `trust`, every check of
/// the module docs, then one
/// `InstancePre` so each invocation only instantiates.
pub(crate) fn load_component(
    engine: &Engine,
    linker: &Linker<InvocationState>,
    path: &Path,
    cache: Option<&CompileCache>,
    trust: &TrustPolicy,
) -> Result<LoadedComponent, LoadError> {
    let bytes = read_component(path)?;
    let (manifest, publisher) = check_signed(path, &bytes, trust)?;
    let (component, summary, from_cache) = compile_and_summarise(engine, path, &bytes, cache)?;
    let path_buf = || path.to_path_buf();
    let supported = SUPPORTED_VERSIONS.join(", ");
    let Some(version) = summary.wit_version.clone() else {
        let exports = if summary.exports.is_empty() {
            "nothing".to_owned()
        } else {
            summary.exports.join(", ")
        };
        return Err(LoadError::WrongWorld {
            path: path_buf(),
            exports,
            supported: SUPPORTED_VERSIONS[0].into(),
        });
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(LoadError::UnsupportedVersion {
            path: path_buf(),
            found: version,
            supported,
        });
    }
    for import in &summary.imports {
        if let Some(hint) = unsupported_import_hint(import) {
            return Err(LoadError::UnsupportedImport {
                path: path_buf(),
                import: import.clone(),
                hint,
            });
        }
    }
    let instance_pre = linker.instantiate_pre(&component).map_err(|err| {
        let text = format!("{err:#}");
        let import = text
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "an item".into());
        LoadError::UnsupportedImport {
            path: path_buf(),
            import,
            hint: format!("the host refused it: {text}"),
        }
    })?;
    let pre = PluginPre::new(instance_pre).map_err(|err| LoadError::MissingExport {
        path: path_buf(),
        interface: format!("{CONNECTOR_EXPORT}@{version}"),
        detail: format!("{err:#}"),
    })?;
    Ok(LoadedComponent {
        summary,
        pre,
        from_cache,
        manifest,
        publisher,
    })
}

/// `Some(hint)` when `import` is something this host never provides.
fn unsupported_import_hint(import: &str) -> Option<String> {
    const PROVIDED: &[&str] = &["log", "config", "types", "secrets", "state", "rate-limit"];
    if let Some(rest) = import.strip_prefix("switchyard:connector/") {
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Some(format!(
                "switchyard:connector@{version} is not supported here (supported: {}); rebuild against a supported version",
                SUPPORTED_VERSIONS.join(", ")
            ));
        }
        if PROVIDED.contains(&iface) {
            return None;
        }
        return Some(format!(
            "`{iface}` is not an interface of switchyard:connector@{version}; check the connector's WIT"
        ));
    }
    if import.starts_with("wasi:") {
        // WASI p2 is linked with nothing granted and wasi:http goes through
        // the egress policy; the linker decides the rest.
        return None;
    }
    Some("connectors may import only switchyard:connector and WASI interfaces".into())
}

/// Where a plugin file's name becomes the plugin name: `echo.wasm` and
/// `echo@1.2.0.wasm` → `echo`; `field_mapper.wasm` → `field-mapper`.
pub fn plugin_name_from_path(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let name = stem.split_once('@').map_or(stem, |(name, _)| name);
    (!name.is_empty() && !name.starts_with('.')).then(|| name.replace('_', "-"))
}

/// The files that make up a plugin beside its component: the manifest
/// (requested rights) and the signature.
pub fn side_files(component: &Path) -> [std::path::PathBuf; 2] {
    [
        switchyard_broker::capabilities::PluginManifest::path_for(component),
        component.with_extension("sig"),
    ]
}

/// sha256 over a plugin's component and its side files as they are on
/// disk now: equal digests mean there is nothing new to load.
pub fn source_digest(component: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(Sha256::digest(std::fs::read(component)?));
    for file in side_files(component) {
        match std::fs::read(&file) {
            Ok(bytes) => hasher.update(Sha256::digest(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => hasher.update([0u8; 32]),
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `*.wasm` files of a plugin directory, sorted.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}
