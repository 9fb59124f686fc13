//! On-disk cache of precompiled components.
//!
//! Entries are keyed by the sha256 of the component bytes and the engine's
//! compatibility hash (wasmtime version, target and relevant settings), so a
//! host upgrade or a config change recompiles instead of loading stale code.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of `<key>.cwasm` files. Writes are atomic (temp file + rename),
/// so concurrent hosts sharing the directory never read half a file.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Uses `dir`, creating it on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads `wasm` from the cache, compiling and storing it on a miss.
    /// Returns the component and whether it came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self
            .dir
            .join(format!("{}.cwasm", cache_key(engine, wasm_sha256)));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name),
            // into a directory only this host writes; wasmtime still checks
            // the header and refuses a mismatched artifact.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "discarding unusable cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        // SAFETY: these bytes were produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        if let Err(err) = self.store(&path, &compiled) {
            tracing::warn!(dir = %self.dir.display(), %err, "cannot write compile cache; continuing without it");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

/// sha256 of the bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn cache_key(engine: &Engine, wasm_sha256: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{wasm_sha256}-{:016x}", hasher.finish())
}
