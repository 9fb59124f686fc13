//! Signed plugins through the `switchyard` binary: keys, sign, verify, and
//! a host that requires signatures.

mod common;

use common::{ok, refused, switchyard, text};
use switchyard_tests::guest;

#[test]
fn the_signing_commands_have_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["key", "--help"][..],
        &["key", "generate", "--help"],
        &["plugin", "sign", "--help"],
        &["plugin", "verify", "--help"],
    ] {
        assert!(ok(dir.path(), args).contains("Usage:"), "{args:?}");
    }
}

const MANIFEST: &str = "http = [\"https://api.example.com\"]\n";

#[test]
fn keys_sign_and_verify_and_every_refusal_names_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let generated = ok(d, &["key", "generate", "--out", "acme"]);
    let key_id = generated
        .lines()
        .find_map(|l| l.strip_prefix("key id:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(key_id.len(), 16, "{generated}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("acme.key")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(d.join("acme.pub")).unwrap();
    assert!(
        public.starts_with("switchyard-ed25519-public-v1 "),
        "{public}"
    );
    let secret = std::fs::read(d.join("acme.key")).unwrap();
    let again = switchyard(d, &["key", "generate", "--out", "acme"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(d.join("acme.key")).unwrap(), secret);

    std::fs::copy(guest("echo"), d.join("echo.wasm")).unwrap();
    std::fs::write(d.join("echo.manifest.toml"), MANIFEST).unwrap();
    let signed = ok(d, &["plugin", "sign", "echo.wasm", "--key", "acme.key"]);
    assert!(
        signed.contains("echo.sig") && signed.contains(&key_id),
        "{signed}"
    );
    let sig = std::fs::read_to_string(d.join("echo.sig")).unwrap();
    assert!(sig.contains(&format!("key_id = \"{key_id}\"")), "{sig}");

    let verified = ok(d, &["plugin", "verify", "echo.wasm", "--key", "acme.pub"]);
    assert_eq!(
        verified.trim(),
        format!("echo.wasm: OK, signed by acme (key {key_id})")
    );

    // One byte of the component changed.
    let mut bytes = std::fs::read(d.join("echo.wasm")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(d.join("echo.wasm"), &bytes).unwrap();
    let err = refused(d, &["plugin", "verify", "echo.wasm", "--key", "acme.pub"]);
    assert!(
        err.contains("plugin echo.wasm was modified after signing"),
        "{err}"
    );
    bytes[last] ^= 0x01;
    std::fs::write(d.join("echo.wasm"), &bytes).unwrap();
    ok(d, &["plugin", "verify", "echo.wasm", "--key", "acme.pub"]);

    // The manifest asks for more than was signed.
    std::fs::write(
        d.join("echo.manifest.toml"),
        format!("{MANIFEST}secrets = [\"token\"]\n"),
    )
    .unwrap();
    let err = refused(d, &["plugin", "verify", "echo.wasm", "--key", "acme.pub"]);
    assert!(
        err.contains("its manifest echo.manifest.toml is not the one that was signed"),
        "{err}"
    );
    std::fs::write(d.join("echo.manifest.toml"), MANIFEST).unwrap();

    // Signed by someone the verifier does not trust.
    ok(d, &["key", "generate", "--out", "other"]);
    let err = refused(d, &["plugin", "verify", "echo.wasm", "--key", "other.pub"]);
    assert!(
        err.contains(&format!(
            "plugin echo.wasm is signed by key {key_id}, which is not a trusted publisher"
        )),
        "{err}"
    );

    // No signature at all.
    std::fs::remove_file(d.join("echo.sig")).unwrap();
    let err = refused(d, &["plugin", "verify", "echo.wasm", "--key", "acme.pub"]);
    assert!(
        err.contains("plugin echo.wasm is not signed: no echo.sig beside it; sign it with `switchyard plugin sign echo.wasm"),
        "{err}"
    );
}

#[test]
fn a_host_requiring_signatures_refuses_unsigned_plugins_and_loads_signed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins = d.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    ok(d, &["key", "generate", "--out", "acme"]);
    std::fs::write(
        d.join("switchyard.toml"),
        "data_dir = \"data\"\nplugin_dir = \"plugins\"\nstrict_plugins = true\n\n[trust]\nrequire_signatures = true\n[trust.publishers]\nacme = \"acme.pub\"\n",
    )
    .unwrap();

    // Strict, so start-up refuses rather than serving without it (the
    // default, as hot loading does; tests/hostile.rs covers that).
    let err = refused(d, &["serve"]);
    assert!(
        err.contains("plugins/echo.wasm is not signed: no echo.sig beside it"),
        "{err}"
    );
    assert!(
        !d.join("data/cache").exists(),
        "refused before compilation: nothing cached"
    );
    let out = switchyard(d, &["plugin", "inspect", "plugins/echo.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("loadable:    no: plugin plugins/echo.wasm is not signed"),
        "{}",
        text(&out.stdout)
    );

    ok(
        d,
        &["plugin", "sign", "plugins/echo.wasm", "--key", "acme.key"],
    );
    let verified = ok(
        d,
        &[
            "plugin",
            "verify",
            "plugins/echo.wasm",
            "--config",
            "switchyard.toml",
        ],
    );
    assert!(verified.contains("OK, signed by acme"), "{verified}");
    let called = ok(
        d,
        &["call", "echo", "greet", "--input", r#"{"name":"Ada"}"#],
    );
    let value: serde_json::Value = serde_json::from_str(&called).unwrap();
    assert_eq!(value, serde_json::json!({"message": "Hello, Ada!"}));
    let inspected = ok(d, &["plugin", "inspect", "plugins/echo.wasm", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(report["publisher"], "acme");

    // A key the config does not trust is refused at start-up too.
    ok(d, &["key", "generate", "--out", "other"]);
    ok(
        d,
        &["plugin", "sign", "plugins/echo.wasm", "--key", "other.key"],
    );
    let err = refused(
        d,
        &["call", "echo", "greet", "--input", r#"{"name":"Ada"}"#],
    );
    assert!(err.contains("which is not a trusted publisher"), "{err}");
}
