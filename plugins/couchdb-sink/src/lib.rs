//! Writes documents into a CouchDB (or pouchdb-server) database with up to
//! two `_bulk_docs` requests per batch: documents with a `_rev` keep that
//! source revision (`new_edits: false`), documents without one (events)
//! are created once per `_id` (a `conflict` means an earlier write got
//! there), so that replayed batches change nothing.

mod bulk;

use switchyard_sdk::http::{self, RequestBuilder, Response};
use switchyard_sdk::{
    Connector, ConnectorInfo, Error, Message, Role, WriteOutcome, config, json, log, secrets,
};

struct CouchdbSink;

/// The connection's settings.
struct Settings {
    /// Where CouchDB listens, e.g. `http://127.0.0.1:5984`. Required.
    base_url: String,
    /// The database written; also the name of the one stream. Required.
    database: String,
    /// Name of the secret sent as `Authorization: Basic <value>` (the
    /// value is base64 of `user:pass`). Default: no authorization.
    auth_secret: Option<String>,
    /// Create the database when a write finds it missing. Default: `false`.
    create_database: bool,
}

impl Settings {
    fn load() -> Result<Self, Error> {
        let required = |key: &str, example: &str| {
            config::get(key).ok_or_else(|| {
                Error::permanent(format!("setting `{key}` is required, e.g. {example}"))
            })
        };
        Ok(Settings {
            base_url: required("base_url", "http://127.0.0.1:5984")?,
            database: required("database", "orders")?,
            auth_secret: config::get("auth_secret").filter(|name| !name.is_empty()),
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
                let settings = Settings::load()?;
                let created = ensure_database(&settings)?;
                json::to_vec(&json::json!({ "database": settings.database, "created": created }))
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
    let body = bulk::request_body(docs, mode);
    let mut response = post_bulk_docs(settings, &body)?;
    if response.status == 404 && settings.create_database {
        ensure_database(settings)?;
        response = post_bulk_docs(settings, &body)?;
    }
    // 417: a validation function refused some documents; the body still
    // lists every failure.
    if response.status != 417 {
        response = check(response, settings)?;
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
        );
    match database {
        Some(db) => {
            let description = format!("Documents written into database `{db}`");
            info.stream(db, description)
        }
        None => info,
    }
}

fn post_bulk_docs(settings: &Settings, body: &bulk::BulkDocs<'_>) -> Result<Response, Error> {
    let url = bulk::bulk_docs_url(&settings.base_url, &settings.database);
    let request = http::post(&url)
        .header("accept", "application/json")
        .json(body);
    Ok(authorized(request, settings.auth_secret.as_deref())?.send()?)
}

/// Creates the database; `false` when it already existed (412).
fn ensure_database(settings: &Settings) -> Result<bool, Error> {
    let url = bulk::database_url(&settings.base_url, &settings.database);
    let request = http::request("PUT", &url).header("accept", "application/json");
    let response = authorized(request, settings.auth_secret.as_deref())?.send()?;
    if response.status == 412 {
        return Ok(false);
    }
    check(response, settings)?;
    log::event(
        log::Level::Info,
        "created the database",
        &[("database", &settings.database)],
    );
    Ok(true)
}

/// Adds `authorization: Basic <placeholder>` when a secret is named; the
/// host swaps in the value at egress, only towards origins it is bound to.
fn authorized(request: RequestBuilder, auth_secret: Option<&str>) -> Result<RequestBuilder, Error> {
    let Some(name) = auth_secret else {
        return Ok(request);
    };
    let placeholder = secrets::placeholder(name)?;
    Ok(request.header("authorization", &format!("Basic {placeholder}")))
}

/// 404 means the database is missing; other 4xx but 429 are permanent
/// with CouchDB's own explanation; 429 and 5xx go through the SDK
/// (rate-limited with `retry-after`, retryable).
fn check(response: Response, settings: &Settings) -> Result<Response, Error> {
    match response.status {
        404 => Err(Error::permanent(format!(
            "database `{}` not found at {} ({}); create it (action `ensure-database`) or set `create_database = \"true\"`",
            settings.database,
            settings.base_url,
            explanation(&response)
        ))),
        400..=499 if response.status != 429 => Err(Error::permanent(format!(
            "CouchDB answered status {} ({})",
            response.status,
            explanation(&response)
        ))),
        _ => Ok(response.error_for_status()?),
    }
}

/// CouchDB's `{"error", "reason"}` body as `error: reason`, else the start
/// of whatever the body is.
fn explanation(response: &Response) -> String {
    #[derive(serde::Deserialize)]
    struct CouchError {
        error: String,
        #[serde(default)]
        reason: String,
    }
    match response.json::<CouchError>() {
        Ok(body) => format!("{}: {}", body.error, body.reason),
        Err(_) => response.text().chars().take(200).collect(),
    }
}

switchyard_sdk::export!(CouchdbSink);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            base_url: "http://127.0.0.1:5984".into(),
            database: "orders".into(),
            auth_secret: None,
            create_database: false,
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

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
        let missing = response(
            404,
            r#"{"error":"not_found","reason":"Database does not exist."}"#,
        );
        let Err(Error::Permanent(message)) = check(missing, &settings()) else {
            panic!("not permanent")
        };
        assert!(message.contains("`orders`"), "{message}");
        assert!(message.contains("create_database"), "{message}");
    }

    #[test]
    fn classifies_statuses_for_the_host() {
        assert!(matches!(
            check(response(500, ""), &settings()),
            Err(Error::Retryable(_))
        ));
        assert!(matches!(
            check(response(429, ""), &settings()),
            Err(Error::RateLimited(_))
        ));
        let too_large = response(413, "<html>too large</html>");
        assert!(
            matches!(check(too_large, &settings()), Err(Error::Permanent(m)) if m.contains("413 (<html>"))
        );
        assert!(check(response(201, "[]"), &settings()).is_ok());
    }
}
