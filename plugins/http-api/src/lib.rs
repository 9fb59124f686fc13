//! Calls a REST API: every request is paced by a rate-limit bucket and
//! carries `Authorization: Bearer <placeholder>`, which the host swaps for
//! the real token at egress. Works against https://httpbin.org.

mod url;

use std::collections::BTreeMap;
use switchyard_sdk::json::{self, Value};
use switchyard_sdk::{Connector, ConnectorInfo, Error, config, http, rate_limit};

struct HttpApi;

/// Input of both actions; `body` only for `post`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    path: String,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    body: Option<Value>,
}

/// The connection's settings, with their defaults.
struct Settings {
    base_url: String,
    token_secret: String,
    rate_bucket: String,
}

impl Settings {
    fn load() -> Result<Self, Error> {
        let base_url = config::get("base_url").ok_or_else(|| {
            Error::permanent("setting `base_url` is required, e.g. https://httpbin.org")
        })?;
        Ok(Settings {
            base_url,
            token_secret: config::get_or("token_secret", "api-token"),
            rate_bucket: config::get_or("rate_bucket", "api"),
        })
    }
}

impl Connector for HttpApi {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("http-api", env!("CARGO_PKG_VERSION"))
            .description("Calls the REST API at `base_url` with a bearer token secret")
            .action("get", "GET {\"path\", \"query\"?} → {\"status\", \"body\"}")
            .action(
                "post",
                "POST {\"path\", \"query\"?, \"body\"} as JSON → {\"status\", \"body\"}",
            )
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let method = match action {
            "get" => "GET",
            "post" => "POST",
            other => return Err(Error::unknown_action(other)),
        };
        let input: Input = json::from_slice(input)?;
        if method == "GET" && input.body.is_some() {
            return Err(Error::invalid_input("`get` takes no `body`"));
        }
        call(method, input)
    }
}

/// Sends one request. Error statuses become connector errors the host acts
/// on: 429 pauses (honouring `retry-after`), 5xx retries, other 4xx fail.
fn call(method: &str, input: Input) -> Result<Vec<u8>, Error> {
    let settings = Settings::load()?;
    let url = url::build_url(&settings.base_url, &input.path, &input.query)
        .map_err(Error::invalid_input)?;
    rate_limit::acquire(&settings.rate_bucket)?;
    let mut request = http::request(method, &url)
        .header("accept", "application/json")
        .bearer_secret(&settings.token_secret);
    if let Some(body) = &input.body {
        request = request.json(body);
    }
    let response = request.send()?.error_for_status()?;
    // APIs answer JSON; anything else is passed on as text.
    let body = response
        .json::<Value>()
        .unwrap_or_else(|_| Value::String(response.text()));
    json::to_vec(&json::json!({ "status": response.status, "body": body }))
}

switchyard_sdk::export!(HttpApi);

#[cfg(test)]
mod tests {
    #[test]
    fn describes_both_actions() {
        let info = super::__switchyard_describe();
        let actions: Vec<&str> = info.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(info.name, "http-api");
        assert_eq!(actions, ["get", "post"]);
    }
}
