//! Maps JSON objects between two systems' field names.
//!
//! Settings (per connection):
//! - `rename`: `from=to` pairs separated by commas, e.g. `first_name=firstName`;
//!   a dotted `from` reads a nested field (`address.city=city`).
//! - `drop`: comma-separated fields to remove (e.g. `ssn,internal_id`).
//! - `defaults`: `field=value` pairs set when the field is missing.

pub mod mapping;

use mapping::Mapping;
use switchyard_sdk::{Connector, ConnectorInfo, Error, Message, Role, config, json};

/// The connector; public so the benchmark can reach it natively.
#[derive(Debug)]
pub struct FieldMapper;

fn current_mapping() -> Result<Mapping, Error> {
    Mapping::parse(
        &config::get_or("rename", ""),
        &config::get_or("drop", ""),
        &config::get_or("defaults", ""),
    )
    .map_err(Error::permanent)
}

impl Connector for FieldMapper {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("field-mapper", env!("CARGO_PKG_VERSION"))
            .description("Renames, drops and defaults fields of JSON objects")
            .action("map", "Maps one JSON object")
            .role(Role::Transform)
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "map" => {
                let value: json::Value = json::from_slice(input)?;
                json::to_vec(&current_mapping()?.apply(value)?)
            }
            other => Err(Error::unknown_action(other)),
        }
    }

    fn transform(messages: Vec<Message>) -> Result<Vec<Message>, Error> {
        let mapping = current_mapping()?;
        messages
            .into_iter()
            .map(|mut message| {
                message.payload = mapping.apply_bytes(&message.payload).map_err(|e| match e {
                    Error::InvalidInput(why) => {
                        Error::invalid_input(format!("message {}: {why}", message.id))
                    }
                    other => other,
                })?;
                Ok(message)
            })
            .collect()
    }
}

switchyard_sdk::export!(FieldMapper);
