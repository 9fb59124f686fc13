// One connector built at two versions (greeter-v1, greeter-v2 share this
// file): `version` answers with the version that ran the call.

use switchyard_sdk::{Connector, ConnectorInfo, Error, json};

struct Greeter;

impl Connector for Greeter {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("greeter", env!("CARGO_PKG_VERSION"))
            .description("Answers with its own version")
            .action("version", "Returns {\"version\": \"<crate version>\"}")
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "version" => json::to_vec(&json::json!({ "version": env!("CARGO_PKG_VERSION") })),
            other => Err(Error::unknown_action(other)),
        }
    }
}

switchyard_sdk::export!(Greeter);
