//! Reads a CouchDB (or pouchdb-server) database incrementally through its
//! `_changes` feed, the change sequence as the cursor: per page, one
//! `_changes` request for the changed revisions and one `_bulk_get` for
//! those revisions with their history (`_revisions`).

mod bulk_get;
mod changes;

use switchyard_sdk::http::{self, RequestBuilder, Response};
use switchyard_sdk::{
    Connector, ConnectorInfo, Error, Page, ReadRequest, Role, config, log, secrets,
};

struct CouchdbSource;

/// The connection's settings.
struct Settings {
    /// Where CouchDB listens, e.g. `http://127.0.0.1:5984`. Required.
    base_url: String,
    /// The database read; also the name of the one stream. Required.
    database: String,
    /// Name of the secret sent as `Authorization: Basic <value>` (the
    /// value is base64 of `user:pass`). Default: no authorization.
    auth_secret: Option<String>,
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
        })
    }
}

impl Connector for CouchdbSource {
    fn describe() -> ConnectorInfo {
        info(config::get("database"))
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
        let response = authorized(request, settings.auth_secret.as_deref())?.send()?;
        let answer = check(response, &settings)?.json::<changes::Changes>()?;
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
    let response = authorized(request, settings.auth_secret.as_deref())?.send()?;
    let answer = check(response, settings)?.json::<bulk_get::BulkGet>()?;
    bulk_get::Fetches::new(answer).map_err(Error::permanent)
}

/// The source role, and the database's stream when one is configured: the
/// host may describe a plugin with no connection's settings at hand.
fn info(database: Option<String>) -> ConnectorInfo {
    let info = ConnectorInfo::new("couchdb-source", env!("CARGO_PKG_VERSION"))
        .description("Reads the changes of CouchDB database `database` at `base_url`")
        .role(Role::Source);
    match database {
        Some(db) => {
            let description = format!("Documents of database `{db}`, in change order");
            info.stream(db, description)
        }
        None => info,
    }
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
            "database `{}` not found at {} ({}); create it or fix `database`/`base_url`",
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

switchyard_sdk::export!(CouchdbSource);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            base_url: "http://127.0.0.1:5984".into(),
            database: "orders".into(),
            auth_secret: None,
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("retry-after".into(), "2".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn describes_one_stream_per_configured_database() {
        let info = info(Some("orders".into()));
        assert_eq!(info.name, "couchdb-source");
        assert_eq!(info.roles, [Role::Source]);
        let streams: Vec<&str> = info.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(streams, ["orders"]);
        assert!(super::info(None).streams.is_empty());
    }

    #[test]
    fn a_missing_database_is_permanent_and_named() {
        let missing = response(
            404,
            r#"{"error":"not_found","reason":"Database does not exist."}"#,
        );
        let Err(Error::Permanent(message)) = check(missing, &settings()) else {
            panic!("not permanent")
        };
        assert!(message.contains("`orders`"), "{message}");
        assert!(message.contains("Database does not exist."), "{message}");
    }

    #[test]
    fn classifies_statuses_for_the_host() {
        let unauthorized = response(
            401,
            r#"{"error":"unauthorized","reason":"Name or password is incorrect."}"#,
        );
        assert!(
            matches!(check(unauthorized, &settings()), Err(Error::Permanent(m)) if m.contains("unauthorized: Name"))
        );
        assert!(matches!(
            check(response(503, "busy"), &settings()),
            Err(Error::Retryable(_))
        ));
        let Err(Error::RateLimited(limit)) = check(response(429, ""), &settings()) else {
            panic!("not rate limited")
        };
        assert_eq!(limit.retry_after_ms, Some(2000));
        assert!(check(response(200, "{}"), &settings()).is_ok());
    }
}
