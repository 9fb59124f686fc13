//! Tokens at rest: sealed with ChaCha20-Poly1305 under a host key, the
//! record's name bound in as associated data (a sealed record copied to
//! another grant's name does not open).
//!
//! The key is 32 random bytes, base64 in a file of mode 0600 (by default
//! `<data_dir>/oauth.key`, created on first start). Hosts sharing a token
//! store (`[cluster]`) need the same key: point `[oauth] key` at one file.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::io::Write as _;
use std::path::Path;
use zeroize::Zeroizing;

/// What a sealed record starts with: the format version.
const VERSION: u8 = 1;

/// The host's key for tokens at rest.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl SealKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("an oauth key is 32 bytes, not {}", bytes.len()))?;
        Ok(SealKey(Zeroizing::new(key)))
    }

    /// A key from its text form (base64 of 32 bytes, surrounding
    /// whitespace ignored).
    pub fn from_text(text: &[u8]) -> Result<Self, String> {
        let text = String::from_utf8_lossy(text);
        let bytes = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|e| format!("an oauth key is base64 of 32 bytes: {e}"))?,
        );
        Self::from_bytes(&bytes)
    }

    /// Reads the key at `path`, creating it (mode 0600) if there is none.
    /// A key file others may read or write is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        match std::fs::read(path) {
            Ok(text) => {
                check_private(path)?;
                Self::from_text(&Zeroizing::new(text)).map_err(|e| format!("{shown}: {e}"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut bytes[..]).map_err(|e| format!("random key: {e}"))?;
                let text = Zeroizing::new(format!("{}\n", BASE64.encode(&bytes[..])));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(path)
                    .map_err(|e| format!("creating {shown}: {e}"))?;
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("writing {shown}: {e}"))?;
                Ok(SealKey(bytes))
            }
            Err(e) => Err(format!("reading {shown}: {e}")),
        }
    }

    /// `plain` sealed for the record named `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0[..]));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .expect("sealing in memory cannot fail");
        let mut out = Vec::with_capacity(1 + nonce.len() + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plain bytes of a record sealed for `name`, or why not (another
    /// key, another name, tampered).
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(format!(
                "stored token record `{name}` is not in a known format"
            ));
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0[..]));
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[1..13]),
                Payload {
                    msg: &sealed[13..],
                    aad: name.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                format!(
                    "stored token record `{name}` does not open with this host's oauth key (another key, or tampered)"
                )
            })
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable or writable by others (mode {:o}); run `chmod 600` on it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_under_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.key");
        let key = SealKey::load_or_create(&path).unwrap();
        let sealed = key.seal("c/crm", b"refresh-token-value");
        assert!(!sealed.windows(7).any(|w| w == b"refresh"));
        assert_eq!(
            &key.open("c/crm", &sealed).unwrap()[..],
            b"refresh-token-value"
        );
        assert!(key.open("c/other", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.open("c/crm", &flipped).is_err());
        let again = SealKey::load_or_create(&path).unwrap();
        assert!(again.open("c/crm", &sealed).is_ok());
        let other = SealKey::from_bytes(&[7; 32]).unwrap();
        assert!(other.open("c/crm", &sealed).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.key");
        SealKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SealKey::load_or_create(&path).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
