//! Webhook signature verification, on the raw body, before any guest code
//! runs. Four schemes, chosen per webhook in config:
//!
//! - `standard-webhooks` (standardwebhooks.com): `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature` (`v1,<base64>` entries, any
//!   may match), HMAC-SHA256 over `id.timestamp.body` with the base64 key
//!   after `whsec_`;
//! - `github`: `X-Hub-Signature-256: sha256=<hex>` over the body;
//! - `stripe`: `Stripe-Signature: t=<ts>,v1=<hex>…` over `t.body`;
//! - `hmac-sha256`: a hex HMAC over the body in a header of your choice.
//!
//! Timestamped schemes refuse requests outside the tolerance (default 5
//! minutes) either way, so a captured request cannot be replayed later;
//! within it, the caller remembers delivery ids to refuse replays.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_broker::secrets::SecretValue;

/// The signature scheme of one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SignatureScheme {
    StandardWebhooks {
        /// Seconds a timestamp may be off. Default: 300.
        #[serde(default = "five_minutes")]
        tolerance_s: u64,
    },
    Github,
    Stripe {
        /// Seconds a timestamp may be off. Default: 300.
        #[serde(default = "five_minutes")]
        tolerance_s: u64,
    },
    HmacSha256 {
        /// The header carrying the hex signature (a `sha256=` prefix is
        /// accepted).
        header: String,
        /// A header carrying a unique delivery id, for replay refusal.
        /// Default: none (the signature itself is the id).
        #[serde(default)]
        id_header: Option<String>,
    },
}

fn five_minutes() -> u64 {
    300
}

/// Why a request was refused. Each is counted and answered with a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("missing `{0}` header")]
    Missing(String),
    #[error("malformed `{header}` header: {reason}")]
    Malformed { header: String, reason: String },
    #[error("timestamp is {age_s} s away from now; tolerance is {tolerance_s} s")]
    Stale { age_s: u64, tolerance_s: u64 },
    #[error("no signature matches")]
    BadSignature,
    #[error("delivery `{0}` was already received")]
    Replayed(String),
}

impl Rejection {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Missing(_) => "missing",
            Rejection::Malformed { .. } => "malformed",
            Rejection::Stale { .. } => "stale",
            Rejection::BadSignature => "bad-signature",
            Rejection::Replayed(_) => "replayed",
        }
    }
}

/// A verified request: its delivery id, for replay refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub delivery_id: String,
    /// What the signature covers, canonically: the signed id for Standard
    /// Webhooks (`id:<webhook-id>`), else `sha256:<hex>` of the signed
    /// bytes. Replays are keyed on it, so an unsigned id header or the
    /// case of a hex signature cannot make a captured request new.
    pub replay_key: String,
}

/// `sha256:<hex>` of `bytes`.
fn digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<Sha256 as sha2::Digest>::digest(bytes))
    )
}

/// Checks `body` and `headers` (names compared case-insensitively) against
/// `scheme` with `secret`, at time `now`.
pub fn verify(
    scheme: &SignatureScheme,
    secret: &SecretValue,
    headers: &[(String, String)],
    body: &[u8],
    now: SystemTime,
) -> Result<Verified, Rejection> {
    let header = |name: &str| {
        // Senders built on Svix send the Standard Webhooks headers as
        // `svix-*`.
        let alias = name
            .strip_prefix("webhook-")
            .map(|rest| format!("svix-{rest}"));
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .or_else(|| {
                let alias = alias.as_deref()?;
                headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(alias))
            })
            .map(|(_, v)| v.trim())
            .ok_or_else(|| Rejection::Missing(name.to_owned()))
    };
    match scheme {
        SignatureScheme::StandardWebhooks { tolerance_s } => {
            let id = header("webhook-id")?;
            let timestamp = header("webhook-timestamp")?;
            let signatures = header("webhook-signature")?;
            check_age("webhook-timestamp", timestamp, *tolerance_s, now)?;
            let key = standard_webhooks_key(secret.expose())?;
            let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
            let matched = signatures
                .split(' ')
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|sig| BASE64.decode(sig).ok())
                .any(|sig| mac_matches(&key, &signed, &sig));
            matched
                .then(|| Verified {
                    delivery_id: id.to_owned(),
                    replay_key: format!("id:{id}"),
                })
                .ok_or(Rejection::BadSignature)
        }
        SignatureScheme::Github => {
            let value = header("x-hub-signature-256")?;
            let hex_sig = value
                .strip_prefix("sha256=")
                .ok_or_else(|| Rejection::Malformed {
                    header: "x-hub-signature-256".into(),
                    reason: "expected `sha256=<hex>`".into(),
                })?;
            check_hex(secret.expose(), body, hex_sig)?;
            let delivery_id = header("x-github-delivery")
                .map(str::to_owned)
                .unwrap_or_else(|_| hex_sig.to_ascii_lowercase());
            Ok(Verified {
                delivery_id,
                replay_key: digest(body),
            })
        }
        SignatureScheme::Stripe { tolerance_s } => {
            let value = header("stripe-signature")?;
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => timestamp = Some(t),
                    Some(("v1", sig)) => signatures.push(sig),
                    _ => {}
                }
            }
            let timestamp = timestamp.ok_or_else(|| Rejection::Malformed {
                header: "stripe-signature".into(),
                reason: "no `t=` timestamp".into(),
            })?;
            check_age("stripe-signature", timestamp, *tolerance_s, now)?;
            let signed = [timestamp.as_bytes(), b".", body].concat();
            let matched = signatures.iter().find(|sig| {
                hex::decode(sig).is_ok_and(|sig| mac_matches(secret.expose(), &signed, &sig))
            });
            matched
                .map(|sig| Verified {
                    delivery_id: format!("{timestamp}.{}", sig.to_ascii_lowercase()),
                    replay_key: digest(&signed),
                })
                .ok_or(Rejection::BadSignature)
        }
        SignatureScheme::HmacSha256 {
            header: name,
            id_header,
        } => {
            let value = header(name)?;
            let hex_sig = value.strip_prefix("sha256=").unwrap_or(value);
            check_hex(secret.expose(), body, hex_sig)?;
            let delivery_id = match id_header {
                Some(id) => header(id)?.to_owned(),
                None => hex_sig.to_ascii_lowercase(),
            };
            Ok(Verified {
                delivery_id,
                replay_key: digest(body),
            })
        }
    }
}

/// Standard Webhooks headers for an outgoing delivery: `webhook-id`,
/// `webhook-timestamp` (`unix_s`) and `webhook-signature` (`v1,<base64
/// HMAC-SHA256 of id.timestamp.body>` keyed with the base64 key after
/// `whsec_`), which [`verify`] (and any Standard Webhooks library) accepts.
pub fn sign_standard_webhooks(
    secret: &SecretValue,
    id: &str,
    unix_s: u64,
    body: &[u8],
) -> Result<[(&'static str, String); 3], Rejection> {
    let key = standard_webhooks_key(secret.expose())?;
    let timestamp = unix_s.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat());
    let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    Ok([
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ])
}

/// A Standard Webhooks secret is `whsec_` + base64 of the key.
fn standard_webhooks_key(secret: &[u8]) -> Result<Vec<u8>, Rejection> {
    let text = std::str::from_utf8(secret).unwrap_or_default();
    BASE64
        .decode(text.strip_prefix("whsec_").unwrap_or(text))
        .map_err(|_| Rejection::Malformed {
            header: "(secret)".into(),
            reason: "a Standard Webhooks secret is `whsec_` followed by base64".into(),
        })
}

fn check_hex(key: &[u8], body: &[u8], hex_sig: &str) -> Result<(), Rejection> {
    let sig = hex::decode(hex_sig).map_err(|_| Rejection::BadSignature)?;
    if mac_matches(key, body, &sig) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

/// Constant-time comparison of HMAC-SHA256(key, message) with `sig`.
fn mac_matches(key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.verify_slice(sig).is_ok()
}

fn check_age(
    header: &str,
    timestamp: &str,
    tolerance_s: u64,
    now: SystemTime,
) -> Result<(), Rejection> {
    let ts: u64 = timestamp.parse().map_err(|_| Rejection::Malformed {
        header: header.into(),
        reason: format!("timestamp `{timestamp}` is not whole seconds"),
    })?;
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let age_s = now_s.abs_diff(ts);
    if age_s > tolerance_s {
        return Err(Rejection::Stale { age_s, tolerance_s });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretValue {
        SecretValue::new(text.as_bytes().to_vec())
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn githubs_published_test_vector_verifies() {
        // docs.github.com, "Validating webhook deliveries": testing the
        // signature verification.
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let ok = verify(
            &SignatureScheme::Github,
            &secret("It's a Secret to Everybody"),
            &headers(&[("X-Hub-Signature-256", sig), ("X-GitHub-Delivery", "d-1")]),
            body,
            SystemTime::now(),
        );
        assert_eq!(ok.unwrap().delivery_id, "d-1");
        let bad = verify(
            &SignatureScheme::Github,
            &secret("It's a Secret to Everybody"),
            &headers(&[("X-Hub-Signature-256", sig)]),
            b"Hello, World?",
            SystemTime::now(),
        );
        assert_eq!(bad, Err(Rejection::BadSignature));
    }

    #[test]
    fn stripe_signatures_check_the_timestamp_and_any_v1() {
        let key = secret("whsec_test");
        let now = SystemTime::now();
        let t = now
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let body = br#"{"id":"evt_1"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let value = format!("t={t},v1={},v1={good}", "00".repeat(32));
        let scheme = SignatureScheme::Stripe { tolerance_s: 300 };
        let ok = verify(
            &scheme,
            &key,
            &headers(&[("stripe-signature", &value)]),
            body,
            now,
        );
        assert!(ok.is_ok(), "{ok:?}");
        // Re-cased hex verifies too, and names the same delivery with the
        // same replay key: it cannot pass for a new event.
        let upper = format!("t={t},v1={}", good.to_ascii_uppercase());
        let recased = verify(
            &scheme,
            &key,
            &headers(&[("stripe-signature", &upper)]),
            body,
            now,
        )
        .unwrap();
        let ok = ok.unwrap();
        assert_eq!(
            (&recased.delivery_id, &recased.replay_key),
            (&ok.delivery_id, &ok.replay_key)
        );
        let later = now + Duration::from_secs(301);
        let stale = verify(
            &scheme,
            &key,
            &headers(&[("stripe-signature", &value)]),
            body,
            later,
        );
        assert!(matches!(stale, Err(Rejection::Stale { .. })), "{stale:?}");
    }

    #[test]
    fn standard_webhooks_rejects_missing_headers_and_bad_secrets() {
        let scheme = SignatureScheme::StandardWebhooks { tolerance_s: 300 };
        let missing = verify(
            &scheme,
            &secret("whsec_AAAA"),
            &[],
            b"{}",
            SystemTime::now(),
        );
        assert_eq!(missing, Err(Rejection::Missing("webhook-id".into())));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let h = headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &now),
            ("webhook-signature", "v1,AAAA"),
        ]);
        let bad = verify(&scheme, &secret("whsec_AAAA"), &h, b"{}", SystemTime::now());
        assert_eq!(bad, Err(Rejection::BadSignature));
    }

    #[test]
    fn standard_webhooks_signatures_verify() {
        let key = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let now = SystemTime::now();
        let s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let signed = sign_standard_webhooks(&key, "alert_1", s, b"{}").unwrap();
        let h: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let scheme = SignatureScheme::StandardWebhooks { tolerance_s: 300 };
        assert_eq!(
            verify(&scheme, &key, &h, b"{}", now).unwrap().delivery_id,
            "alert_1"
        );
        let other = verify(&scheme, &key, &h, b"{ }", now);
        assert_eq!(other, Err(Rejection::BadSignature));
    }

    #[test]
    fn plain_hmac_reads_a_configured_header() {
        let key = secret("k");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"body");
        let sig = hex::encode(mac.finalize().into_bytes());
        let scheme = SignatureScheme::HmacSha256 {
            header: "x-signature".into(),
            id_header: Some("x-delivery".into()),
        };
        let h = headers(&[("X-Signature", &sig), ("x-delivery", "42")]);
        let ok = verify(&scheme, &key, &h, b"body", SystemTime::now()).unwrap();
        assert_eq!(ok.delivery_id, "42");
        let scheme: SignatureScheme =
            toml::from_str("scheme = \"hmac-sha256\"\nheader = \"x-sig\"").unwrap();
        assert!(matches!(scheme, SignatureScheme::HmacSha256 { .. }));
    }
}
