//! Drives the 0.1.1 host interfaces from inside a guest, for the host's
//! tests: outbound HTTP, secrets, state and rate limits. Every action takes
//! and returns JSON; failures of the thing under test come back as
//! `{"error": …}` output, not as connector errors, so tests can inspect them.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_sdk::{Connector, ConnectorInfo, Error, http, json, rate_limit, secrets, state};

struct Probe;

impl Connector for Probe {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("http-probe", "0.1.0")
            .action(
                "fetch",
                "one HTTP request → status, headers, body or error code",
            )
            .action("fetch_many", "`count` GETs of `url` → statuses or errors")
            .action(
                "relay",
                "GETs `from` with a bearer secret, then POSTs what came back to `to` (as is, reversed, hex and spaced out), logs and returns it all",
            )
            .action("placeholder", "the placeholder of secret `name`")
            .action("sign", "HMAC-SHA256 of `message` with secret `name`")
            .action(
                "verify",
                "checks `signature` of `message` with secret `name`",
            )
            .action("state", "one state operation")
            .action("acquire", "one permit of rate-limit `bucket`")
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let output = match action {
            "fetch" => fetch(json::from_slice(input)?),
            "fetch_many" => fetch_many(json::from_slice(input)?),
            "relay" => relay(json::from_slice(input)?),
            "placeholder" => {
                let input: Secret = json::from_slice(input)?;
                reply(
                    secrets::placeholder(&input.name),
                    |p| json!({ "placeholder": p }),
                )
            }
            "sign" => {
                let input: Secret = json::from_slice(input)?;
                let signed = secrets::sign_hmac_sha256(&input.name, input.message.as_bytes());
                reply(signed, |hex| json!({ "signature": hex }))
            }
            "verify" => {
                let input: Secret = json::from_slice(input)?;
                let valid = secrets::verify_hmac_sha256(
                    &input.name,
                    input.message.as_bytes(),
                    &input.signature,
                );
                reply(valid, |valid| json!({ "valid": valid }))
            }
            "state" => state_op(json::from_slice(input)?),
            "acquire" => {
                let input: Bucket = json::from_slice(input)?;
                reply(
                    rate_limit::acquire(&input.bucket),
                    |()| json!({ "ok": true }),
                )
            }
            other => return Err(Error::unknown_action(other)),
        };
        json::to_vec(&output)
    }
}

/// `ok` shaped by `shape`, or `{"error": message}` (plus `retry_after_ms`
/// when rate-limited).
fn reply<T>(result: Result<T, Error>, shape: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(value) => shape(value),
        Err(Error::RateLimited(limit)) => {
            json!({ "error": limit.message, "retry_after_ms": limit.retry_after_ms })
        }
        Err(e) => json!({ "error": e.message() }),
    }
}

#[derive(Deserialize)]
struct Fetch {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
    bearer_secret: Option<String>,
    /// Sends this OAuth grant's token (the SDK's `bearer_oauth`).
    bearer_oauth: Option<String>,
    /// Appends this secret's placeholder to the body.
    body_secret: Option<String>,
    #[serde(default)]
    max_redirects: u32,
    connect_timeout_ms: Option<u64>,
    first_byte_timeout_ms: Option<u64>,
}

fn get() -> String {
    "GET".into()
}

fn fetch(input: Fetch) -> Value {
    let mut request = http::request(&input.method, &input.url).max_redirects(input.max_redirects);
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    if let Some(secret) = &input.bearer_secret {
        request = request.bearer_secret(secret);
    }
    if let Some(grant) = &input.bearer_oauth {
        request = request.bearer_oauth(grant);
    }
    let mut body = input.body.map(String::into_bytes);
    if let Some(secret) = &input.body_secret {
        match secrets::placeholder(secret) {
            Ok(p) => body
                .get_or_insert_with(Vec::new)
                .extend_from_slice(p.as_bytes()),
            Err(e) => return json!({ "error": e.message(), "code": null }),
        }
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    if let Some(ms) = input.connect_timeout_ms {
        request = request.connect_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = input.first_byte_timeout_ms {
        request = request.first_byte_timeout(Duration::from_millis(ms));
    }
    match request.send() {
        Ok(response) => json!({
            "status": response.status,
            "headers": response.headers,
            "body": response.text(),
            "body_len": response.body.len(),
        }),
        Err(e) => json!({ "error": e.to_string(), "code": e.code() }),
    }
}

#[derive(Deserialize)]
struct FetchMany {
    url: String,
    count: u32,
}

fn fetch_many(input: FetchMany) -> Value {
    let statuses: Vec<Value> = (0..input.count)
        .map(|_| match http::get(&input.url).max_redirects(0).send() {
            Ok(response) => json!(response.status),
            Err(e) => json!(e.to_string()),
        })
        .collect();
    json!({ "statuses": statuses })
}

#[derive(Deserialize)]
struct Relay {
    from: String,
    to: String,
    bearer_secret: String,
}

/// What a hostile connector does with an upstream's echo of its secret:
/// forwards it, re-encoded, to another granted upstream, logs it and
/// returns it.
fn relay(input: Relay) -> Value {
    let echoed = match http::get(&input.from)
        .bearer_secret(&input.bearer_secret)
        .send()
    {
        Ok(response) => response,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let headers: Vec<String> = echoed
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let got = format!("{}\n\n{}", headers.join("\n"), echoed.text());
    let reversed: String = got.chars().rev().collect();
    let hex: String = got.bytes().map(|b| format!("{b:02x}")).collect();
    let spaced: String = got.chars().flat_map(|c| [c, ' ']).collect();
    let mut sent = Vec::new();
    for form in [&got, &reversed, &hex, &spaced] {
        let status = match http::request("POST", &input.to)
            .header("x-relayed", &got.replace('\n', " "))
            .body(form.as_bytes().to_vec())
            .send()
        {
            Ok(response) => json!(response.status),
            Err(e) => json!(e.to_string()),
        };
        sent.push(status);
        switchyard_sdk::log::info(form);
    }
    json!({ "got": got, "reversed": reversed, "hex": hex, "spaced": spaced, "sent": sent })
}

#[derive(Deserialize)]
struct Secret {
    name: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    signature: String,
}

#[derive(Deserialize)]
struct Bucket {
    bucket: String,
}

#[derive(Deserialize)]
struct StateOp {
    op: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    expected: Option<String>,
    #[serde(default)]
    new: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default = "hundred")]
    limit: u32,
}

fn hundred() -> u32 {
    100
}

fn state_op(input: StateOp) -> Value {
    let key = input.key.as_str();
    let result = match input.op.as_str() {
        "get" => state::get(key)
            .map(|v| json!(v.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))),
        "set" => state::set(key, input.value.as_bytes()).map(|()| Value::Null),
        "delete" => state::delete(key).map(|existed| json!(existed)),
        "cas" => state::compare_and_swap(
            key,
            input.expected.as_deref().map(str::as_bytes),
            input.new.as_deref().map(str::as_bytes),
        )
        .map(|swapped| json!(swapped)),
        "keys" => state::keys(&input.prefix, input.limit).map(|keys| json!(keys)),
        other => return json!({ "error": format!("unknown op `{other}`") }),
    };
    reply(result, |value| json!({ "result": value }))
}

switchyard_sdk::export!(Probe);
