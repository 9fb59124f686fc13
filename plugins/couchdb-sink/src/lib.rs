//! Writes documents into a CouchDB (or pouchdb-server) database with up to
//! two `_bulk_docs` requests per batch: documents with a `_rev` keep that
//! source revision (`new_edits: false`), documents without one (events)
//! are created once per `_id` (a `conflict` means an earlier write got
//! there), so that replayed batches change nothing.

mod bulk;

use couchdb_client::Settings as Couch;
use switchyard_sdk::http::{self, Response};
use switchyard_sdk::{
    Connector, ConnectorInfo, Error, Message, Role, WriteOutcome, config, json, log,
};

struct CouchdbSink;

/// What to do when the database is missing, after the 404's explanation.
const MISSING_DATABASE_HINT: &str =
    "create it (action `ensure-database`) or set `create_database = \"true\"`";

/// The connection's settings.
struct Settings {
    /// `base_url`, `database` and `auth_secret`.
    couch: Couch,
    /// Create the database when a write finds it missing. Default: `false`.
    create_database: bool,
}

impl Settings {
    fn load() -> Result<Self, Error> {
        Ok(Settings {
            couch: Couch::load()?,
            create_database: config::get("create_database").as_deref() == Some("true"),
        })
    }
}

impl Connector for CouchdbSink {
    fn describe() -> ConnectorInfo {
        info(config::get("database"))
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "ensure-database" => {
                let couch = Settings::load()?.couch;
                let created = ensure_database(&couch)?;
                json::to_vec(&json::json!({ "database": couch.database, "created": created }))
            }
            "count" => {
                let count = Couch::load()?.doc_count(MISSING_DATABASE_HINT)?;
                json::to_vec(&json::json!({ "count": count }))
            }
            other => Err(Error::unknown_action(other)),
        }
    }

    fn write(messages: Vec<Message>) -> Result<Vec<WriteOutcome>, Error> {
        let settings = Settings::load()?;
        let batch = bulk::prepare(messages);
        let mut outcomes = batch.rejected;
        let requests = [
            (bulk::Mode::Replicate, &batch.replicated),
            (bulk::Mode::Create, &batch.created),
        ];
        let mut sent = false;
        for (mode, docs) in requests {
            if docs.is_empty() {
                continue;
            }
            match write_docs(&settings, mode, docs) {
                Ok(written) => outcomes.extend(written),
                // Nothing was written yet: the whole batch can go again.
                Err(error) if !sent => return Err(error),
                // The first request was written: only this one's messages
                // fail (each request is safe to repeat anyway).
                Err(error) => outcomes.extend(bulk::failed(docs, &error)),
            }
            sent = true;
        }
        Ok(outcomes)
    }
}

/// One `_bulk_docs` request for `docs`, all of one `mode`; a failure of
/// the whole request is the error.
fn write_docs(
    settings: &Settings,
    mode: bulk::Mode,
    docs: &[bulk::Doc],
) -> Result<Vec<WriteOutcome>, Error> {
    let couch = &settings.couch;
    let body = bulk::request_body(docs, mode);
    let mut response = post_bulk_docs(couch, &body)?;
    if response.status == 404 && settings.create_database {
        ensure_database(couch)?;
        response = post_bulk_docs(couch, &body)?;
    }
    // 417: a validation function refused some documents; the body still
    // lists every failure.
    if response.status != 417 {
        response = couch.check(response, MISSING_DATABASE_HINT)?;
    }
    let results = response.json::<Vec<bulk::DocResult>>()?;
    Ok(bulk::outcomes(mode, docs, &results))
}

/// The sink role, the `ensure-database` action, and the database's stream
/// when one is configured: the host may describe a plugin with no
/// connection's settings at hand.
fn info(database: Option<String>) -> ConnectorInfo {
    let info = ConnectorInfo::new("couchdb-sink", env!("CARGO_PKG_VERSION"))
        .description("Writes documents into CouchDB database `database` at `base_url`: those with a `_rev` under that revision, those without (events) once per `_id`")
        .role(Role::Sink)
        .action(
            "ensure-database",
            "Creates the database if missing → {\"database\", \"created\"}",
        )
        .action(
            "count",
            "The database's document count → {\"count\"} (for reconciliation)",
        );
    match database {
        Some(db) => {
            let description = format!("Documents written into database `{db}`");
            info.stream(db, description)
        }
        None => info,
    }
}

fn post_bulk_docs(couch: &Couch, body: &bulk::BulkDocs<'_>) -> Result<Response, Error> {
    let url = bulk::bulk_docs_url(&couch.base_url, &couch.database);
    let request = http::post(&url)
        .header("accept", "application/json")
        .json(body);
    Ok(couch.authorized(request)?.send()?)
}

/// Creates the database; `false` when it already existed (412).
fn ensure_database(couch: &Couch) -> Result<bool, Error> {
    let url = bulk::database_url(&couch.base_url, &couch.database);
    let request = http::request("PUT", &url).header("accept", "application/json");
    let response = couch.authorized(request)?.send()?;
    if response.status == 412 {
        return Ok(false);
    }
    couch.check(response, MISSING_DATABASE_HINT)?;
    log::event(
        log::Level::Info,
        "created the database",
        &[("database", &couch.database)],
    );
    Ok(true)
}

switchyard_sdk::export!(CouchdbSink);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_sink_and_its_action() {
        let info = info(Some("orders".into()));
        assert_eq!(info.name, "couchdb-sink");
        assert!(info.roles.contains(&Role::Sink));
        assert_eq!(info.actions[0].name, "ensure-database");
        assert_eq!(info.streams[0].name, "orders");
        assert!(super::info(None).streams.is_empty());
    }

    #[test]
    fn a_missing_database_says_how_to_create_it() {
        let couch = Couch {
            base_url: "http://127.0.0.1:5984".into(),
            database: "orders".into(),
            auth_secret: None,
        };
        let missing = Response {
            status: 404,
            headers: Vec::new(),
            body: br#"{"error":"not_found","reason":"Database does not exist."}"#.to_vec(),
        };
        let Err(Error::Permanent(message)) = couch.check(missing, MISSING_DATABASE_HINT) else {
            panic!("not permanent")
        };
        assert!(message.contains("`orders`"), "{message}");
        assert!(message.contains("create_database"), "{message}");
    }
}
