//! One request/response exchange through the generated wasi:http bindings.
//!
//! wasi:http resources have parent/child lifetimes (a body's stream must be
//! dropped before the body is finished), so drops here are deliberate.

use super::{Error, Request, Response};
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, HeaderError, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use std::time::Duration;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;
/// How much to ask for per read; the host may return less.
const READ_CHUNK: u64 = 64 * 1024;

/// Per-request timeouts; `None` leaves the host's default.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
}

/// Sends one request (no redirects) and reads the whole response.
pub(super) fn send(request: &Request, timeouts: &Timeouts) -> Result<Response, Error> {
    let Request {
        method,
        url,
        headers,
        body,
    } = request;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| Error::invalid(format!("header `{name}` {}", header_problem(&e))))?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let scheme = match url.scheme.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    // Each part the host refuses is named, so the author sees which.
    let refused = |part: &str| {
        Error::invalid(format!(
            "cannot send {method} {url}: the host refused its {part}"
        ))
    };
    outgoing
        .set_method(&method_of(method))
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(&url.authority))
        .map_err(|()| refused("authority (host and port) as malformed"))?;
    outgoing
        .set_path_with_query(Some(&url.path_and_query))
        .map_err(|()| refused("path and query as malformed"))?;
    // The body handle must be taken before `handle` consumes the request.
    let outgoing_body = match body {
        Some(_) => Some(
            outgoing
                .body()
                .map_err(|()| Error::invalid("request body unavailable"))?,
        ),
        None => None,
    };
    let future =
        outgoing_handler::handle(outgoing, timeouts.options()?).map_err(Error::transport)?;
    if let (Some(outgoing_body), Some(bytes)) = (outgoing_body, body) {
        // A failed write means the host or server gave up on the request;
        // the response future says why, so only stop writing.
        let _ = write_body(outgoing_body, bytes);
    }
    read_response(wait(future)?)
}

impl Timeouts {
    fn options(&self) -> Result<Option<RequestOptions>, Error> {
        if self.connect.is_none() && self.first_byte.is_none() {
            return Ok(None);
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let options = RequestOptions::new();
        if let Some(timeout) = self.connect {
            options
                .set_connect_timeout(Some(nanos(timeout)))
                .map_err(|()| Error::invalid("the host does not support connect timeouts"))?;
        }
        if let Some(timeout) = self.first_byte {
            options
                .set_first_byte_timeout(Some(nanos(timeout)))
                .map_err(|()| Error::invalid("the host does not support first-byte timeouts"))?;
        }
        Ok(Some(options))
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), ()> {
    let stream = body.write()?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
    }
    drop(stream);
    OutgoingBody::finish(body, None).map_err(|_| ())
}

fn wait(future: FutureIncomingResponse) -> Result<IncomingResponse, Error> {
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(Error::transport(code)),
            Some(Err(())) => return Err(Error::invalid("response already taken")),
            None => future.subscribe().block(),
        }
    }
}

fn read_response(response: IncomingResponse) -> Result<Response, Error> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = response
        .consume()
        .map_err(|()| Error::invalid("response body already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| Error::invalid("response body already taken"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                let code = crate::bindings::wasi::http::types::http_error_code(&e);
                return Err(Error::transport(
                    code.unwrap_or(ErrorCode::HttpResponseIncomplete),
                ));
            }
        }
    }
    drop(stream);
    // Trailers are not read; finishing releases the body.
    drop(IncomingBody::finish(body));
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

fn header_problem(error: &HeaderError) -> &'static str {
    match error {
        HeaderError::InvalidSyntax => "is not valid",
        HeaderError::Forbidden => "may not be set by a connector",
        HeaderError::Immutable => "cannot be changed",
    }
}
