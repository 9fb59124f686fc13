//! On-disk cache of precompiled components.
//!
//! Entries are keyed by the sha256 of the component bytes and the engine's
//! compatibility hash (wasmtime version, target and relevant settings), so a
//! host upgrade or a config change recompiles instead of loading stale code.
//!
//! Threat model: an entry is native code that is mapped executable without
//! validation, so anyone who can write the cache directory could otherwise
//! run code in the host. Each entry `<key>.cwasm` therefore has a
//! `<key>.tag` beside it: an HMAC-SHA256 over its cache key and the
//! artifact, keyed by a random per-host secret in `<cache dir>.key` beside
//! (not inside) the directory, created on first use with mode 0600. An
//! entry whose tag does not match (modified, truncated, swapped for another
//! entry, or written by another host) is discarded with a warning and the
//! component recompiled. Whoever can read that key file or write the host
//! binary is not stopped by this.
//!
//! A verified entry is mapped from the file, not copied (Linux): its code
//! pages are shared with the page cache and only those that run become
//! resident, and wasmtime maps the guests' initial memory images from the
//! file too. The tag is checked on the open file descriptor that is then
//! mapped, and only for a file owned by this user that nobody else may
//! write, so the bytes mapped are the bytes checked.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

/// First bytes of every tag file, then the 32-byte tag. (Version 1 kept
/// the tag in front of the artifact, which could then not be mapped.)
const MAGIC: &[u8; 8] = b"SYCWTAG2";

type CacheKey = Result<Zeroizing<[u8; 32]>, String>;

/// A directory of `<key>.cwasm` files, each authenticated by a `<key>.tag`
/// under the host's cache key (see the module docs). Writes are atomic
/// (temp file + rename), so concurrent hosts sharing the directory and its
/// key never read half a file; a reader that sees a new artifact with an
/// old tag only recompiles.
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
        match self.get(engine, wasm_sha256) {
            Some(component) => Ok((component, true)),
            None => Ok((self.compile(engine, wasm, wasm_sha256)?, false)),
        }
    }

    /// The cached component for the wasm with this sha256, if this host
    /// stored one and it is intact; a damaged entry is removed (warning).
    pub fn get(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        let key = self.key()?;
        let name = cache_key(engine, wasm_sha256);
        let path = self.dir.join(format!("{name}.cwasm"));
        let tag_path = self.dir.join(format!("{name}.tag"));
        let discard = |why: &str| {
            tracing::warn!(path = %path.display(), "discarding compile cache entry: {why}; recompiling");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&tag_path);
        };
        let mut file = std::fs::File::open(&path).ok()?;
        let Ok(tag) = std::fs::read(&tag_path) else {
            discard("it has no tag");
            return None;
        };
        if let Err(why) = private_to_us(&file) {
            discard(&why);
            return None;
        }
        match verify(key, &name, &mut file, &tag) {
            Ok(true) => {}
            Ok(false) => {
                discard(
                    "it fails its integrity check (modified, swapped or not written by this host)",
                );
                return None;
            }
            Err(e) => {
                discard(&format!("cannot read it: {e}"));
                return None;
            }
        }
        // SAFETY: the bytes carry a valid tag under this host's secret key,
        // so this host wrote them, from `precompile_component` of an engine
        // with the same compatibility hash (it is in the tagged name), and
        // nobody but this user can change them (checked above); wasmtime
        // still checks the header.
        match unsafe { deserialize_verified(engine, file) } {
            Ok(component) => Some(component),
            Err(err) => {
                discard(&format!("{err:#}"));
                None
            }
        }
    }

    /// Compiles `wasm` and stores the result (a failed store only warns).
    pub fn compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> wasmtime::Result<Component> {
        let compiled = engine.precompile_component(wasm)?;
        // SAFETY: these bytes were produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        if let Some(key) = self.key() {
            let name = cache_key(engine, wasm_sha256);
            if let Err(err) = self.store(&name, &tag(key, &name, &compiled), &compiled) {
                tracing::warn!(dir = %self.dir.display(), %err, "cannot write compile cache; continuing without it");
            }
        }
        Ok(component)
    }

    fn key(&self) -> Option<&[u8; 32]> {
        match self.key.get_or_init(|| self.open_key()) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(%err, "compile cache disabled: its key is unusable");
                None
            }
        }
    }

    fn store(&self, name: &str, tag: &[u8], artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let write = |file: &str, parts: &[&[u8]]| -> std::io::Result<()> {
            // A named temp file is created with mode 0600.
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            for part in parts {
                tmp.write_all(part)?;
            }
            tmp.persist(self.dir.join(file)).map_err(|e| e.error)?;
            Ok(())
        };
        write(&format!("{name}.cwasm"), &[artifact])?;
        write(&format!("{name}.tag"), &[MAGIC, tag])
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

/// Whether `file`'s contents match `tag` (a tag file's bytes), read in
/// pieces so a large artifact is never held in memory twice.
fn verify(
    key: &[u8; 32],
    name: &str,
    file: &mut std::fs::File,
    tag: &[u8],
) -> std::io::Result<bool> {
    use std::io::{Read, Seek};
    let Some(expected) = tag.strip_prefix(MAGIC.as_slice()) else {
        return Ok(false);
    };
    let mut mac = mac(key, name);
    let mut buffer = vec![0u8; 1 << 20];
    file.rewind()?;
    loop {
        match file.read(&mut buffer)? {
            0 => break,
            n => mac.update(&buffer[..n]),
        }
    }
    file.rewind()?;
    Ok(mac.verify_slice(expected).is_ok())
}

/// Refuses a file someone other than this user could change after its
/// tag was checked: owned by another user, or writable by group or others.
#[cfg(unix)]
fn private_to_us(file: &std::fs::File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is not a regular file of this user that only this user may write (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_to_us(_: &std::fs::File) -> Result<(), String> {
    Ok(())
}

/// Maps the verified artifact open in `file` (through `/proc/self/fd`, so
/// the very inode that was checked); elsewhere reads and copies it.
///
/// # Safety
///
/// `file` must hold an artifact of `precompile_component` of an engine
/// compatible with `engine` that nobody can modify while it is in use.
unsafe fn deserialize_verified(
    engine: &Engine,
    file: std::fs::File,
) -> wasmtime::Result<Component> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        if Path::new(&path).exists() {
            // SAFETY: as the caller promised; the path names `file`, which
            // stays open until wasmtime has opened it for itself.
            let component = unsafe { Component::deserialize_file(engine, &path) };
            drop(file);
            return component;
        }
    }
    let mut file = file;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    // SAFETY: as the caller promised.
    unsafe { Component::deserialize(engine, &bytes) }
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
