//! Secrets by name, never by value. The operator binds each secret to a
//! connection and to the destinations it may be sent to; the connector only
//! ever sees a placeholder, which the host replaces at egress.

use crate::Error;
use crate::bindings::switchyard::connector::secrets as wit;

/// The placeholder for secret `name`, to put in a request header (or a
/// body, where the operator allows it). [`crate::http::RequestBuilder::bearer_secret`]
/// does this for `authorization`.
pub fn placeholder(name: &str) -> Result<String, Error> {
    wit::placeholder(name).map_err(|e| to_error(name, e))
}

/// HMAC-SHA256 of `message` keyed by secret `name`, as lowercase hex.
pub fn sign_hmac_sha256(name: &str, message: &[u8]) -> Result<String, Error> {
    wit::sign_hmac_sha256(name, message).map_err(|e| to_error(name, e))
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` keyed by secret
/// `name` (compared in constant time by the host), e.g. to check a
/// webhook's signature header.
pub fn verify_hmac_sha256(name: &str, message: &[u8], signature_hex: &str) -> Result<bool, Error> {
    wit::verify_hmac_sha256(name, message, signature_hex).map_err(|e| to_error(name, e))
}

/// Either case will repeat until the operator changes the config, so both
/// are permanent; the host's text says what to change.
fn to_error(name: &str, error: wit::SecretError) -> Error {
    match error {
        wit::SecretError::NotGranted(text) => {
            Error::permanent(format!("secret `{name}` is not granted: {text}"))
        }
        wit::SecretError::Unavailable(text) => {
            Error::permanent(format!("secret `{name}` is unavailable: {text}"))
        }
    }
}
