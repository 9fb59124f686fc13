//! The Switchyard runtime: loads third-party connectors as sandboxed
//! WebAssembly components and calls them, each call in a fresh instance.
//!
//! A connector targets the `plugin` world of `switchyard:connector` (see
//! `wit/`). The runtime validates a component before running any of its
//! code, compiles it once (with an optional on-disk cache), pre-links it,
//! and then instantiates it per invocation under [`Limits`]: a wall-clock
//! deadline, memory, stack, table and instance caps, an output cap, and a
//! per-plugin concurrency gate with a bounded queue. WASI p2 is linked with
//! nothing granted, so guests from any toolchain run but reach nothing.
//!
//! What a connector may reach is brokered per connection, default deny, by
//! the [`broker`] crate: outbound HTTP through `wasi:http` and its egress
//! policy, secrets by placeholder, key-value state and rate limits, each the
//! intersection of the plugin's manifest and the operator's grants.
//!
//! This crate is the sandbox and nothing above it: it knows no queue,
//! webhook, metrics backend or HTTP server. What it does is reported to
//! [`observe::Observer`]s, which the layers above implement.
//!
//! ```
//! use std::collections::BTreeMap;
//! use switchyard_runtime::Runtime;
//!
//! # fn echo_component() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
//! #     // The example `echo` connector, built from source (plugins/echo).
//! #     let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! #     let request = switchyard_build::BuildRequest {
//! #         manifest_path: root.join("Cargo.toml"),
//! #         packages: vec!["echo".into()],
//! #         target_dir: Some(root.join("target/guests")),
//! #         verbose: false,
//! #     };
//! #     let toolchain = switchyard_build::Toolchain::detect()?;
//! #     Ok(switchyard_build::build(&request, &toolchain)?.remove(0).path)
//! # }
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let echo_wasm = echo_component()?;
//! let runtime = Runtime::builder().build()?;
//! runtime.load_plugin("echo", &echo_wasm).await?;
//! runtime.add_connection("echo", "echo", BTreeMap::new())?;
//! let out = runtime.call_action("echo", "greet", br#"{"name":"Ada"}"#).await?;
//! assert_eq!(out, br#"{"message":"Hello, Ada!"}"#);
//! # Ok(()) }
//! ```
//!
//! The `switchyard-host` crate reads `switchyard.toml` and assembles a
//! whole host (this runtime, the flows and the operations backends) from it.

pub mod admission;
pub mod bindings;
pub mod cache;
pub mod engine;
pub mod error;
mod invoke;
pub mod limits;
pub mod observe;
mod outcome;
pub mod plugin;
pub mod registry;
mod runtime;
pub mod signing;
pub mod state;
pub mod watch;

/// The broker this sandbox links every plugin against.
pub use switchyard_broker as broker;

pub use bindings::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, RateLimit, ReadRequest, Role,
    SUPPORTED_VERSIONS, StreamInfo, WebhookRequest, WriteOutcome,
};
pub use error::{InvokeError, LoadError};
pub use invoke::Session;
pub use limits::Limits;
pub use plugin::{ComponentSummary, inspect_component};
pub use registry::{ConnectionSpec, DeployMode};
pub use runtime::{Connection, Deployed, LoadFailure, Plugin, Runtime, RuntimeBuilder};
pub use switchyard_broker::egress::{Dialer, Network, Resolver, StaticResolver};
