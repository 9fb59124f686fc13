//! Bad plugin files are refused at load, before any guest code runs, with a
//! message naming the file and the fix.

use std::path::Path;
use switchyard_runtime::{LoadError, Runtime};
use switchyard_tests::guest;

async fn load(path: &Path) -> LoadError {
    let runtime = Runtime::builder().build().unwrap();
    runtime
        .load_plugin("bad", path)
        .await
        .expect_err("the plugin should be refused")
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_text_file_is_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "notes.wasm", b"hello, I am not wasm");
    let err = load(&path).await;
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("notes.wasm") && msg.contains("not a WebAssembly file"),
        "{msg}"
    );
    assert!(msg.contains("switchyard plugin build"), "{msg}");
}

#[tokio::test]
async fn an_empty_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&write(&dir, "empty.wasm", b"")).await;
    assert!(err.to_string().contains("the file is empty"), "{err}");
}

#[tokio::test]
async fn a_missing_file_is_a_read_error() {
    let err = load(Path::new("/nonexistent/plugin.wasm")).await;
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/plugin.wasm"),
        "{err}"
    );
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest valid core module.
    let err = load(&write(&dir, "core.wasm", b"\0asm\x01\0\0\0")).await;
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[tokio::test]
async fn a_truncated_component_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("echo")).unwrap();
    let err = load(&write(&dir, "cut.wasm", &bytes[..bytes.len() / 2])).await;
    assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cut.wasm: invalid component"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let err = load(&guest("guest-wrong-world")).await;
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("exports [run]"), "{msg}");
    assert!(
        msg.contains("switchyard:connector/connector@0.1.1"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unsupported_wit_version_is_refused() {
    let err = load(&guest("guest-future-version")).await;
    match &err {
        LoadError::UnsupportedVersion { found, .. } => assert_eq!(found, "9.0.0"),
        other => panic!("expected unsupported version, got {other:?}"),
    }
    assert!(err.to_string().contains("supported: 0.1.1, 0.1.0"), "{err}");
}

#[tokio::test]
async fn an_import_the_host_lacks_is_named() {
    let err = load(&guest("guest-extra-import")).await;
    match &err {
        LoadError::UnsupportedImport { import, .. } => {
            assert_eq!(import, "switchyard:connector/queue@0.1.1")
        }
        other => panic!("expected unsupported import, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("`queue` is not an interface of switchyard:connector@0.1.1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_incomplete_connector_export_is_refused() {
    let err = load(&guest("guest-missing-export")).await;
    assert!(matches!(err, LoadError::MissingExport { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("switchyard:connector/connector@0.1.0` is incomplete"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_good_plugin_loads_after_bad_ones() {
    let runtime = Runtime::builder().build().unwrap();
    let bad = runtime
        .load_plugin("bad", &guest("guest-wrong-world"))
        .await;
    assert!(bad.is_err());
    runtime.load_plugin("echo", &guest("echo")).await.unwrap();
}
