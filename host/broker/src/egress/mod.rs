//! The egress path. Every outbound request of every guest leaves through
//! [`Egress::send`], which applies the connection's policy in one place:
//!
//! 1. the URL must be both requested and granted (scheme, host, port);
//! 2. secret placeholders become values only for destinations they are
//!    bound to, in headers and (where granted) bodies;
//! 3. rate-limit buckets pacing the destination hand out a permit, and an
//!    upstream's `Retry-After` pause is honoured;
//! 4. the host resolves the name itself, refuses the request if any address
//!    is forbidden, and connects to an address it checked, so a second DNS
//!    answer cannot rebind the request;
//! 5. timeouts and size caps bound the exchange; idempotent requests are
//!    retried with exponential backoff and jitter when the grant asks.
//!
//! Redirects go back to the guest, never followed here: a client that
//! follows one sends a new request through every check again. Proxy
//! environment variables are ignored: nothing here reads them.

use crate::capabilities::EffectiveRights;
use crate::oauth::ConnectionOAuth;
use crate::observe::{BrokerEvent, BrokerObserver, BrokerUse, EgressEvent};
use crate::policy::Destination;
use crate::rate::{ConnectionRateLimits, RateLimitGrant, RateLimited, RateLimiter};
use crate::secrets::{ConnectionSecrets, Redactor, SecretValue};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

mod dial;
mod host_request;
mod malformed;
mod network;
mod prepare;
mod retry;
mod tokens;

pub use network::{
    BoxFuture, Dialer, DirectDialer, Network, Resolver, StaticResolver, SystemResolver,
    tls_client_config,
};
pub use retry::RetryGrant;

use retry::{is_idempotent, retry_after};

/// The limits every request of a connection runs under. The sandbox
/// derives them from its `Limits` (`http_*_timeout_ms`, `http_*_bytes`,
/// `rate_limit_wait_ms`, `http_destination_per_second`).
#[derive(Debug, Clone)]
pub struct EgressLimits {
    /// Longest wait for a TCP (and TLS) connection.
    pub connect: Duration,
    /// Longest wait for the response head after the request is sent.
    pub first_byte: Duration,
    /// Longest a whole exchange may take, retries included.
    pub total: Duration,
    /// Largest request body sent.
    pub request_bytes: usize,
    /// Largest response body read.
    pub response_bytes: usize,
    /// Longest wait for a rate-limit permit.
    pub rate_wait: Duration,
    /// Requests per second to any one destination (0: unpaced).
    pub destination_per_second: u32,
    /// Request and response body bytes one invocation may move, all its
    /// requests together (0: unbounded). Once spent, further requests
    /// are refused; the exchange that spends it completes, so one
    /// invocation moves at most this plus one request's and response's
    /// caps.
    pub invocation_bytes: u64,
    /// Requests per second one connection may send to one destination,
    /// within the plugin's `destination_per_second` (0: no share).
    pub connection_destination_per_second: u32,
}

/// One connection's way out.
pub struct Egress {
    plugin: Arc<str>,
    version: Arc<str>,
    connection: Arc<str>,
    observer: Option<Arc<dyn BrokerObserver>>,
    rights: EffectiveRights,
    secrets: Arc<ConnectionSecrets>,
    /// Scrubs the connection's secret values from every answer before the
    /// guest sees it (an upstream may echo what it was sent).
    redactor: Redactor,
    rate_limits: Arc<ConnectionRateLimits>,
    retry: Option<RetryGrant>,
    limits: EgressLimits,
    network: Network,
    /// OAuth grants whose tokens replace `{{oauth:NAME}}` in headers.
    oauth: ConnectionOAuth,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Why a request did not complete: the code the guest sees, and the reason
/// the operator reads in the log.
struct Failure {
    code: HttpError,
    reason: String,
    retryable: bool,
}

impl Failure {
    fn new(code: HttpError, reason: impl Into<String>) -> Self {
        Failure {
            code,
            reason: reason.into(),
            retryable: false,
        }
    }

    fn transient(code: HttpError, reason: impl Into<String>) -> Self {
        Failure {
            retryable: true,
            ..Failure::new(code, reason)
        }
    }
}

/// Everything about a request except its body, reusable across attempts.
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    dest: Destination,
    connect: Duration,
    first_byte: Duration,
    /// Headers holding `{{oauth:NAME}}` placeholders, by index into
    /// `headers`, as the guest wrote them: a retry after a 401 puts in a
    /// new token.
    token_templates: Vec<(http::HeaderName, HeaderValue)>,
    /// The tokens put in, by grant.
    tokens: Vec<(String, SecretValue)>,
    /// Whether a secret or token was put in: the answer must then be one
    /// the redactor can read (see [`prepare::answers_in_plain`]).
    carries_credentials: bool,
}

impl Egress {
    /// The egress of a connection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plugin: Arc<str>,
        connection: Arc<str>,
        rights: EffectiveRights,
        secrets: Arc<ConnectionSecrets>,
        rate_limits: Arc<ConnectionRateLimits>,
        retry: Option<RetryGrant>,
        limits: EgressLimits,
        network: Network,
    ) -> Self {
        Egress {
            version: "unknown".into(),
            plugin,
            connection,
            observer: None,
            rights,
            redactor: secrets.redactor(),
            secrets,
            rate_limits,
            retry,
            limits,
            network,
            oauth: ConnectionOAuth::default(),
        }
    }

    /// Puts access tokens of `oauth`'s grants in for `{{oauth:NAME}}`, and
    /// redacts every token those grants hand out. Default: no grants.
    pub fn with_oauth(mut self, oauth: ConnectionOAuth) -> Self {
        if let Some(source) = &oauth.source {
            self.redactor = self.redactor.with_live(source.live_values());
        }
        self.oauth = oauth;
        self
    }

    /// Reports every request and brokered use to `observer`, naming the
    /// plugin at `version`. Default: no observer.
    pub fn observed(
        mut self,
        observer: Option<Arc<dyn BrokerObserver>>,
        version: Arc<str>,
    ) -> Self {
        self.observer = observer;
        self.version = version;
        self
    }

    fn broker(&self, invocation: u64, use_: BrokerUse<'_>) {
        if let Some(observer) = &self.observer {
            observer.broker(&BrokerEvent {
                plugin: &self.plugin,
                version: &self.version,
                connection: &self.connection,
                invocation,
                use_,
            });
        }
    }

    /// An egress that denies everything (used while describing a plugin).
    pub fn deny_all(plugin: Arc<str>, limits: EgressLimits) -> Self {
        Egress::new(
            plugin.clone(),
            plugin,
            EffectiveRights::default(),
            Arc::default(),
            Arc::default(),
            None,
            limits,
            Network::default(),
        )
    }

    /// `text` (a URL, a reason) with the connection's secret values
    /// scrubbed, for a log line.
    pub fn redacted(&self, text: &str) -> String {
        self.redactor.redact(text).into_owned()
    }

    /// Sends `request` under the connection's policy, adding the body
    /// bytes it moved to `spent`, the invocation's running total (see
    /// [`EgressLimits::invocation_bytes`]). Denials and failures come back
    /// as a wasi:http error code; the reason goes to the log.
    pub async fn send(
        &self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        invocation: u64,
        spent: &AtomicU64,
    ) -> Result<Response<WasiBody>, HttpError> {
        let started = Instant::now();
        let method = request.method().clone();
        // Logged and reported: a guest may have put a secret's value in it.
        let url = self
            .redactor
            .redact(&request.uri().to_string())
            .into_owned();
        let progress = Progress::default();
        let budget = self.limits.invocation_bytes;
        let outcome = if budget > 0 && spent.load(Ordering::Relaxed) >= budget {
            Err(Failure::new(
                HttpError::HttpRequestDenied,
                format!(
                    "this invocation already moved its {budget} body bytes (limits.http_bytes_per_invocation)"
                ),
            ))
        } else {
            let exchange = self.exchange(request, options, invocation, &progress);
            tokio::time::timeout(self.limits.total, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        HttpError::HttpResponseTimeout,
                        format!(
                            "no complete answer within {} ms (limits.http_total_timeout_ms)",
                            self.limits.total.as_millis()
                        ),
                    ))
                })
        };
        let moved_in = match &outcome {
            Ok(response) => hyper::body::Body::size_hint(response.body()).lower(),
            Err(_) => 0,
        };
        spent.fetch_add(
            progress.bytes_out.load(Ordering::Relaxed) + moved_in,
            Ordering::Relaxed,
        );
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        if let Some(observer) = &self.observer {
            let fallback;
            let destination = match progress.destination.get() {
                Some(checked) => checked.as_str(),
                None => {
                    fallback = origin(&url);
                    fallback.as_str()
                }
            };
            let reason = outcome
                .as_ref()
                .err()
                .map(|failure| self.redactor.redact(&failure.reason));
            let (status, bytes_in) = match &outcome {
                Ok(response) => {
                    let size = hyper::body::Body::size_hint(response.body());
                    (Some(response.status().as_u16()), size.lower())
                }
                Err(_) => (None, 0),
            };
            let error = reason.as_deref();
            observer.egress(&EgressEvent {
                plugin: &self.plugin,
                version: &self.version,
                connection: &self.connection,
                invocation,
                method: method.as_str(),
                destination,
                granted: progress.destination.get().is_some(),
                status,
                error,
                bytes_out: progress.bytes_out.load(Ordering::Relaxed),
                bytes_in,
                attempts: progress.attempts.load(Ordering::Relaxed),
                elapsed,
            });
        }
        match outcome {
            Ok(response) => {
                tracing::info!(
                    target: "switchyard::egress",
                    plugin = &*self.plugin,
                    connection = &*self.connection,
                    invocation,
                    %method,
                    url,
                    status = response.status().as_u16(),
                    elapsed_ms,
                    "outbound request"
                );
                Ok(response.map(|body| body.map_err(|never| match never {}).boxed_unsync()))
            }
            Err(failure) => {
                tracing::warn!(
                    target: "switchyard::egress",
                    plugin = &*self.plugin,
                    connection = &*self.connection,
                    invocation,
                    %method,
                    url,
                    code = %failure.code,
                    reason = %self.redactor.redact(&failure.reason),
                    elapsed_ms,
                    "outbound request refused or failed"
                );
                Err(failure.code)
            }
        }
    }

    async fn exchange(
        &self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        invocation: u64,
        progress: &Progress,
    ) -> Result<Response<Full<Bytes>>, Failure> {
        let mut prepared = self.prepare(request, options, invocation, progress).await?;
        if let Some(refused) = self.pace(&prepared.dest, invocation).await {
            return Ok(refused);
        }
        if let Err(answer) = self.put_tokens(&mut prepared, None, invocation).await {
            return Ok(answer);
        }
        let mut reauthorized = false;
        progress
            .bytes_out
            .store(prepared.body.len() as u64, Ordering::Relaxed);
        let retry = self
            .retry
            .clone()
            .filter(|_| is_idempotent(&prepared.method));
        let attempts = retry.as_ref().map_or(1, |r| r.attempts.max(1));
        let mut attempt = 1;
        loop {
            progress.attempts.fetch_add(1, Ordering::Relaxed);
            let result = self.attempt(&prepared).await;
            if let Ok(response) = &result {
                self.honour_retry_after(&prepared.dest, response);
                // A token the upstream refused: one forced refresh, and one
                // more try when repeating the request is safe.
                if response.status() == StatusCode::UNAUTHORIZED
                    && !prepared.tokens.is_empty()
                    && !reauthorized
                {
                    reauthorized = true;
                    let rejected = std::mem::take(&mut prepared.tokens);
                    if let Err(answer) = self
                        .put_tokens(&mut prepared, Some(&rejected), invocation)
                        .await
                    {
                        return Ok(answer);
                    }
                    if is_idempotent(&prepared.method) {
                        continue;
                    }
                }
            }
            let again = match &result {
                Ok(response) => {
                    response.status() == StatusCode::TOO_MANY_REQUESTS
                        || response.status().is_server_error()
                }
                Err(failure) => failure.retryable,
            };
            let Some(retry) = retry.as_ref().filter(|_| again && attempt < attempts) else {
                return result;
            };
            let wait = match &result {
                Ok(response) => retry_after(response).unwrap_or_default(),
                Err(_) => Duration::ZERO,
            };
            tokio::time::sleep(retry.delay(attempt).max(wait)).await;
            attempt += 1;
        }
    }

    /// Waits for the buckets pacing `dest` and any upstream pause; a
    /// synthesized 429 when that would take longer than the wait bound.
    async fn pace(&self, dest: &Destination, invocation: u64) -> Option<Response<Full<Bytes>>> {
        let destinations = &self.network.destinations;
        let per_destination =
            destinations.get(&self.plugin, dest, self.limits.destination_per_second);
        // The connection's share first: a connection past it waits on its
        // own bucket without spending its siblings' permits.
        let share = self.limits.connection_destination_per_second;
        let share = (share > 0 && share < self.limits.destination_per_second)
            .then(|| destinations.bucket(&self.plugin, &self.connection, dest, share));
        let buckets = (share.iter())
            .chain(std::iter::once(&per_destination))
            .chain(self.rate_limits.pacing(dest));
        for bucket in buckets {
            let started = Instant::now();
            let result = bucket.acquire(self.limits.rate_wait).await;
            let waited = match &result {
                Ok(waited) => *waited,
                Err(_) => started.elapsed(),
            };
            if result.is_err() || !waited.is_zero() {
                let use_ = BrokerUse::RateLimitWait {
                    bucket: bucket.name(),
                    waited,
                    refused: result.is_err(),
                };
                self.broker(invocation, use_);
            }
            if let Err(limited) = result {
                return Some(rate_limited(&limited));
            }
        }
        None
    }

    /// A 429 or 503 with `Retry-After` pauses the destination for the
    /// plugin and every bucket pacing it.
    fn honour_retry_after(&self, dest: &Destination, response: &Response<Full<Bytes>>) {
        let throttled = matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let Some(wait) = retry_after(response).filter(|_| throttled) else {
            return;
        };
        self.network
            .destinations
            .get(&self.plugin, dest, self.limits.destination_per_second)
            .pause_for(wait);
        for bucket in self.rate_limits.pacing(dest) {
            bucket.pause_for(wait);
        }
    }
}

/// What an exchange got to before it ended (or was cut off by the total
/// timeout), for its [`EgressEvent`].
#[derive(Default)]
struct Progress {
    /// The checked destination, once the URL passed the policy.
    destination: OnceLock<String>,
    bytes_out: AtomicU64,
    attempts: AtomicU32,
}

/// `scheme://host:port` of a URL the policy refused, without user info,
/// path or query.
fn origin(url: &str) -> String {
    let Ok(uri) = url.parse::<Uri>() else {
        return "invalid".into();
    };
    let scheme = uri.scheme_str().unwrap_or("none");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    format!("{scheme}://{}:{port}", uri.host().unwrap_or(""))
}

/// The answer a guest gets when a bucket has no permit in time: a normal
/// 429 with `Retry-After`, as an upstream would send.
fn rate_limited(limited: &RateLimited) -> Response<Full<Bytes>> {
    let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(http::header::RETRY_AFTER, seconds)
        .header("x-switchyard-rate-limited", limited.bucket.as_str())
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{limited}\n"))))
        .expect("static response parts are valid")
}
