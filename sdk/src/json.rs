//! JSON in and out, with errors the host understands.

use crate::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use serde_json::{Value, json};

/// Parses `input`; a parse failure is [`Error::InvalidInput`] naming the
/// problem and its position.
pub fn from_slice<T: DeserializeOwned>(input: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(input)
        .map_err(|e| Error::invalid_input(format!("input is not valid: {e}")))
}

/// Serialises `value`; a failure is [`Error::Permanent`].
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::permanent(format!("cannot encode output: {e}")))
}
