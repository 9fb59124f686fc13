//! Pipeline transform steps: a transform connector (a component's
//! `transform`), or a declarative jq filter run by jaq on each message's
//! JSON payload.

use crate::bindings::{ConnectorError, Message};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, RcIter};
use jaq_json::Val;
use serde::Deserialize;
use switchyard_runtime::Runtime;

/// One step: `{ connection = "mapper" }` or `{ jq = ".user |= ascii_downcase" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Transform {
    /// Calls `transform` on this connection with the whole batch.
    Connection { connection: String },
    /// Runs this jq filter on each payload: one output keeps the message,
    /// none drops it, several split it (ids get `#1`, `#2`, …).
    Jq { jq: String },
}

impl Transform {
    /// Checks the step can run: the connection exists, the filter compiles.
    pub fn check(&self, runtime: &Runtime) -> Result<(), String> {
        match self {
            Transform::Connection { connection } => runtime
                .connection(connection)
                .map(|_| ())
                .ok_or_else(|| format!("connection `{connection}` does not exist")),
            Transform::Jq { jq } => compile(jq).map(|_| ()),
        }
    }

    /// Applies the step to a batch.
    pub async fn apply(
        &self,
        runtime: &Runtime,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, ConnectorError> {
        match self {
            Transform::Connection { connection } => runtime
                .transform(connection, messages)
                .await
                .map_err(|e| match e {
                    switchyard_runtime::InvokeError::Guest(e) => e,
                    other => ConnectorError::Retryable(other.to_string()),
                }),
            Transform::Jq { jq } => apply_jq(jq, messages),
        }
    }
}

type Filter = jaq_core::Filter<Native<Val>>;

fn compile(code: &str) -> Result<Filter, String> {
    let program = File { code, path: () };
    let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
    let arena = Arena::default();
    let modules = loader.load(&arena, program).map_err(|errors| {
        format!(
            "jq filter `{code}` does not parse ({} errors)",
            errors.len()
        )
    })?;
    Compiler::default()
        .with_funs(jaq_std::funs().chain(jaq_json::funs()))
        .compile(modules)
        .map_err(|errors| {
            format!(
                "jq filter `{code}` does not compile ({} errors)",
                errors.len()
            )
        })
}

/// Runs `code` on every payload. A payload that is not JSON, or a filter
/// error, is `invalid-input` for the batch: retrying cannot help.
pub fn apply_jq(code: &str, messages: Vec<Message>) -> Result<Vec<Message>, ConnectorError> {
    let filter = compile(code).map_err(ConnectorError::Permanent)?;
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let input: serde_json::Value = serde_json::from_slice(&message.payload).map_err(|e| {
            ConnectorError::InvalidInput(format!("message `{}` is not JSON: {e}", message.id))
        })?;
        let inputs = RcIter::new(core::iter::empty());
        let results: Vec<serde_json::Value> = filter
            .run((Ctx::new([], &inputs), Val::from(input)))
            .map(|r| r.map(serde_json::Value::from))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ConnectorError::InvalidInput(format!("jq on message `{}`: {e}", message.id))
            })?;
        let split = results.len() > 1;
        for (i, value) in results.into_iter().enumerate() {
            let mut next = message.clone();
            if split {
                next.id = format!("{}#{}", message.id, i + 1);
            }
            next.payload = serde_json::to_vec(&value).expect("JSON values serialize");
            out.push(next);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, payload: &str) -> Message {
        Message {
            id: id.into(),
            stream: "s".into(),
            key: None,
            headers: vec![],
            payload: payload.as_bytes().to_vec(),
            timestamp_ms: 0,
        }
    }

    fn payloads(messages: &[Message]) -> Vec<(String, String)> {
        messages
            .iter()
            .map(|m| (m.id.clone(), String::from_utf8(m.payload.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn jq_maps_filters_and_splits() {
        let batch = vec![
            message("a", r#"{"name":"ADA","tags":["x","y"],"keep":true}"#),
            message("b", r#"{"name":"BOB","tags":[],"keep":false}"#),
        ];
        let mapped = apply_jq(
            r#"select(.keep) | {name: (.name | ascii_downcase), n: (.tags | length)}"#,
            batch.clone(),
        )
        .unwrap();
        assert_eq!(
            payloads(&mapped),
            [("a".into(), r#"{"n":2,"name":"ada"}"#.into())]
        );
        let split = apply_jq(".tags[]", batch).unwrap();
        assert_eq!(
            payloads(&split),
            [
                ("a#1".into(), "\"x\"".into()),
                ("a#2".into(), "\"y\"".into())
            ]
        );
    }

    #[test]
    fn bad_filters_and_payloads_are_clear_errors() {
        let err = compile(".[").err().expect("a parse error");
        assert!(err.contains("does not parse"), "{err}");
        let err = apply_jq(".", vec![message("m1", "not json")]).unwrap_err();
        assert!(matches!(&err, ConnectorError::InvalidInput(m) if m.contains("`m1` is not JSON")));
        let err = apply_jq(".a.b", vec![message("m2", "[1]")]).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidInput(m) if m.contains("jq on message `m2`"))
        );
    }

    #[test]
    fn steps_parse_from_config() {
        let steps: Vec<Transform> =
            toml::from_str::<toml::Table>("s = [{ connection = \"m\" }, { jq = \".a\" }]").unwrap()
                ["s"]
                .clone()
                .try_into()
                .unwrap();
        assert_eq!(
            steps,
            [
                Transform::Connection {
                    connection: "m".into()
                },
                Transform::Jq { jq: ".a".into() }
            ]
        );
    }
}
