//! Loading a connector component: validation, compilation and inspection.
//!
//! Everything here runs before any guest code: a file that fails a check is
//! refused with a [`LoadError`] naming the file and the fix.

use crate::bindings::{CONNECTOR_EXPORT, PluginPre, SUPPORTED_VERSIONS};
use crate::cache::{CompileCache, sha256_hex};
use crate::error::LoadError;
use crate::limits::Limits;
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

/// Reads and classifies `path`: no longer than `limits.component_bytes`
/// (from its length, before reading), WebAssembly at all, and a component
/// rather than a core module.
pub(crate) fn read_component(path: &Path, limits: &Limits) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    crate::admission::check_file_size(path, len, limits)?;
    // Read at most one byte past the limit: a file that grew since its
    // length was taken is still refused, never read whole.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits.component_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    crate::admission::check_file_size(path, bytes.len() as u64, limits)?;
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

/// The `[limits]` key behind a pooling allocator refusal, named so the
/// operator knows what to raise.
fn pool_limit_hint(reason: &str) -> Option<&'static str> {
    if !reason.contains("pooling allocator") {
        return None;
    }
    [
        ("minimum element size", "table_elements"),
        ("minimum byte size", "memory_bytes"),
        ("core module instances", "instances"),
        ("memories", "memories"),
        ("tables", "tables"),
    ]
    .into_iter()
    .find(|(needle, _)| reason.contains(needle))
    .map(|(_, key)| key)
}

/// Compiles (or loads from `cache`) and summarises a component without
/// checking it against the connector world. Used by `plugin inspect`.
pub fn inspect_component(
    engine: &Engine,
    path: &Path,
    cache: Option<&CompileCache>,
    limits: &Limits,
) -> Result<(Component, ComponentSummary), LoadError> {
    let bytes = read_component(path, limits)?;
    compile_and_summarise(engine, path, &bytes, cache, limits).map(|(c, s, _)| (c, s))
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

/// The component from `cache` or, after the admission checks, compiled.
/// A cached entry skips admission: this host compiled it, so it passed
/// then, and the compile those checks bound is not repeated.
fn compile_and_summarise(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cache: Option<&CompileCache>,
    limits: &Limits,
) -> Result<(Component, ComponentSummary, bool), LoadError> {
    let sha256 = sha256_hex(bytes);
    let (component, from_cache) = match cache.and_then(|c| c.get(engine, &sha256)) {
        Some(component) => (component, true),
        None => {
            crate::admission::check_code(path, bytes, limits)?;
            let compiled = match cache {
                Some(cache) => cache.compile(engine, bytes, &sha256),
                None => Component::new(engine, bytes),
            };
            let component = compiled.map_err(|err| {
                let reason = format!("{err:#}");
                LoadError::Invalid {
                    path: path.to_owned(),
                    reason: match pool_limit_hint(&reason) {
                        Some(key) => format!(
                            "{reason}; raise `{key}` under [limits] in switchyard.toml if this plugin is trusted to need more"
                        ),
                        None => reason,
                    },
                }
            })?;
            (component, false)
        }
    };
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
    limits: &Limits,
) -> Result<LoadedComponent, LoadError> {
    let bytes = read_component(path, limits)?;
    let (manifest, publisher) = check_signed(path, &bytes, trust)?;
    let (component, summary, from_cache) =
        compile_and_summarise(engine, path, &bytes, cache, limits)?;
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
    source_digest_with(&Sha256::digest(std::fs::read(component)?), component)
}

/// [`source_digest`] for a component whose sha256 is known.
pub(crate) fn source_digest_with(
    component_sha256: &[u8],
    component: &Path,
) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(component_sha256);
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

/// Checks what a plugin's `describe` said before anything of it reaches a
/// log line, an API answer or the status page: its name and action names
/// are identifiers (`[A-Za-z0-9_.-]`, at most 64 bytes, starting with a
/// letter or digit; actions become URL path segments), stream names are
/// at most 256 bytes without whitespace or control characters, and its
/// version is semver. Descriptions are free text: their control
/// characters are escaped and they are cut at 4 KiB.
pub(crate) fn check_description(info: &mut crate::bindings::ConnectorInfo) -> Result<(), String> {
    fn identifier(what: &str, text: &str) -> Result<(), String> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.as_bytes()[0].is_ascii_alphanumeric()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            return Ok(());
        }
        Err(format!(
            "{what} {text:?} is not an identifier: use 1 to 64 of A-Z a-z 0-9 _ - . starting with a letter or digit"
        ))
    }
    identifier("its name", &info.name)?;
    semver::Version::parse(&info.version).map_err(|e| {
        format!(
            "its version {:?} is not semver ({e}): use MAJOR.MINOR.PATCH, e.g. env!(\"CARGO_PKG_VERSION\")",
            info.version
        )
    })?;
    for action in &info.actions {
        identifier("action name", &action.name)?;
    }
    for stream in &info.streams {
        let ok = !stream.name.is_empty()
            && stream.name.len() <= 256
            && !stream
                .name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(format!(
                "stream name {:?} must be 1 to 256 bytes without whitespace or control characters",
                stream.name
            ));
        }
    }
    let clean = |text: &mut String| {
        let escaped = switchyard_broker::interfaces::sanitize(text, 4096);
        *text = escaped;
    };
    clean(&mut info.description);
    for action in &mut info.actions {
        clean(&mut action.description);
    }
    for stream in &mut info.streams {
        clean(&mut stream.description);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_description;
    use crate::bindings::{ActionInfo, ConnectorInfo, StreamInfo};

    fn info() -> ConnectorInfo {
        ConnectorInfo {
            name: "shop".into(),
            version: "1.2.3".into(),
            description: "line one\nline two \u{1b}[31m".into(),
            roles: Vec::new(),
            actions: vec![ActionInfo {
                name: "fetch_many".into(),
                description: "ok".into(),
            }],
            streams: vec![StreamInfo {
                name: "db/$orders(2)".into(),
                description: String::new(),
            }],
        }
    }

    #[test]
    fn a_fair_description_passes_with_its_text_escaped() {
        let mut fair = info();
        check_description(&mut fair).unwrap();
        assert_eq!(fair.description, "line one\\nline two \\u{1b}[31m");
    }

    #[test]
    fn forged_names_and_versions_are_refused_quoted() {
        let refused = |change: fn(&mut ConnectorInfo)| {
            let mut bad = info();
            change(&mut bad);
            check_description(&mut bad).unwrap_err()
        };
        let e = refused(|i| i.version = "1.0.0\n2026 INFO forged".into());
        assert!(e.contains("not semver") && e.contains("\\n"), "{e}");
        let e = refused(|i| i.actions[0].name = "greet\u{1b}[2J".into());
        assert!(
            e.contains("not an identifier") && e.contains("\\u{1b}"),
            "{e}"
        );
        let e = refused(|i| i.name = "admin plugin".into());
        assert!(e.contains("its name"), "{e}");
        let e = refused(|i| i.streams[0].name = "a\rb".into());
        assert!(e.contains("stream name"), "{e}");
        let e = refused(|i| i.actions[0].name = "a/b".into());
        assert!(e.contains("not an identifier"), "{e}");
    }
}
