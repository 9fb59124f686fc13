//! Ed25519 publisher keys and their one-line text format.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// First word of a secret key file.
pub const SECRET_KEY_TAG: &str = "switchyard-ed25519-secret-v1";
/// First word of a public key file (and of an inline `[trust.publishers]` key).
pub const PUBLIC_KEY_TAG: &str = "switchyard-ed25519-public-v1";

/// A key that is missing, unreadable or not in the expected format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a key of the expected kind.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    /// The OS random number generator failed.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// An Ed25519 public key: who a trusted publisher is.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// Parses `switchyard-ed25519-public-v1 <base64>`; `what` names the
    /// source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let bytes = parse_tagged(text, PUBLIC_KEY_TAG, what)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| format_error(what, "not a valid Ed25519 public key"))
    }

    /// Reads a `.pub` file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The key as one line of text (no newline).
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {}", BASE64.encode(self.0.as_bytes()))
    }

    /// Whether `signature` is this key's over `message` (strict Ed25519).
    pub(crate) fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        self.0.verify_strict(message, signature).is_ok()
    }

    /// First 16 hex digits of the sha256 of the key bytes.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))[..16].to_owned()
    }
}

/// An Ed25519 signing key. Its seed is zeroized when dropped.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public_key().key_id())
    }
}

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Parses `switchyard-ed25519-secret-v1 <base64 seed>`.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(parse_tagged(text, SECRET_KEY_TAG, what)?);
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a `.key` file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Self::parse(&text, &path.display().to_string())
    }

    /// Writes the key to a new file `path`, mode 0600 on Unix; refuses to
    /// overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(format!(
            "{SECRET_KEY_TAG} {}\n",
            BASE64.encode(self.0.to_bytes())
        ));
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

fn format_error(what: &str, reason: &str) -> KeyError {
    KeyError::Format {
        what: what.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_tagged(text: &str, tag: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let mut words = text.split_whitespace();
    let found = words.next().unwrap_or("nothing");
    if found != tag {
        let reason = format!("expected a `{tag} <base64>` key, found `{found}`");
        return Err(format_error(what, &reason));
    }
    let (Some(encoded), None) = (words.next(), words.next()) else {
        return Err(format_error(what, "expected one base64 word after the tag"));
    };
    let bytes = Zeroizing::new(
        BASE64
            .decode(encoded)
            .map_err(|e| format_error(what, &format!("bad base64: {e}")))?,
    );
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format_error(what, &format!("expected 32 bytes, got {}", bytes.len())))
}
