//! Errors of the library API.

use crate::bindings::ConnectorError;
use std::path::PathBuf;

/// Why a plugin could not be loaded. Every message names the file and what
/// to do about it; nothing from the plugin has run when one of these is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read plugin: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "{path}: not a WebAssembly file (it starts with {magic}); build the connector with `switchyard plugin build <crate dir>`"
    )]
    NotWasm { path: PathBuf, magic: String },
    /// A core module was given where a component is required.
    #[error(
        "{path}: this is a core WebAssembly module, not a component; componentize it with `switchyard plugin build <crate dir>` (or `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    /// The component does not target the `switchyard:connector` world.
    #[error(
        "{path}: wrong world: the component exports [{exports}] but a connector must export `switchyard:connector/connector@{supported}`; build it against wit/ with the `plugin` world (the Rust SDK does this)"
    )]
    WrongWorld {
        path: PathBuf,
        exports: String,
        supported: String,
    },
    /// The component targets a WIT version this host does not implement.
    #[error(
        "{path}: built for switchyard:connector@{found}, which this host does not support (supported: {supported}); rebuild against a supported version or upgrade the host"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: String,
    },
    /// The connector interface lacks a function the host calls.
    #[error(
        "{path}: the export `{interface}` is incomplete: {detail}; rebuild the connector against the published WIT"
    )]
    MissingExport {
        path: PathBuf,
        interface: String,
        detail: String,
    },
    /// The component imports something the host does not provide.
    #[error("{path}: imports `{import}`, which this host does not provide; {hint}")]
    UnsupportedImport {
        path: PathBuf,
        import: String,
        hint: String,
    },
    /// Compiling the file could cost more than the host allows (see
    /// [`crate::admission`]); refused before any compiler ran.
    #[error(
        "{path}: refused before compiling: {what}, over limits.{key} = {limit}; shrink the connector or raise limits.{key} in switchyard.toml"
    )]
    TooCostly {
        path: PathBuf,
        what: String,
        key: String,
        limit: u64,
    },
    /// The bytes claim to be a component but do not validate or compile.
    #[error("{path}: invalid component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A connection's plugin imports a brokered interface the connection is
    /// not granted.
    #[error(
        "connection `{connection}`: plugin `{plugin}` imports `{import}`, which is not granted; add {grant}"
    )]
    NotGranted {
        connection: String,
        plugin: String,
        import: String,
        grant: String,
    },
    /// The plugin's signature is missing, broken or not by a trusted
    /// publisher (see [`crate::signing::TrustPolicy`]); checked before
    /// compilation.
    #[error("{source}")]
    Signature {
        path: PathBuf,
        #[source]
        source: crate::signing::SignatureError,
    },
    /// The plugin's capability manifest is unreadable or invalid.
    #[error("{0}")]
    Manifest(String),
    /// Two plugins or connections claim the same name.
    #[error("{0}")]
    Conflict(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// Why an invocation did not produce a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The connector returned an error of its own.
    #[error("{}", describe_guest_error(.0))]
    Guest(ConnectorError),
    /// No connection has this name.
    #[error("no connection named `{0}`")]
    UnknownConnection(String),
    /// The plugin is at its concurrency cap and its queue is full or the
    /// wait timed out.
    #[error(
        "connection `{connection}` is busy: {running} invocations running and the queue is full; retry later or raise limits.max_concurrent / limits.max_concurrent_per_connection / limits.max_queued"
    )]
    Busy { connection: String, running: usize },
    /// The invocation ran past its deadline and was stopped.
    #[error("invocation exceeded its deadline of {deadline_ms} ms and was stopped")]
    Timeout { deadline_ms: u64 },
    /// The guest tried to exceed a resource limit.
    #[error("invocation exceeded a resource limit: {0}")]
    ResourceLimit(String),
    /// The guest trapped (a Rust panic is an `unreachable` trap).
    #[error("connector crashed: {message}")]
    Trap { message: String },
    /// The guest's result was larger than `limits.output_bytes`.
    #[error("connector returned {size} bytes, over the {limit} byte output limit")]
    OutputTooLarge { size: usize, limit: usize },
    /// The host failed; not the guest's fault.
    #[error("host error: {0}")]
    Host(String),
}

impl InvokeError {
    /// A short, stable name for the error kind, used in HTTP bodies and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::Guest(e) => match e {
                ConnectorError::Retryable(_) => "retryable",
                ConnectorError::Permanent(_) => "permanent",
                ConnectorError::RateLimited(_) => "rate_limited",
                ConnectorError::InvalidInput(_) => "invalid_input",
            },
            InvokeError::UnknownConnection(_) => "unknown_connection",
            InvokeError::Busy { .. } => "busy",
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::ResourceLimit(_) => "resource_limit",
            InvokeError::Trap { .. } => "trap",
            InvokeError::OutputTooLarge { .. } => "output_too_large",
            InvokeError::Host(_) => "host",
        }
    }
}

/// The text of a guest error, whatever its kind.
pub fn guest_error_message(err: &ConnectorError) -> &str {
    match err {
        ConnectorError::Retryable(m)
        | ConnectorError::Permanent(m)
        | ConnectorError::InvalidInput(m) => m,
        ConnectorError::RateLimited(r) => &r.message,
    }
}

pub(crate) fn guest_error_message_mut(err: &mut ConnectorError) -> &mut String {
    match err {
        ConnectorError::Retryable(m)
        | ConnectorError::Permanent(m)
        | ConnectorError::InvalidInput(m) => m,
        ConnectorError::RateLimited(r) => &mut r.message,
    }
}

/// `kind: message` for a guest error, without Rust debug syntax.
pub fn describe_guest_error(err: &ConnectorError) -> String {
    let message = guest_error_message(err);
    match err {
        ConnectorError::Retryable(_) => format!("retryable: {message}"),
        ConnectorError::Permanent(_) => format!("permanent: {message}"),
        ConnectorError::InvalidInput(_) => format!("invalid input: {message}"),
        ConnectorError::RateLimited(r) => match r.retry_after_ms {
            Some(ms) => format!("rate limited (retry after {ms} ms): {message}"),
            None => format!("rate limited: {message}"),
        },
    }
}
