//! On-disk cache of precompiled components.
//!
//! Entries are keyed by the sha256 of the component bytes and the engine's
//! compatibility hash (wasmtime version, target and relevant settings), so a
//! host upgrade or a config change recompiles instead of loading stale code.
//!
//! Threat model: an entry is native code that is mapped executable without
//! validation, so anyone who can write the cache directory could otherwise
//! run code in the host. Each entry therefore starts with an HMAC-SHA256
//! tag over its cache key and the artifact, keyed by a random per-host
//! secret in `<cache dir>.key` beside (not inside) the directory, created
//! on first use with mode 0600; an entry whose tag does not match (modified,
//! truncated, swapped for another entry, or written by another host) is
//! discarded with a warning and the component recompiled. Whoever can read
//! that key file or write the host binary is not stopped by this.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

/// First bytes of every entry: format magic, then the 32-byte tag.
const MAGIC: &[u8; 8] = b"SYCWASM1";
const HEADER: usize = MAGIC.len() + 32;

type CacheKey = Result<Zeroizing<[u8; 32]>, String>;

/// A directory of `<key>.cwasm` files, each authenticated with the host's
/// cache key (see the module docs). Writes are atomic (temp file + rename),
/// so concurrent hosts sharing the directory and its key never read half a
/// file.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: Arc<OnceLock<CacheKey>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    /// Uses `dir`, creating it (and the key file beside it) on first use.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache {
            dir: dir.into(),
            key: Arc::default(),
        }
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the per-host key: `<dir>.key`, beside the directory.
    pub fn key_path(&self) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_owned();
        name.push(".key");
        self.dir.with_file_name(name)
    }

    /// Loads `wasm` from the cache, compiling and storing it on a miss.
    /// Returns the component and whether it came from the cache. Without a
    /// usable key file the cache is bypassed (with a warning).
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let name = cache_key(engine, wasm_sha256);
        let path = self.dir.join(format!("{name}.cwasm"));
        let key = match self.key.get_or_init(|| self.open_key()) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(%err, "compile cache disabled: its key is unusable");
                None
            }
        };
        if let Some(key) = key
            && let Some(entry) = self.read_entry(key, &name, &path)
        {
            // SAFETY: the bytes carry a valid tag under this host's secret
            // key, so this host wrote them, from `precompile_component` of
            // an engine with the same compatibility hash (it is in the
            // tagged name); wasmtime still checks the header.
            match unsafe { Component::deserialize(engine, &entry[HEADER..]) } {
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
        if let Some(key) = key
            && let Err(err) = self.store(&path, &tag(key, &name, &compiled), &compiled)
        {
            tracing::warn!(dir = %self.dir.display(), %err, "cannot write compile cache; continuing without it");
        }
        Ok((component, false))
    }

    /// The whole entry if it exists and its tag matches; a mismatch is
    /// logged and the file removed.
    fn read_entry(&self, key: &[u8; 32], name: &str, path: &Path) -> Option<Vec<u8>> {
        let entry = std::fs::read(path).ok()?;
        let intact = entry.len() > HEADER && entry.starts_with(MAGIC) && {
            let mut mac = mac(key, name);
            mac.update(&entry[HEADER..]);
            mac.verify_slice(&entry[MAGIC.len()..HEADER]).is_ok()
        };
        if intact {
            return Some(entry);
        }
        tracing::warn!(
            path = %path.display(),
            "discarding compile cache entry that fails its integrity check (modified, swapped or not written by this host); recompiling"
        );
        let _ = std::fs::remove_file(path);
        None
    }

    fn store(&self, path: &Path, tag: &[u8], bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(tag)?;
        file.write_all(bytes)?;
        drop(file);
        std::fs::rename(&tmp, path)
    }

    /// Reads the key file, or creates it (0600) with 32 random bytes.
    /// Racing hosts agree: the file appears atomically and only once.
    fn open_key(&self) -> CacheKey {
        let path = self.key_path();
        let shown = path.display();
        match std::fs::read(&path) {
            Ok(bytes) => return parse_key(&bytes).map_err(|e| format!("{shown}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        let create = || -> std::io::Result<()> {
            std::fs::create_dir_all(parent)?;
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut *key).map_err(std::io::Error::other)?;
            // A named temp file is created with mode 0600.
            let mut file = tempfile::NamedTempFile::new_in(parent)?;
            file.write_all(hex::encode(*key).as_bytes())?;
            file.as_file().sync_all()?;
            match file.persist_noclobber(&path) {
                Ok(_) => Ok(()),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e.error),
            }
        };
        create().map_err(|e| format!("{shown}: cannot create: {e}"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{shown}: {e}"))?;
        parse_key(&bytes).map_err(|e| format!("{shown}: {e}"))
    }
}

fn parse_key(bytes: &[u8]) -> CacheKey {
    let mut key = Zeroizing::new([0u8; 32]);
    let text = std::str::from_utf8(bytes).map_err(|_| "not hex text".to_owned())?;
    hex::decode_to_slice(text.trim(), &mut *key)
        .map_err(|e| format!("expected 64 hex digits: {e}; delete it to start a new cache"))?;
    Ok(key)
}

fn mac(key: &[u8; 32], name: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"switchyard-compile-cache-v1\n");
    mac.update(name.as_bytes());
    mac.update(b"\n");
    mac
}

fn tag(key: &[u8; 32], name: &str, artifact: &[u8]) -> Vec<u8> {
    let mut mac = mac(key, name);
    mac.update(artifact);
    mac.finalize().into_bytes().to_vec()
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
