//! Host bindings generated from `wit/` for `switchyard:connector@0.1.1`.
//!
//! One set of bindings serves every 0.1.x plugin: wasmtime matches imports
//! and exports semver-compatibly, so a component built against 0.1.0 finds
//! its `log`, `config` and `connector` at 0.1.1 (see wit/README.md).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    // The brokered interfaces and WASI come from the crates that serve
    // them, so the sandbox and the broker share one set of types.
    with: {
        "switchyard:connector/types": switchyard_broker::bindings::switchyard::connector::types,
        "switchyard:connector/log": switchyard_broker::bindings::switchyard::connector::log,
        "switchyard:connector/config": switchyard_broker::bindings::switchyard::connector::config,
        "switchyard:connector/secrets": switchyard_broker::bindings::switchyard::connector::secrets,
        "switchyard:connector/state": switchyard_broker::bindings::switchyard::connector::state,
        "switchyard:connector/rate-limit": switchyard_broker::bindings::switchyard::connector::rate_limit,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use exports::switchyard::connector::connector::Guest as ConnectorExports;
pub use switchyard_broker::bindings::switchyard::connector::types::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, RateLimit, ReadRequest, Role,
    StreamInfo, WebhookRequest, WriteOutcome,
};

/// The WIT package versions this host implements, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.1", "0.1.0"];

/// The export every connector component must provide, without version.
pub const CONNECTOR_EXPORT: &str = "switchyard:connector/connector";
