//! Reads a CouchDB (or pouchdb-server) database incrementally through its
//! `_changes` feed, the change sequence as the cursor: per page, one
//! `_changes` request for the changed revisions and one `_bulk_get` for
//! those revisions with their history (`_revisions`).

mod bulk_get;
mod changes;

use couchdb_client::Settings;
use switchyard_sdk::http;
use switchyard_sdk::{Connector, ConnectorInfo, Error, Page, ReadRequest, Role, config, json, log};

struct CouchdbSource;

/// What to do when the database is missing, after the 404's explanation.
const MISSING_DATABASE_HINT: &str = "create it or fix `database`/`base_url`";

impl Connector for CouchdbSource {
    fn describe() -> ConnectorInfo {
        info(config::get("database"))
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "count" => {
                let count = Settings::load()?.doc_count(MISSING_DATABASE_HINT)?;
                json::to_vec(&json::json!({ "count": count }))
            }
            other => Err(Error::unknown_action(other)),
        }
    }

    fn read(request: ReadRequest) -> Result<Page, Error> {
        let settings = Settings::load()?;
        if request.stream != settings.database {
            return Err(Error::invalid_input(format!(
                "unknown stream `{}`; this connection reads `{}`",
                request.stream, settings.database
            )));
        }
        // Servers read `limit=0` differently; a page asks for one change at least.
        let limit = request.max_messages.max(1);
        let url = changes::changes_url(
            &settings.base_url,
            &settings.database,
            request.cursor.as_deref(),
            limit,
        );
        let request = http::get(&url).header("accept", "application/json");
        let response = settings.authorized(request)?.send()?;
        let answer = settings
            .check(response, MISSING_DATABASE_HINT)?
            .json::<changes::Changes>()?;
        let wanted = changes::wanted(&answer).map_err(Error::permanent)?;
        let fetches = fetch(&wanted, &settings)?;
        let mapped = changes::to_page(answer, &fetches, &settings.database, limit)
            .map_err(Error::permanent)?;
        for (id, rev, failure) in &mapped.skipped {
            log::event(
                log::Level::Warn,
                "skipped a deletion whose revision _bulk_get did not find",
                &[("id", id), ("rev", rev), ("error", &failure.to_string())],
            );
        }
        Ok(mapped.page)
    }
}

/// `POST _bulk_get?revs=true` for `wanted`; nothing is sent when it is empty.
fn fetch(wanted: &[bulk_get::DocRev], settings: &Settings) -> Result<bulk_get::Fetches, Error> {
    if wanted.is_empty() {
        return Ok(bulk_get::Fetches::default());
    }
    let url = bulk_get::bulk_get_url(&settings.base_url, &settings.database);
    let request = http::post(&url)
        .header("accept", "application/json")
        .json(&bulk_get::BulkGetRequest { docs: wanted });
    let response = settings.authorized(request)?.send()?;
    let answer = settings
        .check(response, MISSING_DATABASE_HINT)?
        .json::<bulk_get::BulkGet>()?;
    bulk_get::Fetches::new(answer).map_err(Error::permanent)
}

/// The source role, and the database's stream when one is configured: the
/// host may describe a plugin with no connection's settings at hand.
fn info(database: Option<String>) -> ConnectorInfo {
    let info = ConnectorInfo::new("couchdb-source", env!("CARGO_PKG_VERSION"))
        .description("Reads the changes of CouchDB database `database` at `base_url`")
        .role(Role::Source)
        .action(
            "count",
            "The database's document count → {\"count\"} (for reconciliation)",
        );
    match database {
        Some(db) => {
            let description = format!("Documents of database `{db}`, in change order");
            info.stream(db, description)
        }
        None => info,
    }
}

switchyard_sdk::export!(CouchdbSource);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::http::Response;

    #[test]
    fn describes_one_stream_per_configured_database() {
        let info = info(Some("orders".into()));
        assert_eq!(info.name, "couchdb-source");
        assert_eq!(info.roles, [Role::Source, Role::Action]);
        assert!(info.actions.iter().any(|a| a.name == "count"));
        let streams: Vec<&str> = info.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(streams, ["orders"]);
        assert!(super::info(None).streams.is_empty());
    }

    #[test]
    fn a_missing_database_is_permanent_and_named() {
        let settings = Settings {
            base_url: "http://127.0.0.1:5984".into(),
            database: "orders".into(),
            auth_secret: None,
        };
        let missing = Response {
            status: 404,
            headers: Vec::new(),
            body: br#"{"error":"not_found","reason":"Database does not exist."}"#.to_vec(),
        };
        let Err(Error::Permanent(message)) = settings.check(missing, MISSING_DATABASE_HINT) else {
            panic!("not permanent")
        };
        assert!(message.contains("`orders`"), "{message}");
        assert!(message.contains("Database does not exist."), "{message}");
        assert!(
            message.ends_with("; create it or fix `database`/`base_url`"),
            "{message}"
        );
    }
}
