//! Host bindings generated from `wit/` for `switchyard:connector@0.1.0`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::switchyard::connector::connector::Guest as ConnectorExports;
pub use switchyard::connector::types::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, RateLimit, ReadRequest, Role,
    StreamInfo, WebhookRequest, WriteOutcome,
};

/// The WIT package versions this host implements, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0"];

/// The export every connector component must provide, without version.
pub const CONNECTOR_EXPORT: &str = "switchyard:connector/connector";
