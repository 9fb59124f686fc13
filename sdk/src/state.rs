//! Durable key-value state of the connection (requires `state = true` in
//! the plugin manifest and the connection's grants). Keys are private to
//! the connection; the host bounds key and value sizes.

use crate::Error;
use crate::bindings::switchyard::connector::state as wit;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The value of `key`, or `None` when unset.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key).map_err(to_error)
}

/// The value of `key` parsed as JSON; a value that does not parse is
/// [`Error::Permanent`].
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    let Some(bytes) = get(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::permanent(format!("state `{key}` is not the expected JSON: {e}")))
}

/// Sets `key` to `value`.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::set(key, value).map_err(to_error)
}

/// Sets `key` to `value` as JSON.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &crate::json::to_vec(value)?)
}

/// Removes `key`; `true` if it existed.
pub fn delete(key: &str) -> Result<bool, Error> {
    wit::delete(key).map_err(to_error)
}

/// Sets `key` to `new` (removes it when `None`) only if its value is still
/// `expected` (`None`: absent). `true` if it swapped; on `false`, read again
/// and retry.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<bool, Error> {
    wit::compare_and_swap(key, expected, new).map_err(to_error)
}

/// Keys starting with `prefix`, sorted, at most `limit`.
pub fn keys(prefix: &str, limit: u32) -> Result<Vec<String>, Error> {
    wit::keys(prefix, limit).map_err(to_error)
}

/// Not granted and too large repeat; an unavailable store may recover.
fn to_error(error: wit::StateError) -> Error {
    match error {
        wit::StateError::NotGranted(text) => {
            Error::permanent(format!("state is not granted: {text}"))
        }
        wit::StateError::TooLarge(text) => Error::permanent(format!("state too large: {text}")),
        wit::StateError::Unavailable(text) => {
            Error::retryable(format!("state is unavailable: {text}"))
        }
    }
}
