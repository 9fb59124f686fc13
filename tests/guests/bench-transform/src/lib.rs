//! The benchmark suite's connector: the record transform of [`record`],
//! exported as an action for one record (`map`), an action for a batch of
//! JSON lines (`map-lines`) and the `transform` export for a batch of
//! messages. Its `write` export is a null sink: it accepts every message
//! and keeps nothing (a message with header `bench-refuse: KIND` is
//! refused with that error kind instead, for the pipeline tests). The suite runs the same [`record`] code natively and in a
//! JSON-lines subprocess, so the three are compared like for like.

pub mod record;

use switchyard_sdk::{Connector, ConnectorInfo, Error, Message, Role, WriteOutcome};

/// The connector; public so the benchmark can reach it natively.
#[derive(Debug)]
pub struct BenchTransform;

impl Connector for BenchTransform {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("bench-transform", env!("CARGO_PKG_VERSION"))
            .description("Maps contact records (the benchmark suite's transform)")
            .action("map", "Maps one JSON record")
            .action("map-lines", "Maps newline-separated JSON records")
            .role(Role::Transform)
            .role(Role::Sink)
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "map" => record::transform_record(input).map_err(Error::invalid_input),
            "map-lines" => record::transform_lines(input).map_err(Error::invalid_input),
            other => Err(Error::unknown_action(other)),
        }
    }

    fn transform(messages: Vec<Message>) -> Result<Vec<Message>, Error> {
        messages
            .into_iter()
            .map(|mut message| {
                message.payload = record::transform_record(&message.payload).map_err(|why| {
                    Error::invalid_input(format!("message {}: {why}", message.id))
                })?;
                Ok(message)
            })
            .collect()
    }

    fn write(messages: Vec<Message>) -> Result<Vec<WriteOutcome>, Error> {
        Ok(messages
            .into_iter()
            .map(|message| {
                let refuse = message
                    .headers
                    .iter()
                    .find(|(k, _)| k == "bench-refuse")
                    .map(|(_, kind)| kind.as_str());
                let outcome = match refuse {
                    None => Ok(()),
                    Some("retryable") => Err(Error::retryable("refused on request")),
                    Some(_) => Err(Error::permanent("refused on request")),
                };
                WriteOutcome {
                    id: message.id,
                    outcome,
                }
            })
            .collect())
    }
}

switchyard_sdk::export!(BenchTransform);
