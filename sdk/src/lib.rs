//! Write Switchyard connectors in Rust.
//!
//! A connector is a type implementing [`Connector`] plus one [`export!`]
//! line. Every method but [`Connector::describe`] has a default that
//! answers "not supported", so a connector implements only the roles it
//! lists. Build it with `switchyard plugin build <crate dir>`.
//!
//! ```ignore
//! use switchyard_sdk::{Connector, ConnectorInfo, Error, json};
//!
//! struct Greeter;
//!
//! impl Connector for Greeter {
//!     fn describe() -> ConnectorInfo {
//!         ConnectorInfo::new("greeter", env!("CARGO_PKG_VERSION"))
//!             .action("greet", "Says hello to `name`")
//!     }
//!
//!     fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
//!         #[derive(serde::Deserialize)]
//!         struct Input { name: String }
//!         match action {
//!             "greet" => {
//!                 let input: Input = json::from_slice(input)?;
//!                 json::to_vec(&serde_json::json!({ "greeting": format!("hello, {}", input.name) }))
//!             }
//!             other => Err(Error::unknown_action(other)),
//!         }
//!     }
//! }
//!
//! switchyard_sdk::export!(Greeter);
//! ```
//!
//! The crate must be a `cdylib` (`[lib] crate-type = ["cdylib"]`).
//!
//! Beyond [`config`] and [`log`], the host brokers [`http`] (outbound
//! requests), [`secrets`], [`state`] and [`rate_limit`]. Each is denied
//! unless the plugin's manifest requests it and the operator grants it to
//! the connection; a denial is an error value, never a trap.

mod types;

#[cfg(all(
    feature = "allocator",
    target_arch = "wasm32",
    target_os = "unknown",
    not(target_feature = "atomics")
))]
mod alloc;

pub mod config;
pub mod http;
pub mod json;
pub mod log;
pub mod rate_limit;
pub mod secrets;
pub mod state;

pub use types::{
    ActionInfo, ConnectorInfo, Error, Headers, Message, Page, ReadRequest, Role, StreamInfo,
    WebhookRequest, WriteOutcome,
};

/// Raw generated bindings. Not part of the stable API; use the re-exports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::switchyard_sdk::bindings",
        // The world imports wasi:http, whose types come from other wasi
        // packages (io, clocks); bind those too rather than map them.
        generate_all,
        // wasi:cli's worlds name this unstable interface; this parser
        // rejects the name unless the feature is on. Nothing here uses it.
        features: ["clocks-timezone"],
    });
}

/// The WIT package version this SDK builds connectors against.
pub const WIT_VERSION: &str = "0.1.1";

/// A connector. Implement [`describe`](Connector::describe) and the methods
/// of the roles it lists; the rest default to [`Error::unsupported`].
pub trait Connector {
    /// Name, version, roles, actions and streams. Must not fail.
    fn describe() -> ConnectorInfo;

    /// A synchronous action: `input` in, response out (JSON by convention).
    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let _ = input;
        Err(Error::unknown_action(action))
    }

    /// Turns one inbound webhook into messages.
    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Message>, Error> {
        let _ = request;
        Err(Error::unsupported("webhook"))
    }

    /// Transforms a batch of messages.
    fn transform(messages: Vec<Message>) -> Result<Vec<Message>, Error> {
        let _ = messages;
        Err(Error::unsupported("transform"))
    }

    /// Reads the next page of a stream.
    fn read(request: ReadRequest) -> Result<Page, Error> {
        let _ = request;
        Err(Error::unsupported("source"))
    }

    /// Writes a batch; one outcome per message.
    fn write(messages: Vec<Message>) -> Result<Vec<WriteOutcome>, Error> {
        let _ = messages;
        Err(Error::unsupported("sink"))
    }
}

/// Adapts a [`Connector`] to the generated export trait. Used by [`export!`].
#[doc(hidden)]
pub struct Export<T>(core::marker::PhantomData<T>);

impl<T> core::fmt::Debug for Export<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Export")
    }
}

impl<T: Connector> bindings::exports::switchyard::connector::connector::Guest for Export<T> {
    fn describe() -> ConnectorInfo {
        report_panics();
        T::describe()
    }
    fn call_action(action: String, input: Vec<u8>) -> Result<Vec<u8>, Error> {
        report_panics();
        T::call_action(&action, &input)
    }
    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Message>, Error> {
        report_panics();
        T::handle_webhook(request)
    }
    fn transform(messages: Vec<Message>) -> Result<Vec<Message>, Error> {
        report_panics();
        T::transform(messages)
    }
    fn read(request: ReadRequest) -> Result<Page, Error> {
        report_panics();
        T::read(request)
    }
    fn write(messages: Vec<Message>) -> Result<Vec<WriteOutcome>, Error> {
        report_panics();
        T::write(messages)
    }
}

/// Sends panic messages to the host log (field `panic=true`), which the
/// host quotes in the error it reports; without this a wasm panic is a
/// bare `unreachable` trap.
fn report_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("(non-string payload)");
            let text = match info.location() {
                Some(at) => format!("panicked at {at}: {message}"),
                None => format!("panicked: {message}"),
            };
            log::event(log::Level::Error, &text, &[("panic", "true")]);
        }));
    });
}

/// Exports a [`Connector`] implementation as the component's entry points.
/// Use it once per crate, at the top level.
///
/// Exports exist only when compiling for wasm32. On other targets the macro
/// emits a plain `__switchyard_describe` function instead, so a connector
/// crate builds and unit-tests natively.
#[macro_export]
macro_rules! export {
    ($connector:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __SwitchyardExport = $crate::Export<$connector>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin!(__SwitchyardExport with_types_in $crate::bindings);

        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub fn __switchyard_describe() -> $crate::ConnectorInfo {
            <$connector as $crate::Connector>::describe()
        }
    };
}
