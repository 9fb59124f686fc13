//! The smallest useful connector: two actions, one setting.

use switchyard_sdk::{Connector, ConnectorInfo, Error, config, json};

struct Echo;

#[derive(serde::Deserialize)]
struct GreetInput {
    name: String,
}

impl Connector for Echo {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("echo", env!("CARGO_PKG_VERSION"))
            .description("Echoes JSON back; greets with the connection's `greeting`")
            .action("echo", "Returns the input unchanged (must be JSON)")
            .action("greet", "Returns {\"message\": \"<greeting>, <name>!\"}")
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "echo" => {
                let value: json::Value = json::from_slice(input)?;
                json::to_vec(&value)
            }
            "greet" => {
                let input: GreetInput = json::from_slice(input)?;
                let greeting = config::get_or("greeting", "Hello");
                json::to_vec(&json::json!({ "message": format!("{greeting}, {}!", input.name) }))
            }
            other => Err(Error::unknown_action(other)),
        }
    }
}

switchyard_sdk::export!(Echo);
