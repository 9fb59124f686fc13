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
                .has_connection(connection)
                .then_some(())
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
            Transform::Jq { jq } => {
                let deadline = std::time::Duration::from_millis(runtime.limits().deadline_ms);
                apply_jq_bounded(jq, messages, deadline).await
            }
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

/// Most outputs a jq filter may give for one record.
pub const JQ_MAX_OUTPUTS_PER_RECORD: usize = 10_000;
/// Most bytes of output a jq filter may give for one batch.
pub const JQ_MAX_OUTPUT_BYTES: usize = 64 << 20;
/// Most jq filters past their deadline whose threads may still run.
pub const JQ_MAX_OVERRUNNING: usize = 4;

/// jq filters still running past their deadline.
static OVERRUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`apply_jq`] on a thread of its own, so a slow filter never holds an
/// async worker, bounded by `deadline` (the invocation deadline,
/// `limits.deadline_ms`): past it the batch fails `invalid-input` (a
/// single record then goes to the dead letters) and the thread is left to
/// finish. jaq cannot be interrupted mid-filter, so a filter that never
/// ends keeps its thread: at most [`JQ_MAX_OVERRUNNING`] may, beyond
/// which jq steps fail `retryable` until one ends.
pub async fn apply_jq_bounded(
    code: &str,
    messages: Vec<Message>,
    deadline: std::time::Duration,
) -> Result<Vec<Message>, ConnectorError> {
    use std::sync::atomic::Ordering;
    if OVERRUNNING.load(Ordering::Relaxed) >= JQ_MAX_OVERRUNNING {
        return Err(ConnectorError::Retryable(format!(
            "{JQ_MAX_OVERRUNNING} jq filters are still running past their deadline; retrying later"
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let code = code.to_owned();
    // 0 running, 1 finished, 2 overran: whoever changes it second settles
    // the count, so a filter that ends as its deadline fires is counted
    // neither forever nor below zero.
    let state = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let finished = state.clone();
    // A thread of its own, not tokio's blocking pool: a runtime waits for
    // its blocking tasks when it shuts down, so a filter that never ends
    // would hold the host's exit (and a test's runtime) forever.
    let spawned = std::thread::Builder::new()
        .name("switchyard-jq".into())
        .spawn(move || {
            let _ = tx.send(apply_jq(&code, messages));
            if finished.swap(1, Ordering::AcqRel) == 2 {
                OVERRUNNING.fetch_sub(1, Ordering::AcqRel);
            }
        });
    if let Err(e) = spawned {
        return Err(ConnectorError::Retryable(format!("jq: no thread: {e}")));
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ConnectorError::Retryable(
            "jq: the filter's thread died".into(),
        )),
        Err(_) => {
            // Counted before it is marked, so the thread's decrement
            // always follows this increment.
            OVERRUNNING.fetch_add(1, Ordering::AcqRel);
            if state
                .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                OVERRUNNING.fetch_sub(1, Ordering::AcqRel);
            }
            Err(ConnectorError::InvalidInput(format!(
                "jq filter ran past {} ms (limits.deadline_ms)",
                deadline.as_millis()
            )))
        }
    }
}

/// Runs `code` on every payload. A payload that is not JSON, a filter
/// error, or output past [`JQ_MAX_OUTPUTS_PER_RECORD`] or
/// [`JQ_MAX_OUTPUT_BYTES`] is `invalid-input` for the batch: retrying
/// cannot help.
pub fn apply_jq(code: &str, messages: Vec<Message>) -> Result<Vec<Message>, ConnectorError> {
    let filter = compile(code).map_err(ConnectorError::Permanent)?;
    let mut out = Vec::with_capacity(messages.len());
    let mut bytes = 0;
    for message in messages {
        let input: serde_json::Value = serde_json::from_slice(&message.payload).map_err(|e| {
            ConnectorError::InvalidInput(format!("message `{}` is not JSON: {e}", message.id))
        })?;
        let inputs = RcIter::new(core::iter::empty());
        let mut results: Vec<serde_json::Value> = Vec::new();
        for result in filter.run((Ctx::new([], &inputs), Val::from(input))) {
            let value = result.map_err(|e| {
                ConnectorError::InvalidInput(format!("jq on message `{}`: {e}", message.id))
            })?;
            if results.len() == JQ_MAX_OUTPUTS_PER_RECORD {
                return Err(ConnectorError::InvalidInput(format!(
                    "jq on message `{}`: more than {JQ_MAX_OUTPUTS_PER_RECORD} outputs",
                    message.id
                )));
            }
            results.push(serde_json::Value::from(value));
        }
        let split = results.len() > 1;
        for (i, value) in results.into_iter().enumerate() {
            let mut next = message.clone();
            if split {
                next.id = format!("{}#{}", message.id, i + 1);
            }
            next.payload = serde_json::to_vec(&value).expect("JSON values serialize");
            bytes += next.payload.len();
            if bytes > JQ_MAX_OUTPUT_BYTES {
                return Err(ConnectorError::InvalidInput(format!(
                    "jq on message `{}`: the batch's output passed {JQ_MAX_OUTPUT_BYTES} bytes",
                    message.id
                )));
            }
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
    fn runaway_output_is_refused() {
        let err = apply_jq("range(20000)", vec![message("m", "{}")]).unwrap_err();
        assert!(
            format!("{err:?}").contains("more than 10000 outputs"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_filter_past_its_deadline_fails_without_holding_the_caller() {
        let started = std::time::Instant::now();
        let err = apply_jq_bounded(
            "last(range(1e12))",
            vec![message("m", "{}")],
            std::time::Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(format!("{err:?}").contains("ran past 200 ms"), "{err:?}");
        let ok = apply_jq_bounded(
            ".",
            vec![message("m", "{}")],
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 1);
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
