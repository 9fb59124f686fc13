//! Assembles a whole Switchyard host from `switchyard.toml`.
//!
//! Each layer owns its config section's types (`[limits]` and `[trust]`
//! the sandbox, `[connections.*.grants]` the broker, `[webhooks]`,
//! `[pipelines]` and `[syncs]` the flows, `[audit]` and `[monitoring]` the
//! operations); [`SwitchyardConfig`] puts them together with the host's
//! own keys, and [`Host::from_config`] builds every layer from it and wires
//! the operations backends in as observers. The server and the CLI only
//! call this.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = switchyard_host::SwitchyardConfig::load(None)?;
//! let host = switchyard_host::Host::from_config(&config).await?;
//! host.start().await;
//! println!("{} connections", host.runtime.connections().len());
//! # Ok(()) }
//! ```

pub mod access;
pub mod config;
mod host;
mod oauth;

pub use access::Access;
pub use config::{ConfigError, SwitchyardConfig};
pub use host::{Host, HostError, queues};
pub use oauth::offline_manager;
