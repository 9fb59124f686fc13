//! Why a request failed, and what that means for the host's retry logic.

use super::Response;
use crate::bindings::wasi::http::types::ErrorCode;
use std::fmt;

/// A failed request: the host or network refused it (a wasi:http
/// `error-code`), [`Response::error_for_status`] rejected its status, or it
/// could not be built or decoded.
///
/// Displays as the `error-code` case name spelled exactly as in the WIT
/// (`HTTP-request-denied`, `destination-IP-prohibited`,
/// `connection-timeout`, `internal-error`; payloads are not shown), as
/// `status 404` for a rejected status, or as a sentence otherwise.
#[derive(Debug)]
pub struct Error(Kind);

#[derive(Debug)]
enum Kind {
    Transport(ErrorCode),
    Status(Box<Response>),
    Invalid(String),
}

impl Error {
    /// The wasi:http `error-code` case name of a transport failure, as
    /// displayed; `None` for status and other errors.
    pub fn code(&self) -> Option<&'static str> {
        match &self.0 {
            Kind::Transport(code) => Some(code_name(code)),
            _ => None,
        }
    }

    /// The status rejected by [`Response::error_for_status`].
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    /// The response rejected by [`Response::error_for_status`], to read
    /// the upstream's explanation from its body.
    pub fn response(&self) -> Option<&Response> {
        match &self.0 {
            Kind::Status(response) => Some(response),
            _ => None,
        }
    }

    pub(super) fn transport(code: ErrorCode) -> Self {
        Error(Kind::Transport(code))
    }

    pub(super) fn status_of(response: Response) -> Self {
        Error(Kind::Status(Box::new(response)))
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Error(Kind::Invalid(message.into()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Transport(code) => f.write_str(code_name(code)),
            Kind::Status(response) => write!(f, "status {}", response.status),
            Kind::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// 429 → rate-limited (with `retry-after` seconds as milliseconds); 5xx,
/// timeouts and connection failures → retryable; denials, other 4xx and
/// everything else → permanent.
impl From<Error> for crate::Error {
    fn from(error: Error) -> Self {
        match &error.0 {
            Kind::Status(response) if response.status == 429 => {
                let retry_after_ms = response
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|seconds| seconds.saturating_mul(1000));
                let who = match response.header("x-switchyard-rate-limited") {
                    Some(bucket) => format!("the host's rate limit `{bucket}`"),
                    None => "the upstream".to_owned(),
                };
                crate::Error::rate_limited(format!("throttled by {who} (429)"), retry_after_ms)
            }
            Kind::Status(response) if response.status >= 500 => {
                crate::Error::retryable(format!("upstream answered status {}", response.status))
            }
            Kind::Status(response) => {
                crate::Error::permanent(format!("upstream answered status {}", response.status))
            }
            Kind::Transport(code) => {
                let mut message = format!("HTTP request failed: {error}");
                if let ErrorCode::InternalError(Some(detail)) = code {
                    message = format!("{message}: {detail}");
                }
                if is_transient(code) {
                    crate::Error::retryable(message)
                } else {
                    crate::Error::permanent(message)
                }
            }
            Kind::Invalid(message) => crate::Error::permanent(message.clone()),
        }
    }
}

/// Timeouts and connection failures; denials, size limits, TLS and
/// protocol errors will repeat.
fn is_transient(code: &ErrorCode) -> bool {
    use ErrorCode::*;
    matches!(
        code,
        DnsTimeout
            | DnsError(_)
            | DestinationUnavailable
            | ConnectionRefused
            | ConnectionTerminated
            | ConnectionTimeout
            | ConnectionReadTimeout
            | ConnectionWriteTimeout
            | ConnectionLimitReached
            | HttpResponseIncomplete
            | HttpResponseTimeout
            | InternalError(_)
    )
}

/// The case name as written in wasi:http's WIT.
fn code_name(code: &ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        DnsTimeout => "DNS-timeout",
        DnsError(_) => "DNS-error",
        DestinationNotFound => "destination-not-found",
        DestinationUnavailable => "destination-unavailable",
        DestinationIpProhibited => "destination-IP-prohibited",
        DestinationIpUnroutable => "destination-IP-unroutable",
        ConnectionRefused => "connection-refused",
        ConnectionTerminated => "connection-terminated",
        ConnectionTimeout => "connection-timeout",
        ConnectionReadTimeout => "connection-read-timeout",
        ConnectionWriteTimeout => "connection-write-timeout",
        ConnectionLimitReached => "connection-limit-reached",
        TlsProtocolError => "TLS-protocol-error",
        TlsCertificateError => "TLS-certificate-error",
        TlsAlertReceived(_) => "TLS-alert-received",
        HttpRequestDenied => "HTTP-request-denied",
        HttpRequestLengthRequired => "HTTP-request-length-required",
        HttpRequestBodySize(_) => "HTTP-request-body-size",
        HttpRequestMethodInvalid => "HTTP-request-method-invalid",
        HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        HttpRequestUriTooLong => "HTTP-request-URI-too-long",
        HttpRequestHeaderSectionSize(_) => "HTTP-request-header-section-size",
        HttpRequestHeaderSize(_) => "HTTP-request-header-size",
        HttpRequestTrailerSectionSize(_) => "HTTP-request-trailer-section-size",
        HttpRequestTrailerSize(_) => "HTTP-request-trailer-size",
        HttpResponseIncomplete => "HTTP-response-incomplete",
        HttpResponseHeaderSectionSize(_) => "HTTP-response-header-section-size",
        HttpResponseHeaderSize(_) => "HTTP-response-header-size",
        HttpResponseBodySize(_) => "HTTP-response-body-size",
        HttpResponseTrailerSectionSize(_) => "HTTP-response-trailer-section-size",
        HttpResponseTrailerSize(_) => "HTTP-response-trailer-size",
        HttpResponseTransferCoding(_) => "HTTP-response-transfer-coding",
        HttpResponseContentCoding(_) => "HTTP-response-content-coding",
        HttpResponseTimeout => "HTTP-response-timeout",
        HttpUpgradeFailed => "HTTP-upgrade-failed",
        HttpProtocolError => "HTTP-protocol-error",
        LoopDetected => "loop-detected",
        ConfigurationError => "configuration-error",
        InternalError(_) => "internal-error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, headers: &[(&str, &str)]) -> crate::Error {
        let response = Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
        };
        response.error_for_status().unwrap_err().into()
    }

    #[test]
    fn displays_wit_case_names() {
        let denied = Error::transport(ErrorCode::HttpRequestDenied);
        assert_eq!(denied.to_string(), "HTTP-request-denied");
        assert_eq!(denied.code(), Some("HTTP-request-denied"));
        let body = Error::transport(ErrorCode::HttpResponseBodySize(Some(10)));
        assert_eq!(body.to_string(), "HTTP-response-body-size");
        assert_eq!(
            Error::transport(ErrorCode::DestinationIpProhibited).to_string(),
            "destination-IP-prohibited"
        );
        assert_eq!(Error::invalid("bad url").code(), None);
    }

    #[test]
    fn a_host_429_pauses_for_retry_after() {
        let error = status(
            429,
            &[("Retry-After", "3"), ("x-switchyard-rate-limited", "api")],
        );
        let crate::Error::RateLimited(limit) = error else {
            panic!("{error:?}")
        };
        assert_eq!(limit.retry_after_ms, Some(3000));
        assert!(limit.message.contains("`api`"), "{}", limit.message);
        let crate::Error::RateLimited(limit) = status(429, &[("retry-after", "soon")]) else {
            panic!()
        };
        assert_eq!(limit.retry_after_ms, None);
    }

    #[test]
    fn classifies_for_retries() {
        assert!(matches!(status(503, &[]), crate::Error::Retryable(_)));
        assert!(matches!(status(404, &[]), crate::Error::Permanent(m) if m.contains("404")));
        let timeout: crate::Error = Error::transport(ErrorCode::ConnectionTimeout).into();
        assert!(matches!(timeout, crate::Error::Retryable(_)));
        let denied: crate::Error = Error::transport(ErrorCode::HttpRequestDenied).into();
        assert!(matches!(denied, crate::Error::Permanent(m) if m.contains("HTTP-request-denied")));
        let internal: crate::Error =
            Error::transport(ErrorCode::InternalError(Some("boom".into()))).into();
        assert!(
            matches!(internal, crate::Error::Retryable(m) if m.ends_with("internal-error: boom"))
        );
    }

    #[test]
    fn success_passes_error_for_status() {
        let ok = Response {
            status: 302,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert!(ok.error_for_status().is_ok());
    }
}
