//! Logging through the host. Events carry the plugin, connection and
//! invocation id; the host caps their size and number.

use crate::bindings::switchyard::connector::log as wit;

pub use wit::Level;

/// Logs `message` at `level` with `fields`.
pub fn event(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wit::log(level, message, &fields);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    event(Level::Debug, message, &[]);
}

/// Logs at info level.
pub fn info(message: &str) {
    event(Level::Info, message, &[]);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    event(Level::Warn, message, &[]);
}

/// Logs at error level.
pub fn error(message: &str) {
    event(Level::Error, message, &[]);
}
