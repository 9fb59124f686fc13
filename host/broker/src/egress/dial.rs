//! One attempt at the network: resolve the name, refuse any forbidden
//! address, connect to a checked one (never a second DNS answer), then
//! TLS and the HTTP exchange under the connect and first-byte timeouts.

use super::*;

impl Egress {
    pub(super) async fn attempt(&self, req: &Prepared) -> Result<Response<Full<Bytes>>, Failure> {
        let addrs = self.resolve_checked(&req.dest, req.connect).await?;
        let tcp = self.connect(&addrs, req).await?;
        let stream: Box<dyn Stream> = if req.dest.scheme == "https" {
            let name = match req.dest.ip() {
                Some(ip) => rustls::pki_types::ServerName::from(ip),
                None => rustls::pki_types::ServerName::try_from(req.dest.host()).map_err(|e| {
                    Failure::new(HttpError::HttpRequestUriInvalid, format!("TLS name: {e}"))
                })?,
            };
            let tls = tokio_rustls::TlsConnector::from(self.network.tls.clone());
            let handshake = tokio::time::timeout(req.connect, tls.connect(name, tcp));
            match handshake.await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => return Err(Failure::new(HttpError::TlsProtocolError, e.to_string())),
                Err(_) => {
                    return Err(Failure::transient(
                        HttpError::ConnectionTimeout,
                        "TLS handshake timed out",
                    ));
                }
            }
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::transient(HttpError::HttpProtocolError, e.to_string()))?;
        // Drives the connection; aborted when this attempt ends, so a
        // hung upstream cannot keep a socket open.
        let driver = AbortOnDrop(tokio::spawn(connection));
        let mut request = Request::builder()
            .method(req.method.clone())
            .uri(req.uri.path_and_query().map_or("/", |p| p.as_str()))
            .body(Full::new(req.body.clone()))
            .map_err(|e| Failure::new(HttpError::HttpRequestUriInvalid, e.to_string()))?;
        *request.headers_mut() = req.headers.clone();
        let response = tokio::time::timeout(req.first_byte, sender.send_request(request))
            .await
            .map_err(|_| {
                Failure::transient(
                    HttpError::ConnectionReadTimeout,
                    format!(
                        "no response headers within {} ms (limits.http_first_byte_timeout_ms)",
                        req.first_byte.as_millis()
                    ),
                )
            })?
            .map_err(|e| Failure::transient(HttpError::HttpProtocolError, e.to_string()))?;
        let (parts, body) = response.into_parts();
        let encoded = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        if req.carries_credentials && encoded {
            return Err(Failure::new(
                HttpError::HttpProtocolError,
                "the upstream answered a request carrying a credential with a compressed body although `identity` was asked for; such an answer cannot be checked for echoed credentials, so it is not handed over",
            ));
        }
        let body = Limited::new(body, self.limits.response_bytes)
            .collect()
            .await
            .map_err(|err| {
                if err.downcast_ref::<LengthLimitError>().is_some() {
                    Failure::new(
                        HttpError::HttpResponseBodySize(Some(self.limits.response_bytes as u64)),
                        format!(
                            "response body over {} bytes (limits.http_response_bytes)",
                            self.limits.response_bytes
                        ),
                    )
                } else {
                    Failure::transient(HttpError::HttpResponseIncomplete, err.to_string())
                }
            })?
            .to_bytes();
        drop(driver);
        let (parts, body) = self.scrubbed(parts, body);
        Ok(Response::from_parts(parts, Full::new(body)))
    }

    /// The answer with every secret value of the connection (raw or
    /// encoded) replaced, in headers and body, before the guest sees it.
    fn scrubbed(
        &self,
        mut parts: http::response::Parts,
        body: Bytes,
    ) -> (http::response::Parts, Bytes) {
        if self.redactor.is_empty() {
            return (parts, body);
        }
        for value in parts.headers.values_mut() {
            if self.redactor.finds(value.as_bytes()) {
                let clean = self.redactor.redact_bytes(value.as_bytes());
                *value = HeaderValue::from_bytes(&clean).expect("redacting keeps a header valid");
            }
        }
        if !self.redactor.finds(&body) {
            return (parts, body);
        }
        let body = Bytes::from(self.redactor.redact_bytes(&body));
        if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        (parts, body)
    }

    /// Resolves `dest` and checks every address: one forbidden answer
    /// refuses the request, so a name cannot mix a public and a private
    /// address and win a race.
    async fn resolve_checked(
        &self,
        dest: &Destination,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>, Failure> {
        let addrs = match dest.ip() {
            Some(ip) => vec![ip],
            None => {
                let host = dest.host();
                match tokio::time::timeout(timeout, self.network.resolver.resolve(&host)).await {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(e)) => {
                        return Err(Failure::new(
                            HttpError::DnsError {
                                rcode: Some(e.to_string()),
                                info_code: None,
                            },
                            format!("cannot resolve {host}: {e}"),
                        ));
                    }
                    Err(_) => {
                        return Err(Failure::transient(HttpError::DnsTimeout, "DNS timed out"));
                    }
                }
            }
        };
        if addrs.is_empty() {
            return Err(Failure::new(
                HttpError::DestinationNotFound,
                format!("{} has no addresses", dest.host()),
            ));
        }
        for ip in &addrs {
            self.rights
                .egress()
                .check_addr(dest, *ip)
                .map_err(|denied| {
                    Failure::new(HttpError::DestinationIpProhibited, denied.to_string())
                })?;
        }
        Ok(addrs)
    }

    async fn connect(&self, addrs: &[IpAddr], req: &Prepared) -> Result<TcpStream, Failure> {
        let mut last = String::new();
        for ip in addrs {
            let addr = SocketAddr::new(*ip, req.dest.port);
            match tokio::time::timeout(req.connect, self.network.dialer.dial(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    return Err(Failure::transient(
                        HttpError::ConnectionTimeout,
                        format!(
                            "connecting to {addr} took over {} ms (limits.http_connect_timeout_ms)",
                            req.connect.as_millis()
                        ),
                    ));
                }
            }
        }
        Err(Failure::transient(HttpError::ConnectionRefused, last))
    }
}

pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
