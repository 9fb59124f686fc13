//! The `_changes` request, and how its answer and the `_bulk_get` answer
//! for its revisions become a page of messages. Pure, so it is tested
//! natively.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use switchyard_sdk::http::encode_component;
use switchyard_sdk::{Message, Page};

use crate::bulk_get::{DocRev, Failure, Fetched, Fetches};

/// The message header carrying the change's sequence, as JSON text.
pub const SEQ_HEADER: &str = "couchdb-seq";

/// The URL of one page of `db`'s changes after `since`: at most `limit`
/// changes, winning revisions only, without documents (`_bulk_get` fetches
/// them with their history). `since` is a cursor this connector returned (a
/// sequence as JSON text), sent back verbatim; `None` reads from the start
/// (`0`). Both are percent-encoded, so that a `/` in the name stays within
/// one path segment and a quoted sequence survives the query string.
pub fn changes_url(base_url: &str, db: &str, since: Option<&str>, limit: u32) -> String {
    format!(
        "{}/{}/_changes?since={}&limit={limit}&style=main_only",
        base_url.trim_end_matches('/'),
        encode_component(db),
        encode_component(since.unwrap_or("0")),
    )
}

/// The parts of a `_changes` answer this connector uses.
#[derive(Debug, Deserialize)]
pub struct Changes {
    results: Vec<Change>,
    last_seq: Option<Value>,
    /// Changes left after this page; CouchDB 2+ sends it, PouchDB does not.
    pending: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Change {
    /// A number (CouchDB 1.x, PouchDB) or an opaque string (CouchDB 2+).
    seq: Value,
    id: String,
    /// With `style=main_only`, the winning revision.
    #[serde(default)]
    changes: Vec<Revision>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Debug, Deserialize)]
struct Revision {
    rev: String,
}

impl Change {
    fn is_design(&self) -> bool {
        self.id.starts_with("_design/")
    }

    fn rev(&self) -> Result<&str, String> {
        let what = if self.deleted { "deletion" } else { "change" };
        self.changes
            .first()
            .map(|revision| revision.rev.as_str())
            .ok_or_else(|| format!("the {what} of `{}` names no revision", self.id))
    }
}

/// The revisions to fetch with `_bulk_get` for `changes`: each change's
/// winning revision, deletions included, design documents left out, each
/// `(id, rev)` once, in change order. Empty when there is nothing to fetch
/// (then no `_bulk_get` is sent: pouchdb-server never answers an empty
/// one). A change without a revision is an error.
pub fn wanted(changes: &Changes) -> Result<Vec<DocRev>, String> {
    let mut seen = HashSet::with_capacity(changes.results.len());
    let mut docs = Vec::with_capacity(changes.results.len());
    for change in changes.results.iter().filter(|change| !change.is_design()) {
        let rev = change.rev()?;
        if seen.insert((change.id.as_str(), rev)) {
            docs.push(DocRev {
                id: change.id.clone(),
                rev: rev.to_owned(),
            });
        }
    }
    Ok(docs)
}

/// A page, and the changes left out of it for the log.
#[derive(Debug)]
pub struct Mapped {
    pub page: Page,
    /// `(id, rev, why)` of each deletion skipped because `_bulk_get` did
    /// not find its revision.
    pub skipped: Vec<(String, String, Failure)>,
}

/// Turns a `_changes` answer for `db`, and the `_bulk_get` answer for its
/// [`wanted`] revisions, into a page on stream `db`. `limit` is what the
/// `_changes` request asked for: a full page means more may follow.
///
/// Each message's payload is the document `_bulk_get` returned, as the
/// server's bytes: with `_revisions`, and `_deleted` for a deletion.
/// Design documents are skipped. A deletion whose revision `_bulk_get`
/// does not find (`not_found`, e.g. purged meanwhile) is skipped and
/// listed in [`Mapped::skipped`]. Skipped changes still advance the cursor.
/// Any other failure to fetch a document, including `not_found` for a live
/// one, is an error naming the document.
pub fn to_page(
    changes: Changes,
    fetches: &Fetches,
    db: &str,
    limit: u32,
) -> Result<Mapped, String> {
    let has_more =
        changes.results.len() >= limit as usize || changes.pending.is_some_and(|n| n > 0);
    // Servers send `last_seq`; the last result's seq is as good a resume point.
    let next_cursor = changes
        .last_seq
        .as_ref()
        .or(changes.results.last().map(|change| &change.seq))
        .map(Value::to_string);
    let mut messages = Vec::with_capacity(changes.results.len());
    let mut skipped = Vec::new();
    for change in changes.results {
        if change.is_design() {
            continue;
        }
        let rev = change.rev()?;
        let payload = match fetches.get(&change.id, rev) {
            Some(Fetched::Doc(bytes)) => bytes.clone(),
            Some(Fetched::Failed(failure)) if change.deleted && failure.is_not_found() => {
                skipped.push((change.id.clone(), rev.to_owned(), failure.clone()));
                continue;
            }
            Some(Fetched::Failed(failure)) => {
                return Err(format!(
                    "_bulk_get could not read revision {rev} of `{}` ({failure})",
                    change.id
                ));
            }
            None => {
                return Err(format!(
                    "_bulk_get did not return revision {rev} of `{}`",
                    change.id
                ));
            }
        };
        let mut message = Message::new(change.id.clone(), db, payload);
        message.key = Some(change.id);
        message.headers = vec![(SEQ_HEADER.to_owned(), change.seq.to_string())];
        messages.push(message);
    }
    Ok(Mapped {
        page: Page {
            messages,
            next_cursor,
            has_more,
        },
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk_get::BulkGet;

    fn changes(answer: &str) -> Changes {
        serde_json::from_str(answer).unwrap()
    }

    fn fetches(answer: &str) -> Fetches {
        Fetches::new(serde_json::from_str::<BulkGet>(answer).unwrap()).unwrap()
    }

    /// A `_bulk_get` answer with each wanted revision as a bare document.
    fn found(changes: &Changes) -> Fetches {
        let results: Vec<Value> = wanted(changes)
            .unwrap()
            .into_iter()
            .map(|doc| {
                serde_json::json!({"id": doc.id, "docs": [{"ok": {"_id": doc.id, "_rev": doc.rev}}]})
            })
            .collect();
        fetches(&serde_json::json!({ "results": results }).to_string())
    }

    fn page(answer: &str, limit: u32) -> Page {
        let changes = changes(answer);
        let fetches = found(&changes);
        to_page(changes, &fetches, "orders", limit).unwrap().page
    }

    #[test]
    fn builds_the_changes_url() {
        assert_eq!(
            changes_url("http://127.0.0.1:5984/", "orders", None, 100),
            "http://127.0.0.1:5984/orders/_changes?since=0&limit=100&style=main_only"
        );
        assert_eq!(
            changes_url("https://couch.example/db-proxy", "a/b$", Some("42"), 5),
            "https://couch.example/db-proxy/a%2Fb%24/_changes?since=42&limit=5&style=main_only"
        );
        assert!(
            changes_url("http://h", "d", Some("\"7-g1A=\""), 1).contains("since=%227-g1A%3D%22&")
        );
    }

    const PAGE: &str = r#"{"results":[
        {"seq":3,"id":"a","changes":[{"rev":"2-x"}]},
        {"seq":4,"id":"_design/views","changes":[{"rev":"1-d"}]},
        {"seq":5,"id":"b","changes":[{"rev":"3-y"}],"deleted":true},
        {"seq":6,"id":"c","changes":[{"rev":"1-z"}]}
    ],"last_seq":6}"#;

    #[test]
    fn wants_each_winning_revision_but_design_documents() {
        let wanted = wanted(&changes(PAGE)).unwrap();
        let pairs: Vec<(&str, &str)> = wanted
            .iter()
            .map(|doc| (doc.id.as_str(), doc.rev.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "2-x"), ("b", "3-y"), ("c", "1-z")]);
        let twice = changes(
            r#"{"results":[{"seq":1,"id":"a","changes":[{"rev":"1-x"}]},{"seq":2,"id":"a","changes":[{"rev":"1-x"}]}]}"#,
        );
        assert_eq!(self::wanted(&twice).unwrap().len(), 1);
        let designs =
            changes(r#"{"results":[{"seq":1,"id":"_design/v","changes":[{"rev":"1-d"}]}]}"#);
        assert!(self::wanted(&designs).unwrap().is_empty());
    }

    #[test]
    fn maps_fetched_documents_and_deletions() {
        // pouchdb-server groups results by id, so the order differs.
        let fetches = fetches(
            r#"{"results":[
                {"id":"c","docs":[{"ok":{"_id":"c","_rev":"1-z","_revisions":{"start":1,"ids":["z"]}}}]},
                {"id":"a","docs":[{"ok":{"_id":"a","_rev":"2-x","n":123456789012345678901234567890,"_revisions":{"start":2,"ids":["x","w"]}}}]},
                {"id":"b","docs":[{"ok":{"_id":"b","_rev":"3-y","_deleted":true,"_revisions":{"start":3,"ids":["y","v","u"]}}}]}
            ]}"#,
        );
        let mapped = to_page(changes(PAGE), &fetches, "orders", 10).unwrap();
        assert!(mapped.skipped.is_empty());
        let page = mapped.page;
        let ids: Vec<&str> = page.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let live = &page.messages[0];
        assert_eq!(live.stream, "orders");
        assert_eq!(live.key.as_deref(), Some("a"));
        assert_eq!(live.header(SEQ_HEADER), Some("3"));
        // The document's own bytes, big number and history and all.
        assert_eq!(
            live.payload,
            br#"{"_id":"a","_rev":"2-x","n":123456789012345678901234567890,"_revisions":{"start":2,"ids":["x","w"]}}"#
        );
        let deleted = &page.messages[1];
        assert_eq!(deleted.header(SEQ_HEADER), Some("5"));
        assert_eq!(
            deleted.payload,
            br#"{"_id":"b","_rev":"3-y","_deleted":true,"_revisions":{"start":3,"ids":["y","v","u"]}}"#
        );
        assert_eq!(page.next_cursor.as_deref(), Some("6"));
        assert!(!page.has_more);
    }

    #[test]
    fn skips_deletions_that_are_not_found() {
        let answer = r#"{"results":[
            {"seq":1,"id":"a","changes":[{"rev":"2-x"}],"deleted":true},
            {"seq":2,"id":"b","changes":[{"rev":"1-y"}],"deleted":true},
            {"seq":3,"id":"c","changes":[{"rev":"1-z"}]}
        ],"last_seq":3}"#;
        let fetches = fetches(
            r#"{"results":[
                {"id":"a","docs":[{"error":{"id":"a","rev":"2-x","error":"not_found","reason":"deleted"}}]},
                {"id":"b","docs":[{"missing":"1-y"}]},
                {"id":"c","docs":[{"ok":{"_id":"c","_rev":"1-z"}}]}
            ]}"#,
        );
        let mapped = to_page(changes(answer), &fetches, "orders", 10).unwrap();
        let ids: Vec<&str> = mapped.page.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        let skipped: Vec<(&str, &str)> = mapped
            .skipped
            .iter()
            .map(|(id, rev, _)| (id.as_str(), rev.as_str()))
            .collect();
        assert_eq!(skipped, [("a", "2-x"), ("b", "1-y")]);
        assert_eq!(mapped.skipped[0].2.to_string(), "not_found: deleted");
        // Skipped changes still move the cursor.
        assert_eq!(mapped.page.next_cursor.as_deref(), Some("3"));
    }

    #[test]
    fn other_fetch_failures_fail_the_page_naming_the_document() {
        let live =
            changes(r#"{"results":[{"seq":1,"id":"a","changes":[{"rev":"2-x"}]}],"last_seq":1}"#);
        let not_found = fetches(r#"{"results":[{"id":"a","docs":[{"missing":"2-x"}]}]}"#);
        let error = to_page(live, &not_found, "orders", 10).unwrap_err();
        assert!(error.contains("`a`") && error.contains("2-x"), "{error}");
        assert!(error.contains("not_found"), "{error}");

        let deleted = changes(
            r#"{"results":[{"seq":1,"id":"b","changes":[{"rev":"2-x"}],"deleted":true}],"last_seq":1}"#,
        );
        let forbidden = fetches(
            r#"{"results":[{"id":"b","docs":[{"error":{"id":"b","rev":"2-x","error":"forbidden","reason":"not yours"}}]}]}"#,
        );
        let error = to_page(deleted, &forbidden, "orders", 10).unwrap_err();
        assert!(
            error.contains("`b`") && error.contains("forbidden: not yours"),
            "{error}"
        );

        let absent =
            changes(r#"{"results":[{"seq":1,"id":"c","changes":[{"rev":"1-z"}]}],"last_seq":1}"#);
        let error = to_page(absent, &Fetches::default(), "orders", 10).unwrap_err();
        assert!(
            error.contains("`c`") && error.contains("did not return"),
            "{error}"
        );
    }

    #[test]
    fn string_sequences_stay_opaque_json() {
        let page = page(
            r#"{"results":[{"seq":"1-g1AAAA","id":"a","changes":[{"rev":"1-x"}]}],
                "last_seq":"1-g1AAAA","pending":0}"#,
            1,
        );
        assert_eq!(page.messages[0].header(SEQ_HEADER), Some("\"1-g1AAAA\""));
        assert_eq!(page.next_cursor.as_deref(), Some("\"1-g1AAAA\""));
        // A full page may have more, whatever `pending` says.
        assert!(page.has_more);
    }

    #[test]
    fn pending_changes_mean_more() {
        let page = page(r#"{"results":[],"last_seq":"9-q","pending":3}"#, 10);
        assert!(page.messages.is_empty());
        assert!(page.has_more);
        let drained = self::page(r#"{"results":[],"last_seq":9}"#, 10);
        assert!(!drained.has_more);
        assert_eq!(drained.next_cursor.as_deref(), Some("9"));
    }

    #[test]
    fn falls_back_to_the_last_seq_of_the_results() {
        let page = page(
            r#"{"results":[{"seq":12,"id":"a","changes":[{"rev":"1-x"}]}]}"#,
            10,
        );
        assert_eq!(page.next_cursor.as_deref(), Some("12"));
        let empty = self::page(r#"{"results":[]}"#, 10);
        assert_eq!(empty.next_cursor, None);
    }

    #[test]
    fn a_change_without_a_revision_is_an_error() {
        for deleted in [true, false] {
            let changes = changes(&format!(
                r#"{{"results":[{{"seq":1,"id":"a","deleted":{deleted}}}],"last_seq":1}}"#
            ));
            let error = wanted(&changes).unwrap_err();
            assert!(error.contains("`a`"), "{error}");
            let error = to_page(changes, &Fetches::default(), "orders", 10).unwrap_err();
            assert!(error.contains("names no revision"), "{error}");
        }
    }
}
