//! The `_bulk_get?revs=true` request that fetches a page's documents at
//! their changed revisions, with `_revisions`, and how its answer is read.
//! Pure, so it is tested natively.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use switchyard_sdk::http::encode_component;

/// The URL of `db`'s `_bulk_get`, asking for each revision's history.
pub fn bulk_get_url(base_url: &str, db: &str) -> String {
    format!(
        "{}/{}/_bulk_get?revs=true",
        base_url.trim_end_matches('/'),
        encode_component(db)
    )
}

/// One revision to fetch: `{"id", "rev"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DocRev {
    pub id: String,
    pub rev: String,
}

/// The body of a `_bulk_get` request: `{"docs": [{"id", "rev"}, …]}`.
#[derive(Debug, Serialize)]
pub struct BulkGetRequest<'a> {
    pub docs: &'a [DocRev],
}

/// A `_bulk_get` answer: `{"results": [{"id", "docs": [{"ok": …} |
/// {"error": …}]}]}`.
#[derive(Debug, Default, Deserialize)]
pub struct BulkGet {
    results: Vec<BulkGetResult>,
}

#[derive(Debug, Deserialize)]
struct BulkGetResult {
    id: String,
    #[serde(default)]
    docs: Vec<BulkGetDoc>,
}

/// One entry of a result's `docs`. CouchDB sends `{"ok": doc}` or
/// `{"error": {"id", "rev", "error", "reason"}}`; pouchdb-server sends
/// `{"missing": rev}` for a revision it does not have (and `{}` for a
/// document it does not have, when no revision was asked for).
#[derive(Debug, Deserialize)]
struct BulkGetDoc {
    /// Kept as the server's bytes, so numbers beyond f64 survive.
    ok: Option<Box<RawValue>>,
    error: Option<DocError>,
    missing: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DocError {
    rev: Option<String>,
    error: String,
    #[serde(default)]
    reason: String,
}

/// Just enough of a fetched document to know which revision it is.
#[derive(Debug, Deserialize)]
struct DocHead {
    #[serde(rename = "_rev")]
    rev: String,
}

/// Why a requested revision did not come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// CouchDB's `error`, e.g. `not_found`; pouchdb-server's `missing`
    /// counts as `not_found`.
    pub error: String,
    pub reason: String,
}

impl Failure {
    /// The revision (or document) does not exist at the server.
    pub fn is_not_found(&self) -> bool {
        self.error == "not_found"
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            f.write_str(&self.error)
        } else {
            write!(f, "{}: {}", self.error, self.reason)
        }
    }
}

/// What `_bulk_get` answered for one requested revision.
#[derive(Debug)]
pub enum Fetched {
    /// The document, as the server's JSON bytes.
    Doc(Vec<u8>),
    Failed(Failure),
}

/// A `_bulk_get` answer indexed by `(id, rev)`. Matching goes by key, not
/// position: pouchdb-server groups results by id rather than keeping the
/// request's order.
#[derive(Debug, Default)]
pub struct Fetches {
    by_rev: HashMap<(String, String), Fetched>,
    /// Failures that name no revision (pouchdb's `{}`), by id.
    by_id: HashMap<String, Fetched>,
}

impl Fetches {
    /// Indexes `answer`. A document that is not a JSON object with a
    /// string `_rev` is an error.
    pub fn new(answer: BulkGet) -> Result<Self, String> {
        let mut fetches = Fetches::default();
        for result in answer.results {
            for doc in result.docs {
                match doc {
                    BulkGetDoc { ok: Some(doc), .. } => {
                        let head: DocHead = serde_json::from_str(doc.get()).map_err(|e| {
                            format!("_bulk_get returned `{}` without a `_rev`: {e}", result.id)
                        })?;
                        let bytes = String::from(Box::<str>::from(doc)).into_bytes();
                        fetches
                            .by_rev
                            .insert((result.id.clone(), head.rev), Fetched::Doc(bytes));
                    }
                    BulkGetDoc {
                        error: Some(error), ..
                    } => {
                        let failure = Failure {
                            error: error.error,
                            reason: error.reason,
                        };
                        match error.rev {
                            Some(rev) => {
                                let key = (result.id.clone(), rev);
                                fetches.by_rev.insert(key, Fetched::Failed(failure));
                            }
                            None => {
                                let failed = Fetched::Failed(failure);
                                fetches.by_id.insert(result.id.clone(), failed);
                            }
                        }
                    }
                    BulkGetDoc {
                        missing: Some(rev), ..
                    } => {
                        let failure = Failure {
                            error: "not_found".to_owned(),
                            reason: "missing".to_owned(),
                        };
                        let key = (result.id.clone(), rev);
                        fetches.by_rev.insert(key, Fetched::Failed(failure));
                    }
                    BulkGetDoc { .. } => {
                        let failure = Failure {
                            error: "not_found".to_owned(),
                            reason: String::new(),
                        };
                        let failed = Fetched::Failed(failure);
                        fetches.by_id.insert(result.id.clone(), failed);
                    }
                }
            }
        }
        Ok(fetches)
    }

    /// What came back for revision `rev` of `id`; `None` when the answer
    /// does not mention it.
    pub fn get(&self, id: &str, rev: &str) -> Option<&Fetched> {
        self.by_rev
            .get(&(id.to_owned(), rev.to_owned()))
            .or_else(|| self.by_id.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetches(answer: &str) -> Fetches {
        Fetches::new(serde_json::from_str(answer).unwrap()).unwrap()
    }

    fn doc(fetched: Option<&Fetched>) -> &[u8] {
        match fetched {
            Some(Fetched::Doc(bytes)) => bytes,
            other => panic!("not a document: {other:?}"),
        }
    }

    fn failure(fetched: Option<&Fetched>) -> &Failure {
        match fetched {
            Some(Fetched::Failed(failure)) => failure,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn builds_the_url_and_body() {
        assert_eq!(
            bulk_get_url("http://127.0.0.1:5984/", "a/b"),
            "http://127.0.0.1:5984/a%2Fb/_bulk_get?revs=true"
        );
        let docs = [DocRev {
            id: "a".into(),
            rev: "2-x".into(),
        }];
        assert_eq!(
            serde_json::to_string(&BulkGetRequest { docs: &docs }).unwrap(),
            r#"{"docs":[{"id":"a","rev":"2-x"}]}"#
        );
    }

    #[test]
    fn matches_documents_by_id_and_rev_whatever_the_order() {
        let fetches = fetches(
            r#"{"results":[
                {"id":"a","docs":[{"ok":{"_id":"a","_rev":"2-y","n":123456789012345678901234567890,"_revisions":{"start":2,"ids":["y","x"]}}}]},
                {"id":"a","docs":[{"ok":{"_id":"a","_rev":"1-x"}}]}
            ]}"#,
        );
        assert_eq!(doc(fetches.get("a", "1-x")), br#"{"_id":"a","_rev":"1-x"}"#);
        // The server's bytes, big number and all.
        assert_eq!(
            doc(fetches.get("a", "2-y")),
            br#"{"_id":"a","_rev":"2-y","n":123456789012345678901234567890,"_revisions":{"start":2,"ids":["y","x"]}}"#
        );
        assert!(fetches.get("b", "1-z").is_none());
    }

    #[test]
    fn reads_couchdb_and_pouchdb_failures() {
        let fetches = fetches(
            r#"{"results":[
                {"id":"a","docs":[{"error":{"id":"a","rev":"1-x","error":"not_found","reason":"missing"}}]},
                {"id":"b","docs":[{"error":{"id":"b","rev":"2-y","error":"forbidden","reason":"no"}}]},
                {"id":"c","docs":[{"missing":"3-z"}]},
                {"id":"d","docs":[{}]},
                {"id":"e","docs":[{"error":{"id":"e","error":"bad_request","reason":"Invalid rev format"}}]}
            ]}"#,
        );
        let a = failure(fetches.get("a", "1-x"));
        assert!(a.is_not_found());
        assert_eq!(a.to_string(), "not_found: missing");
        let b = failure(fetches.get("b", "2-y"));
        assert!(!b.is_not_found());
        assert_eq!(b.to_string(), "forbidden: no");
        assert!(failure(fetches.get("c", "3-z")).is_not_found());
        assert!(fetches.get("c", "4-w").is_none());
        assert!(failure(fetches.get("d", "1-q")).is_not_found());
        assert_eq!(
            failure(fetches.get("e", "x")).to_string(),
            "bad_request: Invalid rev format"
        );
    }

    #[test]
    fn a_document_without_a_rev_is_an_error() {
        let answer =
            serde_json::from_str(r#"{"results":[{"id":"a","docs":[{"ok":{"_id":"a"}}]}]}"#)
                .unwrap();
        let error = Fetches::new(answer).unwrap_err();
        assert!(error.contains("`a`"), "{error}");
    }
}
