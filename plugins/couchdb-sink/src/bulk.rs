//! The `_bulk_docs` request and how its answer becomes write outcomes.
//! Pure, so it is tested natively.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use switchyard_sdk::http::encode_component;
use switchyard_sdk::{Error, Message, WriteOutcome};

/// The database's URL: `base_url` + `/` + the name, percent-encoded so
/// that a `/` in it stays within one path segment.
pub fn database_url(base_url: &str, db: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        encode_component(db)
    )
}

/// Where a batch is posted.
pub fn bulk_docs_url(base_url: &str, db: &str) -> String {
    format!("{}/_bulk_docs", database_url(base_url, db))
}

/// How a document is written, chosen by whether its payload has a `_rev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The payload has a `_rev` (a replicated revision): `new_edits: false`
    /// stores it under that revision, so writing it again changes nothing.
    Replicate,
    /// The payload has no `_rev` (an event): a normal write creates the
    /// document, and a `conflict` means it exists already, which counts as
    /// written: the first write wins.
    Create,
}

/// One message's document, ready to send.
#[derive(Debug)]
pub struct Doc {
    message_id: String,
    id: String,
    /// `Some` in [`Mode::Replicate`], `None` in [`Mode::Create`].
    rev: Option<String>,
    /// The payload's own bytes (plus `_id` when it had none), so numbers
    /// beyond f64 survive.
    body: Box<RawValue>,
}

/// A batch split by [`Mode`], and messages already refused.
#[derive(Debug)]
pub struct Batch {
    /// Payloads with a `_rev`, in message order.
    pub replicated: Vec<Doc>,
    /// Payloads without a `_rev`, in message order.
    pub created: Vec<Doc>,
    pub rejected: Vec<WriteOutcome>,
}

/// Each payload must be a JSON object. With a `_rev` it needs a string
/// `_id` and a well-formed revision; without one, a missing `_id` is taken
/// from the message id. The others get an `invalid-input` outcome. Streams
/// are not looked at: a sink writes whatever it is given into its one
/// database.
pub fn prepare(messages: Vec<Message>) -> Batch {
    let mut batch = Batch {
        replicated: Vec::new(),
        created: Vec::new(),
        rejected: Vec::new(),
    };
    for message in messages {
        match document(&message.id, &message.payload) {
            Ok((id, rev, body)) => {
                let docs = match rev {
                    Some(_) => &mut batch.replicated,
                    None => &mut batch.created,
                };
                docs.push(Doc {
                    message_id: message.id,
                    id,
                    rev,
                    body,
                });
            }
            Err(problem) => batch.rejected.push(WriteOutcome {
                id: message.id,
                outcome: Err(Error::invalid_input(problem)),
            }),
        }
    }
    batch
}

type Prepared = (String, Option<String>, Box<RawValue>);

fn document(message_id: &str, payload: &[u8]) -> Result<Prepared, String> {
    let body: Box<RawValue> =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let fields: Map<String, Value> = serde_json::from_str(body.get())
        .map_err(|_| "payload is not a JSON object (a CouchDB document)".to_owned())?;
    let text = |key: &str| -> Result<Option<String>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
            Some(_) => Err(format!("payload's `{key}` is not a non-empty string")),
        }
    };
    let id = text("_id")?;
    let Some(rev) = text("_rev")? else {
        // An event: created under its `_id`, or the message id.
        // Without the revision it deletes, a deletion of an existing
        // document would be a `conflict`, which here counts as written.
        if fields.get("_deleted") == Some(&Value::Bool(true)) {
            return Err(format!(
                "document `{}` is a deletion without `_rev`; only a revision can be deleted",
                id.as_deref().unwrap_or(message_id)
            ));
        }
        return match id {
            Some(id) => Ok((id, None, body)),
            None if message_id.is_empty() => {
                Err("payload has no `_id` and the message no id to use instead".to_owned())
            }
            None => Ok((message_id.to_owned(), None, with_id(&body, message_id))),
        };
    };
    let id = id.ok_or("payload has a `_rev` but no `_id`")?;
    // One malformed revision would fail the whole request (400).
    if !is_revision(&rev) {
        return Err(format!(
            "document `{id}` has `_rev` `{rev}`, not a revision (`<generation>-<hash>`)"
        ));
    }
    Ok((id, Some(rev), body))
}

/// `body` (a JSON object without `_id`) with `"_id": id` put first; the
/// rest keeps its bytes.
fn with_id(body: &RawValue, id: &str) -> Box<RawValue> {
    let rest = body.get().trim_start();
    let rest = rest.strip_prefix('{').unwrap_or(rest).trim_start();
    let separator = if rest.starts_with('}') { "" } else { "," };
    let key = Value::String(id.to_owned());
    RawValue::from_string(format!("{{\"_id\":{key}{separator}{rest}"))
        .expect("an object with one more member is JSON")
}

/// `<generation>-<hash>`, e.g. `2-7051cbe5c8faecd085a3fa619e6e6337`.
fn is_revision(rev: &str) -> bool {
    rev.split_once('-').is_some_and(|(generation, hash)| {
        !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit()) && !hash.is_empty()
    })
}

/// A `_bulk_docs` body.
#[derive(Debug, Serialize)]
pub struct BulkDocs<'a> {
    docs: Vec<&'a RawValue>,
    new_edits: bool,
}

/// The request body for `docs`, all of one `mode`: `new_edits: false` for
/// [`Mode::Replicate`], `true` for [`Mode::Create`].
pub fn request_body(docs: &[Doc], mode: Mode) -> BulkDocs<'_> {
    BulkDocs {
        docs: docs.iter().map(|doc| &*doc.body).collect(),
        new_edits: mode == Mode::Create,
    }
}

/// One entry of the `_bulk_docs` answer.
#[derive(Debug, Deserialize)]
pub struct DocResult {
    id: Option<String>,
    rev: Option<String>,
    error: Option<String>,
    reason: Option<String>,
}

/// One outcome per document of a `mode` request.
pub fn outcomes(mode: Mode, docs: &[Doc], results: &[DocResult]) -> Vec<WriteOutcome> {
    match mode {
        Mode::Replicate => replicated_outcomes(docs, results),
        Mode::Create => created_outcomes(docs, results),
    }
}

/// With `new_edits: false` CouchDB lists only failures (often nothing at
/// all), so a document without an error entry was written. An entry
/// matches by `_id`, and by `_rev` when it names one.
fn replicated_outcomes(docs: &[Doc], results: &[DocResult]) -> Vec<WriteOutcome> {
    docs.iter()
        .map(|doc| {
            let rev = doc.rev.as_deref().unwrap_or_default();
            let failure = results.iter().find(|result| {
                result.error.is_some()
                    && result.id.as_deref() == Some(doc.id.as_str())
                    && result.rev.as_deref().is_none_or(|r| r == rev)
            });
            let outcome = match failure {
                None => Ok(()),
                Some(result) => Err(refused(&format!("`{}` at {rev}", doc.id), result)),
            };
            WriteOutcome {
                id: doc.message_id.clone(),
                outcome,
            }
        })
        .collect()
}

/// A normal `_bulk_docs` answers one entry per document, in order. An
/// entry is `ok`, or a `conflict` (the document exists: an earlier write
/// of the same event, or another writer, got there first; either way it
/// counts as written), or another error, which is permanent. A document
/// the answer does not account for is retryable: writing it again is safe.
fn created_outcomes(docs: &[Doc], results: &[DocResult]) -> Vec<WriteOutcome> {
    let names = |doc: &Doc, result: &DocResult| result.id.as_deref().is_none_or(|id| id == doc.id);
    docs.iter()
        .enumerate()
        .map(|(index, doc)| {
            // By position; by `_id` should a server reorder its answer.
            let entry = results
                .get(index)
                .filter(|result| names(doc, result))
                .or_else(|| results.iter().find(|r| r.id.as_deref() == Some(&doc.id)));
            let outcome = match entry {
                None => Err(Error::retryable(format!(
                    "CouchDB's answer has no entry for `{}`",
                    doc.id
                ))),
                Some(result) => match result.error.as_deref() {
                    None | Some("conflict") => Ok(()),
                    Some(_) => Err(refused(&format!("`{}`", doc.id), result)),
                },
            };
            WriteOutcome {
                id: doc.message_id.clone(),
                outcome,
            }
        })
        .collect()
}

/// `error` as every document's outcome: for a request that failed as a
/// whole after another one of the batch was written.
pub fn failed(docs: &[Doc], error: &Error) -> Vec<WriteOutcome> {
    docs.iter()
        .map(|doc| WriteOutcome {
            id: doc.message_id.clone(),
            outcome: Err(error.clone()),
        })
        .collect()
}

fn refused(what: &str, result: &DocResult) -> Error {
    Error::permanent(format!(
        "CouchDB refused {what}: {}: {}",
        result.error.as_deref().unwrap_or_default(),
        result.reason.as_deref().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, payload: &str) -> Message {
        Message::new(id, "orders", payload.as_bytes().to_vec())
    }

    fn problem(outcome: &WriteOutcome) -> &Error {
        outcome.outcome.as_ref().unwrap_err()
    }

    fn body(docs: &[Doc], mode: Mode) -> String {
        serde_json::to_string(&request_body(docs, mode)).unwrap()
    }

    fn answer(json: &str) -> Vec<DocResult> {
        serde_json::from_str(json).unwrap()
    }

    fn ids(outcomes: &[WriteOutcome]) -> Vec<&str> {
        outcomes.iter().map(|o| o.id.as_str()).collect()
    }

    #[test]
    fn builds_urls() {
        assert_eq!(
            bulk_docs_url("http://127.0.0.1:5984/", "orders"),
            "http://127.0.0.1:5984/orders/_bulk_docs"
        );
        assert_eq!(database_url("http://h", "a/b+c"), "http://h/a%2Fb%2Bc");
    }

    #[test]
    fn sends_revisions_verbatim_without_new_edits() {
        let batch = prepare(vec![
            message(
                "m1",
                r#"{"_id":"a","_rev":"1-x","n":123456789012345678901234567890}"#,
            ),
            message("m2", r#"{"_id":"b","_rev":"2-y","_deleted":true}"#),
        ]);
        assert!(batch.rejected.is_empty() && batch.created.is_empty());
        assert_eq!(
            body(&batch.replicated, Mode::Replicate),
            r#"{"docs":[{"_id":"a","_rev":"1-x","n":123456789012345678901234567890},{"_id":"b","_rev":"2-y","_deleted":true}],"new_edits":false}"#
        );
    }

    #[test]
    fn splits_a_batch_by_rev() {
        let batch = prepare(vec![
            message("m1", r#"{"_id":"a","_rev":"1-x"}"#),
            message("evt-1", r#"{"_id":"order-7","kind":"paid"}"#),
            message(
                "m2",
                r#"{"_id":"b","_rev":"3-y","_revisions":{"start":3,"ids":["y","q","p"]}}"#,
            ),
            message(
                "evt-2",
                r#" { "kind" : "paid", "n" : 123456789012345678901234567890 } "#,
            ),
            message("evt-3", "{}"),
            message("evt-4", r#"{"_id":"c","_deleted":false}"#),
        ]);
        assert!(batch.rejected.is_empty());
        let replicated: Vec<&str> = batch.replicated.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(replicated, ["a", "b"]);
        let created: Vec<(&str, &str)> = batch
            .created
            .iter()
            .map(|d| (d.message_id.as_str(), d.id.as_str()))
            .collect();
        assert_eq!(
            created,
            [
                ("evt-1", "order-7"),
                ("evt-2", "evt-2"),
                ("evt-3", "evt-3"),
                ("evt-4", "c")
            ]
        );
        // A payload's own `_id` wins; a missing one is the message id, put
        // first, with the rest of the payload's bytes kept.
        assert_eq!(
            body(&batch.created, Mode::Create),
            r#"{"docs":[{"_id":"order-7","kind":"paid"},{"_id":"evt-2","kind" : "paid", "n" : 123456789012345678901234567890 },{"_id":"evt-3"},{"_id":"c","_deleted":false}],"new_edits":true}"#
        );
    }

    #[test]
    fn quotes_a_message_id_taken_as_id() {
        let batch = prepare(vec![message(r#"a"b\c"#, r#"{"x":1}"#)]);
        let sent: Value = serde_json::from_str(batch.created[0].body.get()).unwrap();
        assert_eq!(sent, serde_json::json!({"_id": "a\"b\\c", "x": 1}));
    }

    #[test]
    fn refuses_payloads_it_cannot_write() {
        let batch = prepare(vec![
            message("bad-json", "{"),
            message("array", "[1]"),
            message("rev-without-id", r#"{"_rev":"1-x"}"#),
            message("numeric-id", r#"{"_id":7}"#),
            message("empty-id", r#"{"_id":""}"#),
            message("numeric-rev", r#"{"_id":"a","_rev":1}"#),
            message("empty-rev", r#"{"_id":"a","_rev":""}"#),
            message("garbage-rev", r#"{"_id":"a","_rev":"garbage"}"#),
            message("no-hash", r#"{"_id":"a","_rev":"3-"}"#),
            message("deletion-without-rev", r#"{"_id":"a","_deleted":true}"#),
            message("", r#"{"kind":"paid"}"#),
            message("good", r#"{"_id":"a","_rev":"1-x"}"#),
            message("event", r#"{"_id":"a"}"#),
        ]);
        assert_eq!((batch.replicated.len(), batch.created.len()), (1, 1));
        assert_eq!(
            ids(&batch.rejected),
            [
                "bad-json",
                "array",
                "rev-without-id",
                "numeric-id",
                "empty-id",
                "numeric-rev",
                "empty-rev",
                "garbage-rev",
                "no-hash",
                "deletion-without-rev",
                "",
            ]
        );
        for outcome in &batch.rejected {
            assert!(matches!(problem(outcome), Error::InvalidInput(_)));
        }
        assert!(problem(&batch.rejected[2]).message().contains("no `_id`"));
        assert!(problem(&batch.rejected[6]).message().contains("`_rev`"));
        assert!(problem(&batch.rejected[9]).message().contains("deletion"));
    }

    #[test]
    fn maps_replication_error_entries_to_their_messages() {
        let batch = prepare(vec![
            message("m1", r#"{"_id":"a","_rev":"1-x"}"#),
            message("m2", r#"{"_id":"b","_rev":"1-y"}"#),
            message("m3", r#"{"_id":"b","_rev":"2-z"}"#),
        ]);
        let results = answer(
            r#"[{"id":"b","rev":"2-z","error":"forbidden","reason":"no drafts"},
                {"id":"a","rev":"1-x","ok":true}]"#,
        );
        let outcomes = outcomes(Mode::Replicate, &batch.replicated, &results);
        assert_eq!(ids(&outcomes), ["m1", "m2", "m3"]);
        assert!(outcomes[0].outcome.is_ok() && outcomes[1].outcome.is_ok());
        let Error::Permanent(reason) = problem(&outcomes[2]) else {
            panic!("not permanent")
        };
        assert!(
            reason.contains("`b` at 2-z: forbidden: no drafts"),
            "{reason}"
        );
    }

    #[test]
    fn an_empty_replication_answer_means_all_written() {
        let batch = prepare(vec![message("m1", r#"{"_id":"a","_rev":"1-x"}"#)]);
        let outcomes = outcomes(Mode::Replicate, &batch.replicated, &[]);
        assert!(outcomes[0].outcome.is_ok());
    }

    #[test]
    fn a_conflicting_event_counts_as_written() {
        let batch = prepare(vec![
            message("e1", r#"{"kind":"new"}"#),
            message("e2", r#"{"kind":"seen before"}"#),
            message("e3", r#"{"_id":"x","kind":"sent twice in one batch"}"#),
            message("e4", r#"{"_id":"x","kind":"sent twice in one batch"}"#),
            message("e5", r#"{"kind":"refused"}"#),
        ]);
        let results = answer(
            r#"[{"ok":true,"id":"e1","rev":"1-a"},
                {"id":"e2","error":"conflict","reason":"Document update conflict."},
                {"ok":true,"id":"x","rev":"1-b"},
                {"id":"x","error":"conflict","reason":"Document update conflict."},
                {"id":"e5","error":"forbidden","reason":"no events"}]"#,
        );
        let outcomes = outcomes(Mode::Create, &batch.created, &results);
        assert_eq!(ids(&outcomes), ["e1", "e2", "e3", "e4", "e5"]);
        assert!(outcomes[..4].iter().all(|o| o.outcome.is_ok()));
        let Error::Permanent(reason) = problem(&outcomes[4]) else {
            panic!("not permanent")
        };
        assert!(reason.contains("`e5`: forbidden: no events"), "{reason}");
    }

    #[test]
    fn matches_a_reordered_or_short_event_answer_by_id() {
        let batch = prepare(vec![
            message("e1", "{}"),
            message("e2", "{}"),
            message("e3", "{}"),
        ]);
        let results = answer(
            r#"[{"id":"e2","error":"forbidden","reason":"no"},
                {"ok":true,"id":"e1","rev":"1-a"}]"#,
        );
        let outcomes = outcomes(Mode::Create, &batch.created, &results);
        assert!(outcomes[0].outcome.is_ok());
        assert!(matches!(problem(&outcomes[1]), Error::Permanent(_)));
        // Not in the answer: writing it again is safe.
        assert!(matches!(problem(&outcomes[2]), Error::Retryable(m) if m.contains("`e3`")));
    }

    #[test]
    fn a_failed_request_fails_each_of_its_messages() {
        let batch = prepare(vec![message("e1", "{}"), message("e2", "{}")]);
        let outcomes = failed(&batch.created, &Error::retryable("503"));
        assert_eq!(ids(&outcomes), ["e1", "e2"]);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(problem(o), Error::Retryable(_)))
        );
    }
}
