//! A small blocking HTTP client over the host's `wasi:http/outgoing-handler`.
//!
//! The host checks every request, each redirect hop included, against the
//! connection's egress grants (allow-list, private addresses, rate limits)
//! and swaps secret placeholders for their values on the way out. A refusal
//! or network failure is an [`Error`] whose [`code`](Error::code) is the
//! wasi:http `error-code` (`HTTP-request-denied`, `connection-timeout`…),
//! never a trap. When a host rate limit is exhausted the host answers `429`
//! itself, with `retry-after` (seconds) and `x-switchyard-rate-limited:
//! <bucket>`; [`Response::error_for_status`] then converts to
//! [`crate::Error::RateLimited`] through `?`.
//!
//! ```no_run
//! use switchyard_sdk::{Error, http, json};
//!
//! fn me() -> Result<json::Value, Error> {
//!     let response = http::get("https://api.example.com/v1/me")
//!         .bearer_secret("api-token") // authorization: Bearer <placeholder>
//!         .send()?
//!         .error_for_status()?; // 4xx/5xx become errors too
//!     Ok(response.json()?)
//! }
//! ```

mod error;
mod url;
mod wire;

pub use error::Error;
pub use url::encode_component;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use url::Url;

/// A `GET` request to `url`.
pub fn get(url: &str) -> RequestBuilder {
    request("GET", url)
}

/// A `POST` request to `url`.
pub fn post(url: &str) -> RequestBuilder {
    request("POST", url)
}

/// A request with any `method` (sent uppercase) to the absolute `url`.
pub fn request(method: &str, url: &str) -> RequestBuilder {
    RequestBuilder {
        method: method.to_ascii_uppercase(),
        url: url.to_owned(),
        headers: Vec::new(),
        body: None,
        timeouts: wire::Timeouts::default(),
        max_redirects: 5,
        problem: None,
    }
}

/// A request being built; [`send`](RequestBuilder::send) sends it. Defaults:
/// no headers, no body, the host's timeouts, up to 5 redirects.
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeouts: wire::Timeouts,
    max_redirects: u32,
    /// The first builder step that failed; `send` reports it.
    problem: Option<Error>,
}

impl RequestBuilder {
    /// Adds a header (duplicates allowed).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `authorization: Bearer <placeholder of secret_name>`. The host
    /// substitutes the value at egress, only for destinations the secret is
    /// bound to; the value never enters the connector. A secret that is
    /// not granted fails at [`send`](RequestBuilder::send).
    pub fn bearer_secret(self, secret_name: &str) -> Self {
        match crate::secrets::placeholder(secret_name) {
            Ok(placeholder) => self.set_header("authorization", &format!("Bearer {placeholder}")),
            Err(e) => self.fail(e.message().to_owned()),
        }
    }

    /// `Authorization: Bearer {{oauth:GRANT}}`: the host puts in a current
    /// access token of the connection's OAuth grant `grant` on the way
    /// out, only for destinations the grant is bound to. The connector
    /// never holds the token (list `grant` under `oauth` in the manifest).
    pub fn bearer_oauth(self, grant: &str) -> Self {
        self.set_header("authorization", &format!("Bearer {{{{oauth:{grant}}}}}"))
    }

    /// Sets the body, sent as is.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(bytes.into());
        self
    }

    /// Sets the body to `value` as JSON and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self
                .body(bytes)
                .set_header("content-type", "application/json"),
            Err(e) => self.fail(format!("cannot encode the JSON body: {e}")),
        }
    }

    /// Bounds connecting. Default: the host's limit.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = Some(timeout);
        self
    }

    /// Bounds the wait for the first response byte. Default: the host's limit.
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.first_byte = Some(timeout);
        self
    }

    /// Follows at most `n` redirects (default 5; 0 returns 3xx responses
    /// as they are). Past the limit, the last redirect response is returned.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.max_redirects = n;
        self
    }

    /// Sends the request, following redirects, and reads the whole
    /// response. An error status is still `Ok`; see
    /// [`Response::error_for_status`].
    ///
    /// Each redirect (301, 302, 303, 307, 308 with a `location`) is a new
    /// request the host checks again. 303, and 301/302 after a `POST`,
    /// continue as `GET` without the body; a hop to another origin drops
    /// `authorization`.
    pub fn send(self) -> Result<Response, Error> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        let mut request = Request {
            method: self.method,
            url: Url::parse(&self.url).map_err(Error::invalid)?,
            headers: self.headers,
            body: self.body,
        };
        let mut redirects = 0;
        loop {
            let response = wire::send(&request, &self.timeouts)?;
            match response.header("location") {
                Some(location)
                    if is_redirect(response.status) && redirects < self.max_redirects =>
                {
                    request.redirect(response.status, location)?;
                    redirects += 1;
                }
                _ => return Ok(response),
            }
        }
    }

    fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    fn fail(mut self, message: String) -> Self {
        self.problem.get_or_insert(Error::invalid(message));
        self
    }
}

/// One hop of a request, as [`wire::send`] sends it.
#[derive(Debug)]
struct Request {
    method: String,
    url: Url,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// Turns `self` into the request that follows a `status` redirect to
    /// `location`, the way browsers do.
    fn redirect(&mut self, status: u16, location: &str) -> Result<(), Error> {
        let next = self.url.join(location).map_err(Error::invalid)?;
        if status == 303 || (matches!(status, 301 | 302) && self.method == "POST") {
            if self.method != "HEAD" {
                self.method = "GET".to_owned();
            }
            self.body = None;
            self.headers.retain(|(name, _)| !is_body_header(name));
        }
        // The host would not send the secret elsewhere, but the placeholder
        // has no business there either.
        if !next.same_origin(&self.url) {
            self.headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        }
        self.url = next;
        Ok(())
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn is_body_header(name: &str) -> bool {
    ["content-type", "content-length", "content-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// In the order received; names as the host gives them (lowercase).
    pub headers: Vec<(String, String)>,
    /// The whole body, read to the end.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid(format!("response is not the expected JSON: {e}")))
    }

    /// `self` if the status is below 400, else an [`Error`] holding it.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.status >= 400 {
            Err(Error::status_of(self))
        } else {
            Ok(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post_to(url: &str) -> Request {
        Request {
            method: "POST".into(),
            url: Url::parse(url).unwrap(),
            headers: vec![
                ("authorization".into(), "Bearer x".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Some(b"{}".to_vec()),
        }
    }

    fn names(request: &Request) -> Vec<&str> {
        request.headers.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn see_other_and_post_redirects_become_get() {
        for status in [301, 302, 303] {
            let mut request = post_to("https://h/a/b");
            request.redirect(status, "c").unwrap();
            assert_eq!(request.method, "GET");
            assert_eq!(request.body, None);
            assert_eq!(request.url.to_string(), "https://h/a/c");
            assert_eq!(names(&request), ["authorization"]);
        }
    }

    #[test]
    fn temporary_and_permanent_redirects_keep_method_and_body() {
        for status in [307, 308] {
            let mut request = post_to("https://h/a");
            request.redirect(status, "/b").unwrap();
            assert_eq!(request.method, "POST");
            assert_eq!(request.body.as_deref(), Some(&b"{}"[..]));
            assert_eq!(names(&request), ["authorization", "content-type"]);
        }
    }

    #[test]
    fn another_origin_gets_no_authorization() {
        let mut request = post_to("https://h/a");
        request.redirect(307, "https://elsewhere/b").unwrap();
        assert_eq!(names(&request), ["content-type"]);
        assert!(request.redirect(307, "nope://").is_err());
    }

    #[test]
    fn builder_failures_wait_for_send() {
        // JSON object keys must be strings.
        let unencodable = std::collections::BTreeMap::from([(vec![1u8], 1)]);
        let request = get("https://h/").json(&unencodable);
        let error = request.send().unwrap_err();
        assert!(error.to_string().contains("JSON"), "{error}");
        assert_eq!(error.code(), None);
    }
}
