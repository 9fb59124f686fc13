//! What a host runs is what was meant: signed plugins are checked before
//! compilation, and compile-cache entries that were tampered with or
//! swapped never load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use switchyard_runtime::signing::{SecretKey, SignatureError, SignatureFile, TrustPolicy};
use switchyard_runtime::{LoadError, Runtime};
use switchyard_tests::guest;

/// The cache entry for the component at `wasm`.
fn entry_for(cache: &Path, wasm: &Path) -> PathBuf {
    let bytes = std::fs::read(wasm).unwrap();
    let sha = switchyard_runtime::cache::sha256_hex(&bytes);
    let entries: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha))
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

/// Loads echo with a fresh runtime over `cache`, checks it still greets
/// as echo, and says whether its code came from the cache.
async fn echo_from_cache(cache: &Path) -> bool {
    let runtime = Runtime::builder().cache_dir(cache).build().unwrap();
    let plugin = runtime.load_plugin("echo", &guest("echo")).await.unwrap();
    runtime
        .add_connection("echo", "echo", BTreeMap::new())
        .unwrap();
    let out = runtime
        .call_action("echo", "greet", br#"{"name":"Ada"}"#)
        .await
        .unwrap();
    assert_eq!(out, br#"{"message":"Hello, Ada!"}"#);
    plugin.from_cache()
}

#[tokio::test]
async fn swapped_or_modified_cache_entries_are_discarded_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    assert!(!echo_from_cache(&cache).await, "first load compiles");
    assert!(echo_from_cache(&cache).await, "then comes from the cache");
    let echo_entry = entry_for(&cache, &guest("echo"));

    // The per-host key lives beside the cache, not in it, readable only by
    // its owner.
    let key = dir.path().join("cache.key");
    assert!(key.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Another plugin's entry, valid and tagged by this host, put in echo's
    // place: it must not run as echo.
    let runtime = Runtime::builder().cache_dir(&cache).build().unwrap();
    runtime
        .load_plugin("field-mapper", &guest("field-mapper"))
        .await
        .unwrap();
    let other_entry = entry_for(&cache, &guest("field-mapper"));
    std::fs::copy(&other_entry, &echo_entry).unwrap();
    assert!(
        !echo_from_cache(&cache).await,
        "a swapped entry is recompiled"
    );
    assert!(echo_from_cache(&cache).await, "and rewritten");

    // One flipped byte in the native code.
    let mut bytes = std::fs::read(&echo_entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&echo_entry, &bytes).unwrap();
    assert!(
        !echo_from_cache(&cache).await,
        "a modified entry is recompiled"
    );

    // A valid wasmtime artifact (another component's) planted with a tag
    // made without this host's key.
    let compiled = runtime
        .engine()
        .precompile_component(&std::fs::read(guest("field-mapper")).unwrap())
        .unwrap();
    std::fs::write(&echo_entry, &compiled).unwrap();
    let mut forged = b"SYCWTAG2".to_vec();
    forged.extend([7u8; 32]);
    std::fs::write(echo_entry.with_extension("tag"), forged).unwrap();
    assert!(
        !echo_from_cache(&cache).await,
        "an entry with a forged tag is recompiled"
    );

    // Garbage.
    std::fs::write(&echo_entry, b"garbage").unwrap();
    assert!(!echo_from_cache(&cache).await, "garbage is recompiled");
    assert!(echo_from_cache(&cache).await);

    // An intact entry others could rewrite after its tag was checked (it
    // is mapped, not copied, so a later write would change the code).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let entry = entry_for(&cache, &guest("echo"));
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            !echo_from_cache(&cache).await,
            "a group- or world-writable entry is recompiled"
        );
        let mode = std::fs::metadata(entry_for(&cache, &guest("echo")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "rewritten private: {mode:o}");
        assert!(echo_from_cache(&cache).await);
    }

    // An entry whose tag went missing.
    std::fs::remove_file(entry_for(&cache, &guest("echo")).with_extension("tag")).unwrap();
    assert!(
        !echo_from_cache(&cache).await,
        "an untagged entry is recompiled"
    );
    assert!(echo_from_cache(&cache).await);
}

/// echo.wasm (and a manifest) copied into a fresh directory.
fn echo_in(dir: &Path) -> PathBuf {
    let path = dir.join("echo.wasm");
    std::fs::copy(guest("echo"), &path).unwrap();
    std::fs::write(dir.join("echo.manifest.toml"), "state = true\n").unwrap();
    path
}

fn sign(path: &Path, key: &SecretKey) {
    let component = std::fs::read(path).unwrap();
    let manifest = std::fs::read(path.with_extension("manifest.toml")).ok();
    let file = SignatureFile::sign(key, &component, manifest.as_deref());
    std::fs::write(SignatureFile::path_for(path), file.to_toml()).unwrap();
}

#[tokio::test]
async fn signatures_are_checked_before_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_in(dir.path());
    let cache = dir.path().join("cache");
    let key = SecretKey::generate().unwrap();
    let strict = TrustPolicy::new(true)
        .publisher("acme", key.public_key())
        .unwrap();
    let runtime = |policy: &TrustPolicy| {
        Runtime::builder()
            .cache_dir(&cache)
            .trust(policy.clone())
            .build()
            .unwrap()
    };

    let err = runtime(&strict)
        .load_plugin("echo", &echo)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::Signature {
                source: SignatureError::Unsigned { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!cache.exists(), "refused before anything was compiled");
    let lax = TrustPolicy::default();
    let plugin = runtime(&lax).load_plugin("echo", &echo).await.unwrap();
    assert_eq!(plugin.publisher(), None, "unsigned loads when not required");

    sign(&echo, &key);
    let plugin = runtime(&strict).load_plugin("echo", &echo).await.unwrap();
    assert_eq!(plugin.publisher(), Some("acme"));
    assert!(
        plugin.manifest().state,
        "the signed manifest is the one used"
    );

    // Re-manifested: refused even by a host that does not require
    // signatures, because a present signature is never ignored.
    std::fs::write(dir.path().join("echo.manifest.toml"), "state = false\n").unwrap();
    for policy in [&strict, &lax] {
        let err = runtime(policy)
            .load_plugin("echo", &echo)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                LoadError::Signature {
                    source: SignatureError::ManifestChanged { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("echo.manifest.toml"), "{err}");
    }
    std::fs::remove_file(dir.path().join("echo.manifest.toml")).unwrap();
    let err = runtime(&strict)
        .load_plugin("echo", &echo)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("now: no manifest"), "{err}");
}
