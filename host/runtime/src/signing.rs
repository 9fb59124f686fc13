//! Signed plugins: publisher keys, signature files and the operator's
//! [`TrustPolicy`].
//!
//! A publisher signs a component together with its capability manifest
//! (`echo.wasm` + `echo.manifest.toml` → `echo.sig`), so neither the code
//! nor what it requests can change without breaking the signature. The
//! signed message is domain-separated:
//!
//! ```text
//! switchyard-plugin-signature-v1\n<component sha256 hex>\n<manifest sha256 hex or "none">
//! ```
//!
//! Keys are Ed25519, stored as one line of text: `switchyard-ed25519-secret-v1
//! <base64 of the 32-byte seed>` and `switchyard-ed25519-public-v1 <base64 of
//! the 32-byte public key>`. A key id is the first 16 hex digits of the
//! sha256 of the public key bytes.

mod keys;

pub use keys::{KeyError, PUBLIC_KEY_TAG, PublicKey, SECRET_KEY_TAG, SecretKey};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// First line of every signed message.
pub const SIGNATURE_DOMAIN: &str = "switchyard-plugin-signature-v1";
/// The signature file format this host writes and reads.
pub const SIGNATURE_VERSION: u32 = 1;
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";

/// A `<stem>.sig` file, TOML. Written by `switchyard plugin sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Format version: [`SIGNATURE_VERSION`].
    pub version: u32,
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// Key id of the signing key ([`PublicKey::key_id`]).
    pub key_id: String,
    /// sha256 of the component bytes, lowercase hex.
    pub component_sha256: String,
    /// sha256 of the manifest bytes, or `"none"` when signed without one.
    pub manifest_sha256: String,
    /// The Ed25519 signature of [`signed_message`], base64.
    pub signature: String,
}

impl SignatureFile {
    /// The signature path for a component: `x.wasm` → `x.sig`.
    pub fn path_for(component: &Path) -> PathBuf {
        component.with_extension("sig")
    }

    /// Signs `component` and its `manifest` (if any) with `key`.
    pub fn sign(key: &SecretKey, component: &[u8], manifest: Option<&[u8]>) -> Self {
        let component_sha256 = crate::cache::sha256_hex(component);
        let manifest_sha256 = manifest_hash(manifest);
        let message = signed_message(&component_sha256, &manifest_sha256);
        SignatureFile {
            version: SIGNATURE_VERSION,
            algorithm: ALGORITHM.to_owned(),
            key_id: key.public_key().key_id(),
            component_sha256,
            manifest_sha256,
            signature: BASE64.encode(key.sign(&message).to_bytes()),
        }
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a signature file serializes")
    }

    /// Parses a signature file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let file: SignatureFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.version != SIGNATURE_VERSION || file.algorithm != ALGORITHM {
            return Err(format!(
                "version {} / algorithm `{}` is not supported (this host reads version {SIGNATURE_VERSION}, `{ALGORITHM}`)",
                file.version, file.algorithm
            ));
        }
        Ok(file)
    }
}

/// The bytes a signature covers.
pub fn signed_message(component_sha256: &str, manifest_sha256: &str) -> Vec<u8> {
    format!("{SIGNATURE_DOMAIN}\n{component_sha256}\n{manifest_sha256}").into_bytes()
}

fn manifest_hash(manifest: Option<&[u8]>) -> String {
    manifest.map_or_else(|| "none".to_owned(), crate::cache::sha256_hex)
}

/// Who signed a plugin, once the signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The publisher's name in `[trust.publishers]` (or the CLI's `--key`
    /// file stem).
    pub publisher: String,
    /// The signing key's id.
    pub key_id: String,
}

/// Why a plugin's signature was refused. Each message names the file and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Signatures are required and the plugin has none.
    #[error(
        "plugin {label} is not signed: no {sig} beside it; sign it with `switchyard plugin sign {label} --key <publisher>.key`"
    )]
    Unsigned { label: String, sig: String },
    /// The signature file is not one this host can read.
    #[error("plugin {label}: unreadable signature file {sig}: {reason}; have it re-signed")]
    Malformed {
        label: String,
        sig: String,
        reason: String,
    },
    /// The component bytes are not the ones that were signed.
    #[error(
        "plugin {label} was modified after signing: its sha256 is {actual} but the signature covers {signed}; get the original file from the publisher or have it re-signed"
    )]
    ComponentChanged {
        label: String,
        signed: String,
        actual: String,
    },
    /// The manifest (the capabilities requested) is not the signed one.
    #[error(
        "plugin {label}: its manifest {manifest} is not the one that was signed (signed: {signed}, now: {actual}); the requested capabilities are bound to the signature: restore the publisher's manifest or have it re-signed"
    )]
    ManifestChanged {
        label: String,
        manifest: String,
        signed: String,
        actual: String,
    },
    /// The signing key is not a trusted publisher's.
    #[error(
        "plugin {label} is signed by key {key_id}, which is not a trusted publisher; add the publisher's public key under [trust.publishers] if you trust it"
    )]
    UnknownKey { label: String, key_id: String },
    /// The signature does not verify with the publisher's key.
    #[error(
        "plugin {label}: bad signature: it does not verify with {publisher}'s key {key_id}; the signature file is corrupt or forged, have the publisher re-sign it"
    )]
    BadSignature {
        label: String,
        publisher: String,
        key_id: String,
    },
}

/// The operator's trust settings: `[trust]` in `switchyard.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Refuse plugins without a valid signature by a trusted publisher.
    /// Default: `false` (unsigned plugins load; a present signature is
    /// still checked).
    pub require_signatures: bool,
    /// Trusted publishers by name: each an inline key
    /// (`"switchyard-ed25519-public-v1 <base64>"`) or the path of a `.pub`
    /// file, relative to the config file. Default: none.
    pub publishers: BTreeMap<String, String>,
}

/// Which plugins may load, by signature. Default: signatures not required,
/// no trusted publishers.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    require_signatures: bool,
    /// By key id: (publisher name, key).
    publishers: BTreeMap<String, (String, PublicKey)>,
}

impl TrustPolicy {
    /// A policy with no trusted publishers.
    pub fn new(require_signatures: bool) -> Self {
        TrustPolicy {
            require_signatures,
            publishers: BTreeMap::new(),
        }
    }

    /// Reads `[trust]`: inline keys are parsed, other values read as paths.
    pub fn from_config(config: &TrustConfig) -> Result<Self, String> {
        let mut policy = TrustPolicy::new(config.require_signatures);
        for (name, value) in &config.publishers {
            let what = format!("trust.publishers.{name}");
            let key = if value.trim_start().starts_with(PUBLIC_KEY_TAG) {
                PublicKey::parse(value, &what)
            } else {
                PublicKey::read(Path::new(value))
            }
            .map_err(|e| format!("{what}: {e}"))?;
            policy = policy.publisher(name, key)?;
        }
        Ok(policy)
    }

    /// Adds a trusted publisher; refuses a key already trusted under another
    /// name.
    pub fn publisher(mut self, name: &str, key: PublicKey) -> Result<Self, String> {
        let id = key.key_id();
        if let Some((other, _)) = self.publishers.get(&id) {
            return Err(format!(
                "publishers `{other}` and `{name}` have the same key {id}"
            ));
        }
        self.publishers.insert(id, (name.to_owned(), key));
        Ok(self)
    }

    /// Whether unsigned plugins are refused.
    pub fn requires_signatures(&self) -> bool {
        self.require_signatures
    }

    /// Checks a plugin's bytes. `label` names the component file in
    /// messages (`echo.wasm`); the signature is its `.sig` beside it.
    ///
    /// Returns the signer, or `None` for a plugin that may load unverified
    /// (unsigned, or signed by an unknown key, when signatures are not
    /// required). A signature whose hashes do not match the bytes, or that
    /// does not verify with a trusted key, is always refused.
    pub fn verify(
        &self,
        component: &[u8],
        manifest: Option<&[u8]>,
        signature: Option<&[u8]>,
        label: &str,
    ) -> Result<Option<Signer>, SignatureError> {
        let sig = sibling(label, "sig");
        let Some(signature) = signature else {
            if self.require_signatures {
                return Err(SignatureError::Unsigned {
                    label: label.to_owned(),
                    sig,
                });
            }
            return Ok(None);
        };
        let malformed = |reason: String| SignatureError::Malformed {
            label: label.to_owned(),
            sig: sig.clone(),
            reason,
        };
        let file = SignatureFile::parse(signature).map_err(malformed)?;
        let actual = crate::cache::sha256_hex(component);
        if actual != file.component_sha256 {
            return Err(SignatureError::ComponentChanged {
                label: label.to_owned(),
                signed: file.component_sha256,
                actual,
            });
        }
        let actual = manifest_hash(manifest);
        if actual != file.manifest_sha256 {
            let describe = |hash: &str| match hash {
                "none" => "no manifest".to_owned(),
                hash => format!("sha256 {hash}"),
            };
            return Err(SignatureError::ManifestChanged {
                label: label.to_owned(),
                manifest: sibling(label, "manifest.toml"),
                signed: describe(&file.manifest_sha256),
                actual: describe(&actual),
            });
        }
        let Some((publisher, key)) = self.publishers.get(&file.key_id) else {
            if self.require_signatures {
                return Err(SignatureError::UnknownKey {
                    label: label.to_owned(),
                    key_id: file.key_id,
                });
            }
            tracing::warn!(
                plugin = label,
                key_id = %file.key_id,
                "plugin is signed by a key that is not a trusted publisher; loading it unverified"
            );
            return Ok(None);
        };
        let bad = || SignatureError::BadSignature {
            label: label.to_owned(),
            publisher: publisher.clone(),
            key_id: file.key_id.clone(),
        };
        let bytes = BASE64.decode(&file.signature).map_err(|_| bad())?;
        let signature = Signature::from_slice(&bytes).map_err(|_| bad())?;
        let message = signed_message(&file.component_sha256, &file.manifest_sha256);
        if !key.verifies(&message, &signature) {
            return Err(bad());
        }
        Ok(Some(Signer {
            publisher: publisher.clone(),
            key_id: file.key_id,
        }))
    }
}

/// The files beside a component, each `None` when absent.
#[derive(Debug, Default)]
pub struct Beside {
    /// `<stem>.manifest.toml`.
    pub manifest: Option<Vec<u8>>,
    /// `<stem>.sig`.
    pub signature: Option<Vec<u8>>,
}

/// Reads what lies beside a component: its manifest and its signature file.
pub fn read_beside(component: &Path) -> std::io::Result<Beside> {
    let read = |path: PathBuf| match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    };
    Ok(Beside {
        manifest: read(switchyard_broker::capabilities::PluginManifest::path_for(
            component,
        ))?,
        signature: read(SignatureFile::path_for(component))?,
    })
}

/// `dir/echo.wasm` + `sig` → `echo.sig` (the file name only).
fn sibling(label: &str, extension: &str) -> String {
    let path = Path::new(label).with_extension(extension);
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
