//! What the CouchDB connectors (couchdb-source, couchdb-sink) share: the
//! settings naming a database, the `authorization` header, and how
//! CouchDB's error statuses become connector errors.

use switchyard_sdk::http::{self, RequestBuilder, Response, encode_component};
use switchyard_sdk::{Error, config, secrets};

/// The settings that name a CouchDB database and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where CouchDB listens, e.g. `http://127.0.0.1:5984`. Required.
    pub base_url: String,
    /// The database; also the name of the connector's one stream. Required.
    pub database: String,
    /// Name of the secret sent as `Authorization: Basic <value>` (the
    /// value is base64 of `user:pass`). Default: no authorization.
    pub auth_secret: Option<String>,
}

impl Settings {
    /// Reads `base_url`, `database` and `auth_secret` from the connection's
    /// config; a missing required one is a permanent error saying so. An
    /// empty `auth_secret` counts as none.
    pub fn load() -> Result<Self, Error> {
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

    /// Adds `authorization: Basic <placeholder>` when a secret is named;
    /// the host swaps in the value at egress, only towards origins it is
    /// bound to. Unchanged without `auth_secret`.
    pub fn authorized(&self, request: RequestBuilder) -> Result<RequestBuilder, Error> {
        let Some(name) = &self.auth_secret else {
            return Ok(request);
        };
        let placeholder = secrets::placeholder(name)?;
        Ok(request.header("authorization", &format!("Basic {placeholder}")))
    }

    /// 404 means the database is missing: permanent, with CouchDB's
    /// explanation and then `missing_database_hint` (what to do about it).
    /// Other 4xx but 429 are permanent with CouchDB's explanation; 429 and
    /// 5xx go through the SDK (rate-limited with `retry-after`, retryable).
    /// Anything below 400 is `Ok`.
    pub fn check(
        &self,
        response: Response,
        missing_database_hint: &str,
    ) -> Result<Response, Error> {
        match response.status {
            404 => Err(Error::permanent(format!(
                "database `{}` not found at {} ({}); {missing_database_hint}",
                self.database,
                self.base_url,
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
}

impl Settings {
    /// The database's live document count: `GET /{db}` → `doc_count`
    /// (deleted documents are not counted). A missing database is
    /// permanent, with `missing_database_hint`.
    pub fn doc_count(&self, missing_database_hint: &str) -> Result<u64, Error> {
        #[derive(serde::Deserialize)]
        struct DbInfo {
            doc_count: u64,
        }
        let url = format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            encode_component(&self.database)
        );
        let request = http::get(&url).header("accept", "application/json");
        let response = self.authorized(request)?.send()?;
        Ok(self
            .check(response, missing_database_hint)?
            .json::<DbInfo>()?
            .doc_count)
    }
}

/// CouchDB's `{"error", "reason"}` body as `error: reason`, else the first
/// 200 characters of whatever the body is.
pub fn explanation(response: &Response) -> String {
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
    fn a_missing_database_is_permanent_named_and_hinted() {
        let missing = response(
            404,
            r#"{"error":"not_found","reason":"Database does not exist."}"#,
        );
        let Err(Error::Permanent(message)) = settings().check(missing, "create it") else {
            panic!("not permanent")
        };
        assert_eq!(
            message,
            "database `orders` not found at http://127.0.0.1:5984 (not_found: Database does not exist.); create it"
        );
    }

    #[test]
    fn classifies_statuses_for_the_host() {
        let check = |status, body| settings().check(response(status, body), "");
        let unauthorized = r#"{"error":"unauthorized","reason":"Name or password is incorrect."}"#;
        assert!(
            matches!(check(401, unauthorized), Err(Error::Permanent(m)) if m == "CouchDB answered status 401 (unauthorized: Name or password is incorrect.)")
        );
        assert!(
            matches!(check(413, "<html>too large</html>"), Err(Error::Permanent(m)) if m.contains("413 (<html>"))
        );
        assert!(matches!(check(503, "busy"), Err(Error::Retryable(_))));
        let Err(Error::RateLimited(limit)) = check(429, "") else {
            panic!("not rate limited")
        };
        assert_eq!(limit.retry_after_ms, Some(2000));
        assert!(check(200, "{}").is_ok());
        assert!(check(201, "[]").is_ok());
    }

    #[test]
    fn explains_with_couchdb_error_or_the_body_start() {
        let explain = |body: &str| explanation(&response(400, body));
        assert_eq!(explain(r#"{"error":"bad_request"}"#), "bad_request: ");
        assert_eq!(explain(&"x".repeat(300)), "x".repeat(200));
    }
}
