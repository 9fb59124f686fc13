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
//! What a connector may reach is brokered per connection, default deny:
//! outbound HTTP through `wasi:http` and [`egress`], secrets by placeholder
//! ([`secrets`]), key-value state ([`kv`]) and rate limits ([`rate`]), each
//! the intersection of the plugin's manifest and the operator's grants
//! ([`capabilities`]).
//!
//! ```no_run
//! use switchyard_runtime::Runtime;
//! use std::collections::BTreeMap;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder().cache_dir(".switchyard/cache").build()?;
//! runtime.load_plugin("echo", "echo.wasm".as_ref()).await?;
//! runtime.add_connection("echo", "echo", BTreeMap::new())?;
//! let out = runtime.call_action("echo", "echo", br#"{"hello":"world"}"#).await?;
//! println!("{}", String::from_utf8_lossy(&out));
//! # Ok(()) }
//! ```
//!
//! Embedders that read `switchyard.toml` use [`SwitchyardConfig::load`] and
//! [`Runtime::from_config`].

pub mod audit;
pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod egress;
pub mod engine;
pub mod error;
pub mod host;
mod invoke;
pub mod kv;
pub mod limits;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod pipelines;
pub mod plugin;
pub mod policy;
pub mod queue;
pub mod rate;
pub mod registry;
mod runtime;
pub mod secrets;
pub mod signing;
pub mod state;
pub mod sync;
pub mod transform;
pub mod watch;
pub mod webhooks;

pub use bindings::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, RateLimit, ReadRequest, Role,
    SUPPORTED_VERSIONS, StreamInfo, WebhookRequest, WriteOutcome,
};
pub use config::SwitchyardConfig;
pub use egress::{Dialer, Network, Resolver, StaticResolver};
pub use error::{InvokeError, LoadError};
pub use invoke::Session;
pub use limits::Limits;
pub use plugin::{ComponentSummary, inspect_component};
pub use registry::{ConnectionSpec, DeployMode};
pub use runtime::{Connection, Deployed, LoadFailure, Plugin, Runtime, RuntimeBuilder};
