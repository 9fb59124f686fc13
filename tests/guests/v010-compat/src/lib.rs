//! A connector built against the frozen `switchyard:connector@0.1.0`,
//! without the SDK (which follows the newest version): proves a 0.1.0
//! plugin keeps loading and running on a newer 0.1.x host.

wit_bindgen::generate!({
    path: "../../../wit/published/0.1.0/connector.wit",
    world: "plugin",
});

use exports::switchyard::connector::connector::Guest;
use switchyard::connector::log;
use switchyard::connector::types::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, ReadRequest, Role, WebhookRequest,
    WriteOutcome,
};

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Compat;

fn unsupported<T>(role: &str) -> Result<T, ConnectorError> {
    Err(ConnectorError::Permanent(format!("no {role} role")))
}

impl Guest for Compat {
    fn describe() -> ConnectorInfo {
        ConnectorInfo {
            name: "v010-compat".into(),
            version: "0.1.0".into(),
            description: "built against switchyard:connector@0.1.0".into(),
            roles: vec![Role::Action],
            actions: vec![ActionInfo {
                name: "echo".into(),
                description: "returns the input".into(),
            }],
            streams: Vec::new(),
        }
    }

    fn call_action(action: String, input: Vec<u8>) -> Result<Vec<u8>, ConnectorError> {
        if action != "echo" {
            return Err(ConnectorError::Permanent(format!(
                "unknown action `{action}`"
            )));
        }
        // Uses the one import this guest has, so the component keeps it.
        log::log(log::Level::Debug, "echo", &[]);
        Ok(input)
    }

    fn handle_webhook(_: WebhookRequest) -> Result<Vec<Message>, ConnectorError> {
        unsupported("webhook")
    }

    fn transform(_: Vec<Message>) -> Result<Vec<Message>, ConnectorError> {
        unsupported("transform")
    }

    fn read(_: ReadRequest) -> Result<Page, ConnectorError> {
        unsupported("source")
    }

    fn write(_: Vec<Message>) -> Result<Vec<WriteOutcome>, ConnectorError> {
        unsupported("sink")
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Compat);
