use super::*;
use crate::policy::EgressPolicy;

/// A provider with fixed values, so tests need no environment.
struct Fixed(&'static [(&'static str, &'static str)]);

impl SecretProvider for Fixed {
    fn resolve(&self, name: &str, _grant: &SecretGrant) -> Result<SecretValue, SecretError> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| SecretValue::new(v.as_bytes().to_vec()))
            .ok_or_else(|| SecretError::NotGranted(name.into()))
    }
}

fn grant(destinations: &[&str]) -> SecretGrant {
    SecretGrant {
        env: Some("UNUSED".into()),
        file: None,
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
        in_body: false,
    }
}

fn secrets() -> ConnectionSecrets {
    let grants = BTreeMap::from([
        ("stripe".to_owned(), grant(&["https://api.stripe.com"])),
        ("signing".to_owned(), grant(&[])),
    ]);
    let provider = Fixed(&[("stripe", "sk_live_CANARY123"), ("signing", "whsec_abc")]);
    ConnectionSecrets::resolve(&grants, &provider).unwrap()
}

fn dest(url: &str) -> Destination {
    EgressPolicy::parse(&["https://api.stripe.com", "https://evil.example"])
        .unwrap()
        .check_url(url)
        .unwrap()
}

#[test]
fn placeholders_are_substituted_only_for_bound_destinations() {
    let s = secrets();
    let header = format!("Bearer {}", s.placeholder("stripe").unwrap());
    assert_eq!(header, "Bearer {{secret:stripe}}");
    let to_stripe = s
        .substitute(
            header.as_bytes(),
            &dest("https://api.stripe.com/v1/charges"),
            false,
        )
        .unwrap();
    assert_eq!(to_stripe.as_deref(), Some(&b"Bearer sk_live_CANARY123"[..]));
    let to_evil = s
        .substitute(
            header.as_bytes(),
            &dest("https://evil.example/steal"),
            false,
        )
        .unwrap_err();
    assert!(
        to_evil
            .to_string()
            .contains("may not be sent to https://evil.example:443"),
        "{to_evil}"
    );
    // A secret bound nowhere never leaves the host.
    let signing = s.substitute(
        b"{{secret:signing}}",
        &dest("https://api.stripe.com/"),
        false,
    );
    assert!(signing.is_err());
    // Bodies need `in_body`; text without placeholders is left alone.
    let body = s.substitute(header.as_bytes(), &dest("https://api.stripe.com/"), true);
    assert!(body.unwrap_err().to_string().contains("in_body"));
    let plain = s.substitute(b"no secrets", &dest("https://api.stripe.com/"), true);
    assert_eq!(plain.unwrap(), None);
}

#[test]
fn ungranted_secrets_are_refused_by_name() {
    let err = secrets().placeholder("aws").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no secret `aws` is granted to this connection"
    );
}

#[test]
fn values_never_print() {
    let value = SecretValue::new(b"sk_live_CANARY123".to_vec());
    assert_eq!(format!("{value:?}"), "[redacted]");
    let debug = format!("{:?}", secrets());
    assert!(!debug.contains("CANARY"), "{debug}");
}

#[test]
fn the_redactor_scrubs_every_value() {
    let r = secrets().redactor();
    assert_eq!(
        r.redact("token=sk_live_CANARY123; sig=whsec_abc; again sk_live_CANARY123"),
        "token=[redacted]; sig=[redacted]; again [redacted]"
    );
    assert_eq!(r.redact_bytes(b"xwhsec_abcx"), b"x[redacted]x");
    assert_eq!(Redactor::default().redact("whsec_abc"), "whsec_abc");
}

#[test]
fn the_redactor_scrubs_common_encodings_of_a_value() {
    use base64::Engine as _;
    let value = "sk/live+CANARY 123\"";
    let r = Redactor::new([&SecretValue::new(value.as_bytes().to_vec())]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let percent =
        percent_encoding::percent_encode(value.as_bytes(), percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let json = serde_json::to_string(value).unwrap();
    for form in [
        value.to_owned(),
        b64.encode(value),
        url_safe.encode(value),
        percent,
        json[1..json.len() - 1].to_owned(),
    ] {
        let text = format!("a {form} b");
        assert_eq!(r.redact(&text), "a [redacted] b", "{form}");
        assert!(r.finds(text.as_bytes()), "{form}");
    }
    assert!(!r.finds(b"sk/live+CANARY"), "a prefix is not the value");
}

#[test]
fn a_value_headed_where_it_is_not_bound_is_found_in_any_part() {
    let s = secrets();
    let dest = |origin: &str| {
        EgressPolicy::parse(&[origin])
            .unwrap()
            .check_url(&format!("{origin}/"))
            .unwrap()
    };
    let (elsewhere, stripe) = (dest("https://evil.example"), dest("https://api.stripe.com"));
    let body: &[u8] = b"{\"k\":\"sk_live_CANARY123\"}";
    assert_eq!(
        s.unbound_value_in(&elsewhere, &[b"/x", body]),
        Some("stripe")
    );
    assert_eq!(
        s.unbound_value_in(&stripe, &[b"/x", body]),
        None,
        "bound there"
    );
    // `signing` is bound nowhere: its value may go nowhere.
    assert_eq!(
        s.unbound_value_in(&stripe, &[b"d2hzZWNfYWJj"]),
        Some("signing"),
        "base64 of whsec_abc"
    );
    assert_eq!(s.unbound_value_in(&elsewhere, &[b"nothing here"]), None);
}

#[test]
fn hmac_signs_and_verifies_by_name() {
    let s = secrets();
    // RFC 4231-style check against an independent computation.
    let sig = s.hmac_sha256("signing", b"payload").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_abc").unwrap();
    mac.update(b"payload");
    assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
    assert!(s.verify_hmac_sha256("signing", b"payload", &sig).unwrap());
    assert!(!s.verify_hmac_sha256("signing", b"tampered", &sig).unwrap());
    assert!(
        !s.verify_hmac_sha256("signing", b"payload", "not hex")
            .unwrap()
    );
    assert!(s.hmac_sha256("missing", b"x").is_err());
}

#[test]
fn env_and_file_sources_resolve_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-file\n").unwrap();
    let from_file = SecretGrant {
        file: Some(path.clone()),
        ..SecretGrant::default()
    };
    assert_eq!(
        EnvOrFile.resolve("t", &from_file).unwrap().expose(),
        b"from-file"
    );

    let var = "SWITCHYARD_TEST_SECRET_UNSET_9F2C";
    let missing = SecretGrant {
        env: Some(var.into()),
        ..SecretGrant::default()
    };
    let err = EnvOrFile.resolve("t", &missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("secret `t`: environment variable `{var}` is not set")
    );
    let both = SecretGrant {
        env: Some(var.into()),
        file: Some(path),
        ..SecretGrant::default()
    };
    assert!(matches!(
        EnvOrFile.resolve("t", &both),
        Err(SecretError::Source(_))
    ));
    let gone = SecretGrant {
        file: Some(dir.path().join("nope")),
        ..SecretGrant::default()
    };
    assert!(
        EnvOrFile
            .resolve("t", &gone)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn bad_destinations_name_the_secret() {
    let grants = BTreeMap::from([("s".to_owned(), grant(&["gopher://x"]))]);
    let err = ConnectionSecrets::resolve(&grants, &Fixed(&[("s", "v")])).unwrap_err();
    assert!(err.to_string().starts_with("secret `s`:"), "{err}");
}

#[test]
fn a_redactor_scrubs_live_values_added_after_it_was_made() {
    use crate::oauth::{LIVE_VALUES_KEPT, LiveValues};
    let live = Arc::new(LiveValues::default());
    let redactor = secrets().redactor().with_live(live.clone());
    let token = "access-token-issued-later-0123456789";
    assert!(!redactor.finds(token.as_bytes()));
    live.set("g/access", &SecretValue::new(token.as_bytes().to_vec()));
    let echoed = format!("Authorization: Bearer {token}");
    assert_eq!(redactor.redact(&echoed), "Authorization: Bearer [redacted]");
    // Encoded forms too, as for static secrets.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    assert_eq!(redactor.redact(&b64), "[redacted]");
    // The current value and the newest LIVE_VALUES_KEPT it superseded
    // are remembered; older ones go.
    for i in 0..=LIVE_VALUES_KEPT {
        live.set(
            "g/access",
            &SecretValue::new(format!("rotated-token-{i:04}-abcdef").into_bytes()),
        );
    }
    assert!(redactor.finds(b"rotated-token-0064-abcdef"));
    assert!(redactor.finds(b"rotated-token-0000-abcdef"));
    assert!(!redactor.finds(token.as_bytes()));
}
