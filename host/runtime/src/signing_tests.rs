use super::*;

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0 pretend component";
const MANIFEST: &[u8] = b"http = [\"https://api.example.com\"]\n";

fn acme() -> (SecretKey, TrustPolicy) {
    let key = SecretKey::generate().unwrap();
    let policy = TrustPolicy::new(true)
        .publisher("acme", key.public_key())
        .unwrap();
    (key, policy)
}

fn signed(key: &SecretKey, manifest: Option<&[u8]>) -> Vec<u8> {
    SignatureFile::sign(key, COMPONENT, manifest)
        .to_toml()
        .into_bytes()
}

#[test]
fn a_signed_plugin_verifies_and_names_its_publisher() {
    let (key, policy) = acme();
    for manifest in [Some(MANIFEST), None] {
        let sig = signed(&key, manifest);
        let signer = policy
            .verify(COMPONENT, manifest, Some(&sig), "echo.wasm")
            .unwrap()
            .unwrap();
        assert_eq!(signer.publisher, "acme");
        assert_eq!(signer.key_id, key.public_key().key_id());
    }
}

#[test]
fn keys_round_trip_through_their_text_and_files() {
    let key = SecretKey::generate().unwrap();
    let public = key.public_key();
    let text = public.to_text();
    assert!(text.starts_with("switchyard-ed25519-public-v1 "), "{text}");
    assert_eq!(PublicKey::parse(&text, "x").unwrap(), public);
    assert_eq!(public.key_id().len(), 16);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.key");
    key.write_new(&path).unwrap();
    assert_eq!(SecretKey::read(&path).unwrap().public_key(), public);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let err = SecretKey::generate().unwrap().write_new(&path).unwrap_err();
    assert!(
        matches!(&err, KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
    );
    assert_eq!(SecretKey::read(&path).unwrap().public_key(), public);
}

#[test]
fn malformed_keys_are_refused_with_the_reason() {
    let key = SecretKey::generate().unwrap();
    let public = key.public_key().to_text();
    let err = SecretKey::parse(&public, "acme.pub")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme.pub") && err.contains(SECRET_KEY_TAG),
        "{err}"
    );
    let err = PublicKey::parse("switchyard-ed25519-public-v1 AAAA", "k")
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 32 bytes, got 3"), "{err}");
    let err = PublicKey::parse("", "k").unwrap_err().to_string();
    assert!(err.contains("found `nothing`"), "{err}");
}

#[test]
fn the_signed_message_is_domain_separated() {
    assert_eq!(
        signed_message("ab", "none"),
        b"switchyard-plugin-signature-v1\nab\nnone"
    );
}

#[test]
fn unsigned_plugins_are_refused_only_when_signatures_are_required() {
    let (_, policy) = acme();
    let err = policy
        .verify(COMPONENT, None, None, "plugins/echo.wasm")
        .unwrap_err();
    assert!(matches!(err, SignatureError::Unsigned { .. }));
    assert_eq!(
        err.to_string(),
        "plugin plugins/echo.wasm is not signed: no echo.sig beside it; sign it with `switchyard plugin sign plugins/echo.wasm --key <publisher>.key`"
    );
    let lax = TrustPolicy::default();
    assert_eq!(
        lax.verify(COMPONENT, None, None, "echo.wasm").unwrap(),
        None
    );
}

#[test]
fn a_tampered_component_is_refused_even_when_not_required() {
    let (key, policy) = acme();
    let sig = signed(&key, Some(MANIFEST));
    let mut tampered = COMPONENT.to_vec();
    tampered[10] ^= 1;
    for policy in [policy, TrustPolicy::default()] {
        let err = policy
            .verify(&tampered, Some(MANIFEST), Some(&sig), "echo.wasm")
            .unwrap_err();
        assert!(
            matches!(err, SignatureError::ComponentChanged { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("modified after signing"), "{err}");
    }
}

#[test]
fn a_changed_added_or_removed_manifest_is_refused() {
    let (key, policy) = acme();
    let with = signed(&key, Some(MANIFEST));
    let without = signed(&key, None);
    let changed: &[u8] = b"http = [\"https://*\"]\n";
    let cases = [
        (&with, Some(changed), "now: sha256 "),
        (&with, None, "now: no manifest"),
        (&without, Some(MANIFEST), "signed: no manifest"),
    ];
    for (sig, manifest, says) in cases {
        let err = policy
            .verify(COMPONENT, manifest, Some(sig), "echo.wasm")
            .unwrap_err();
        assert!(
            matches!(err, SignatureError::ManifestChanged { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("echo.manifest.toml") && text.contains(says),
            "{text}"
        );
    }
}

#[test]
fn an_unknown_key_is_refused_when_required_and_unverified_otherwise() {
    let (_, policy) = acme();
    let stranger = SecretKey::generate().unwrap();
    let sig = signed(&stranger, None);
    let err = policy
        .verify(COMPONENT, None, Some(&sig), "echo.wasm")
        .unwrap_err();
    assert!(matches!(err, SignatureError::UnknownKey { .. }));
    assert!(
        err.to_string()
            .contains(&format!("key {}", stranger.public_key().key_id())),
        "{err}"
    );
    let lax = TrustPolicy::default();
    assert_eq!(
        lax.verify(COMPONENT, None, Some(&sig), "echo.wasm")
            .unwrap(),
        None
    );
}

#[test]
fn a_bad_signature_is_refused_even_when_not_required() {
    let (key, policy) = acme();
    let mut file = SignatureFile::sign(&key, COMPONENT, None);
    let mut bytes = BASE64.decode(&file.signature).unwrap();
    bytes[0] ^= 1;
    file.signature = BASE64.encode(bytes);
    let sig = file.to_toml().into_bytes();
    let lax = TrustPolicy::new(false)
        .publisher("acme", key.public_key())
        .unwrap();
    for policy in [policy, lax] {
        let err = policy
            .verify(COMPONENT, None, Some(&sig), "echo.wasm")
            .unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("acme's key"), "{err}");
    }
    // A signature by a trusted key over other bytes, with the hashes edited
    // to match, is a bad signature too.
    let mut forged = SignatureFile::sign(&key, b"other code", None);
    forged.component_sha256 = crate::cache::sha256_hex(COMPONENT);
    let err = TrustPolicy::new(true)
        .publisher("acme", key.public_key())
        .unwrap()
        .verify(
            COMPONENT,
            None,
            Some(forged.to_toml().as_bytes()),
            "echo.wasm",
        )
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
}

#[test]
fn malformed_signature_files_are_refused() {
    let (key, policy) = acme();
    let mut file = SignatureFile::sign(&key, COMPONENT, None);
    file.version = 2;
    for sig in [b"not toml".to_vec(), file.to_toml().into_bytes()] {
        let err = policy
            .verify(COMPONENT, None, Some(&sig), "echo.wasm")
            .unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("echo.sig"), "{err}");
    }
}

#[test]
fn trust_config_takes_inline_keys_and_pub_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = SecretKey::generate().unwrap().public_key();
    let b = SecretKey::generate().unwrap().public_key();
    let path = dir.path().join("b.pub");
    std::fs::write(&path, format!("{}\n", b.to_text())).unwrap();
    let config = TrustConfig {
        require_signatures: true,
        publishers: BTreeMap::from([
            ("a".to_owned(), a.to_text()),
            ("b".to_owned(), path.display().to_string()),
        ]),
    };
    let policy = TrustPolicy::from_config(&config).unwrap();
    assert!(policy.requires_signatures());
    assert_eq!(policy.publishers[&b.key_id()].0, "b");
    assert_eq!(policy.publishers[&a.key_id()].0, "a");

    let config = TrustConfig {
        require_signatures: false,
        publishers: BTreeMap::from([("c".to_owned(), "missing.pub".to_owned())]),
    };
    let err = TrustPolicy::from_config(&config).unwrap_err();
    assert!(
        err.contains("trust.publishers.c") && err.contains("missing.pub"),
        "{err}"
    );
}
