//! The connection's non-secret settings, from the operator's config.

use crate::bindings::switchyard::connector::config as wit;

/// The value of `key`, if set.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// The value of `key`, or `default` when unset.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// Every setting, sorted by key.
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
