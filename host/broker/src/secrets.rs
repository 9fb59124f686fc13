//! Secrets: resolved by the host, never handed to guests.
//!
//! A connection's grants bind secret names to a source (an environment
//! variable or a file) and to the destinations the secret may be sent to.
//! A guest only ever sees a placeholder, `{{secret:NAME}}`; the host
//! replaces it with the value at egress, and only for a bound destination.
//! Values are zeroized when dropped, print as `[redacted]`, and the
//! [`Redactor`] scrubs them from anything a guest hands back (logs, errors,
//! outputs) in case one leaks some other way.

use crate::oauth::LiveValues;
use crate::policy::{Destination, EgressPolicy};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where a secret comes from and where it may go, per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// Read the value from this environment variable of the host.
    pub env: Option<String>,
    /// Read the value from this file (trailing newline trimmed).
    pub file: Option<PathBuf>,
    /// Egress rules the value may be sent to. Default: none, so the secret
    /// can be used for signing but never leaves the host.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Also substitute the value into request bodies (not only headers).
    /// Default: false.
    #[serde(default)]
    pub in_body: bool,
}

/// A secret value. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes, for the host's own use at egress or when signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret could not be resolved. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("secret `{0}`: set exactly one of `env` or `file`")]
    Source(String),
    #[error("secret `{name}`: environment variable `{var}` is not set")]
    MissingEnv { name: String, var: String },
    #[error("secret `{name}`: cannot read {path}: {reason}")]
    File {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("secret `{name}`: the value is empty")]
    Empty { name: String },
    #[error("secret `{name}`: {reason}")]
    Destinations { name: String, reason: String },
    #[error("no secret `{0}` is granted to this connection")]
    NotGranted(String),
    #[error(
        "secret `{name}` may not be sent to {destination}{place}; bind it there in the grant's `destinations`"
    )]
    NotBound {
        name: String,
        destination: String,
        place: &'static str,
    },
}

/// Resolves a grant's source to a value. Swap it to plug in a vault.
pub trait SecretProvider: Send + Sync {
    /// The value for `name` as `grant` describes it.
    fn resolve(&self, name: &str, grant: &SecretGrant) -> Result<SecretValue, SecretError>;
}

/// The built-in provider: environment variables and files.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvOrFile;

impl SecretProvider for EnvOrFile {
    fn resolve(&self, name: &str, grant: &SecretGrant) -> Result<SecretValue, SecretError> {
        let bytes = match (&grant.env, &grant.file) {
            (Some(var), None) => std::env::var_os(var)
                .ok_or_else(|| SecretError::MissingEnv {
                    name: name.into(),
                    var: var.clone(),
                })?
                .into_encoded_bytes(),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|e| SecretError::File {
                    name: name.into(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            _ => return Err(SecretError::Source(name.into())),
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty { name: name.into() });
        }
        Ok(SecretValue::new(bytes))
    }
}

struct BoundSecret {
    value: SecretValue,
    destinations: EgressPolicy,
    in_body: bool,
    /// The value raw and encoded, computed once: every outbound request is
    /// scanned for them.
    forms: Vec<Zeroizing<Vec<u8>>>,
}

/// The resolved secrets of one connection.
#[derive(Default)]
pub struct ConnectionSecrets {
    secrets: BTreeMap<String, BoundSecret>,
}

impl std::fmt::Debug for ConnectionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.secrets.keys()).finish()
    }
}

impl ConnectionSecrets {
    /// Resolves every grant with `provider`, failing on the first problem.
    pub fn resolve(
        grants: &BTreeMap<String, SecretGrant>,
        provider: &dyn SecretProvider,
    ) -> Result<Self, SecretError> {
        let mut secrets = BTreeMap::new();
        for (name, grant) in grants {
            let destinations = EgressPolicy::parse(&grant.destinations).map_err(|reason| {
                SecretError::Destinations {
                    name: name.clone(),
                    reason,
                }
            })?;
            let value = provider.resolve(name, grant)?;
            secrets.insert(
                name.clone(),
                BoundSecret {
                    forms: encoded_forms(value.expose()),
                    value,
                    destinations,
                    in_body: grant.in_body,
                },
            );
        }
        Ok(ConnectionSecrets { secrets })
    }

    /// The placeholder a guest gets instead of the value of `name`.
    pub fn placeholder(&self, name: &str) -> Result<String, SecretError> {
        if self.secrets.contains_key(name) {
            Ok(placeholder(name))
        } else {
            Err(SecretError::NotGranted(name.into()))
        }
    }

    /// Replaces placeholders in `bytes` with the values bound to
    /// `destination`: in headers every bound secret, in a body
    /// (`in_body`) only secrets whose grant sets `in_body`. A placeholder of
    /// a granted secret that may not go there is an error, so the request
    /// is refused instead of leaving with a placeholder. `Ok(None)` means
    /// nothing to replace.
    pub fn substitute(
        &self,
        bytes: &[u8],
        destination: &Destination,
        in_body: bool,
    ) -> Result<Option<Vec<u8>>, SecretError> {
        self.substitute_with(bytes, destination, in_body, |_| {})
    }

    /// [`substitute`](Self::substitute), calling `used` with the name of
    /// each secret it put in.
    pub fn substitute_with(
        &self,
        bytes: &[u8],
        destination: &Destination,
        in_body: bool,
        mut used: impl FnMut(&str),
    ) -> Result<Option<Vec<u8>>, SecretError> {
        if !contains(bytes, b"{{secret:") {
            return Ok(None);
        }
        let mut out: Option<Vec<u8>> = None;
        for (name, secret) in &self.secrets {
            let marker = placeholder(name);
            let current = out.as_deref().unwrap_or(bytes);
            if !contains(current, marker.as_bytes()) {
                continue;
            }
            let bound = secret
                .destinations
                .check_url(&destination.to_string())
                .is_ok();
            if !bound || (in_body && !secret.in_body) {
                return Err(SecretError::NotBound {
                    name: name.clone(),
                    destination: destination.to_string(),
                    place: if bound {
                        " in a body (set `in_body = true`)"
                    } else {
                        ""
                    },
                });
            }
            out = Some(replace(current, marker.as_bytes(), secret.value.expose()));
            used(name);
        }
        Ok(out)
    }

    /// HMAC-SHA256 of `message` keyed by secret `name`, as lowercase hex.
    pub fn hmac_sha256(&self, name: &str, message: &[u8]) -> Result<String, SecretError> {
        Ok(hex::encode(
            self.mac(name, message)?.finalize().into_bytes(),
        ))
    }

    /// Checks a hex HMAC-SHA256 `signature` in constant time.
    pub fn verify_hmac_sha256(
        &self,
        name: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, SecretError> {
        let Ok(expected) = hex::decode(signature.trim()) else {
            return Ok(false);
        };
        Ok(self.mac(name, message)?.verify_slice(&expected).is_ok())
    }

    fn mac(&self, name: &str, message: &[u8]) -> Result<Hmac<Sha256>, SecretError> {
        let secret = self
            .secrets
            .get(name)
            .ok_or_else(|| SecretError::NotGranted(name.into()))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.value.expose())
            .expect("HMAC accepts keys of any length");
        mac.update(message);
        Ok(mac)
    }

    /// A redactor for every value of this connection.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.values().map(|s| &s.value))
    }

    /// The name of a secret whose value (raw or in a common encoding, see
    /// [`Redactor`]) is in one of `parts` although the secret is not bound
    /// to `destination`: such a request must not leave.
    pub fn unbound_value_in(&self, destination: &Destination, parts: &[&[u8]]) -> Option<&str> {
        let url = destination.to_string();
        self.secrets
            .iter()
            .filter(|(_, secret)| secret.destinations.check_url(&url).is_err())
            .find(|(_, secret)| {
                parts
                    .iter()
                    .any(|part| secret.forms.iter().any(|form| contains(part, form)))
            })
            .map(|(name, _)| name.as_str())
    }
}

/// `{{secret:NAME}}`.
pub fn placeholder(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// Scrubs secret values out of bytes: what an upstream answers before the
/// guest sees it, and what a guest hands back (logs, errors, outputs).
/// Each value is matched raw and in the encodings an upstream or a guest
/// most often wraps it in: base64 (standard and URL-safe, padded or not),
/// percent-encoding and JSON string escaping.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every value, longest first, so a longer form is
    /// replaced whole before a shorter one inside it.
    forms: Vec<Zeroizing<Vec<u8>>>,
    /// Values that change while the host runs (OAuth tokens), read at
    /// each use.
    live: Vec<Arc<LiveValues>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Redactor({} forms, {} live lists)",
            self.forms.len(),
            self.live.len()
        )
    }
}

/// `value` raw and in its common encodings, without repeats or empties.
pub(crate) fn encoded_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    if value.is_empty() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(value);
    let json = serde_json::to_string(&text).expect("a string serializes");
    let candidates = [
        value.to_vec(),
        STANDARD.encode(value).into_bytes(),
        STANDARD_NO_PAD.encode(value).into_bytes(),
        URL_SAFE.encode(value).into_bytes(),
        URL_SAFE_NO_PAD.encode(value).into_bytes(),
        percent_encoding::percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .into_bytes(),
        json.as_bytes()[1..json.len() - 1].to_vec(),
    ];
    let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if !forms.iter().any(|f| **f == candidate) {
            forms.push(Zeroizing::new(candidate));
        }
    }
    forms
}

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

impl Redactor {
    /// A redactor for `values`.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a SecretValue>) -> Self {
        let mut forms: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .flat_map(|v| encoded_forms(v.expose()))
            .collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup_by(|a, b| **a == **b);
        Redactor {
            forms,
            live: Vec::new(),
        }
    }

    /// Also redacts every value `live` holds at the time of each use.
    pub fn with_live(mut self, live: Arc<LiveValues>) -> Self {
        self.live.push(live);
        self
    }

    /// Whether there is nothing to redact (now or later).
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty() && self.live.is_empty()
    }

    /// Whether `bytes` hold a secret value in any form.
    pub fn finds(&self, bytes: &[u8]) -> bool {
        self.forms.iter().any(|f| contains(bytes, f))
            || self
                .live
                .iter()
                .any(|live| live.with_forms(|forms| forms.iter().any(|f| contains(bytes, f))))
    }

    /// `bytes` with every secret value (in any form) replaced by
    /// [`REDACTED`].
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let fixed = self.forms.iter().fold(bytes.to_vec(), |acc, f| {
            replace(&acc, f, REDACTED.as_bytes())
        });
        self.live.iter().fold(fixed, |acc, live| {
            live.with_forms(|forms| {
                forms
                    .iter()
                    .fold(acc, |acc, f| replace(&acc, f, REDACTED.as_bytes()))
            })
        })
    }

    /// `text` with every secret value replaced by [`REDACTED`]; borrowed
    /// when nothing matched, which is the common case on the log path.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.finds(text.as_bytes()) {
            return Cow::Borrowed(text);
        }
        Cow::Owned(String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
