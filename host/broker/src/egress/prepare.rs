//! Preparing a guest's request: the URL against the policy, the body
//! within its cap, secret placeholders put in for bound destinations, and
//! refusals of credential values a guest should not hold.

use super::*;

impl Egress {
    /// Checks the URL, reads the body within its cap and substitutes
    /// secrets.
    pub(super) async fn prepare(
        &self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        invocation: u64,
        progress: &Progress,
    ) -> Result<Prepared, Failure> {
        let (parts, body) = request.into_parts();
        let dest = self
            .rights
            .check_url(&parts.uri.to_string())
            .map_err(|denied| Failure::new(HttpError::HttpRequestDenied, denied.to_string()))?;
        let dest_text = progress.destination.get_or_init(|| dest.to_string());
        let body = Limited::new(body, self.limits.request_bytes)
            .collect()
            .await
            .map_err(|err| {
                if err.downcast_ref::<LengthLimitError>().is_some() {
                    Failure::new(
                        HttpError::HttpRequestBodySize(None),
                        format!(
                            "request body over {} bytes (limits.http_request_bytes)",
                            self.limits.request_bytes
                        ),
                    )
                } else {
                    Failure::new(HttpError::HttpRequestDenied, format!("request body: {err}"))
                }
            })?
            .to_bytes();
        // Secrets put in, reported once the whole request is prepared (a
        // refused request sends none).
        let used = std::cell::RefCell::new(Vec::<(String, &'static str)>::new());
        let note = |purpose| {
            let used = &used;
            move |name: &str| used.borrow_mut().push((name.to_owned(), purpose))
        };
        let not_bound = |e: crate::secrets::SecretError| {
            Failure::new(HttpError::HttpRequestDenied, e.to_string())
        };
        // The request as the guest built it, before the host puts in any
        // value: an OAuth token or client secret already in it came from
        // somewhere it should not have, and is refused wherever it is
        // headed.
        if let Some(source) = &self.oauth.source {
            let live = Redactor::default().with_live(source.live_values());
            let uri = parts.uri.to_string();
            let found = live.finds(uri.as_bytes())
                || live.finds(&body)
                || parts.headers.values().any(|v| live.finds(v.as_bytes()));
            if found {
                return Err(Failure::new(
                    HttpError::HttpRequestDenied,
                    format!(
                        "an OAuth token or client secret of this connection is in a request to {dest}; connectors send `{{{{oauth:NAME}}}}`, never a token"
                    ),
                ));
            }
        }
        let body = match self
            .secrets
            .substitute_with(&body, &dest, true, note("http-body"))
            .map_err(not_bound)?
        {
            Some(replaced) => Bytes::from(replaced),
            None => body,
        };
        let mut headers = parts.headers;
        // The body may have changed size; hyper sets the length of the
        // buffered body itself.
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        for value in headers.values_mut() {
            if let Some(replaced) = self
                .secrets
                .substitute_with(value.as_bytes(), &dest, false, note("http-header"))
                .map_err(not_bound)?
            {
                let mut secret = HeaderValue::from_bytes(&replaced).map_err(|_| {
                    Failure::new(
                        HttpError::HttpRequestDenied,
                        "a secret value is not valid in a header",
                    )
                })?;
                secret.set_sensitive(true);
                *value = secret;
            }
        }
        // A secret's value (which no guest should hold) may leave only for
        // a destination it is bound to, wherever it sits in the request.
        let uri = parts.uri.to_string();
        let mut places: Vec<&[u8]> = vec![uri.as_bytes(), &body];
        places.extend(headers.values().map(HeaderValue::as_bytes));
        if let Some(name) = self.secrets.unbound_value_in(&dest, &places) {
            return Err(Failure::new(
                HttpError::HttpRequestDenied,
                format!(
                    "the value of secret `{name}` is in a request to {dest}, which it is not bound to"
                ),
            ));
        }
        // A guest may shorten the host's timeouts, never lengthen them.
        let guest = options.unwrap_or_default();
        let shorter = |guest: Option<Duration>, host: Duration| guest.map_or(host, |g| g.min(host));
        let used = used.into_inner();
        let carries_credentials = !used.is_empty();
        if carries_credentials {
            answers_in_plain(&mut headers);
        }
        for (name, purpose) in used {
            let destination = Some(dest_text.as_str());
            let use_ = BrokerUse::Secret {
                name: &name,
                purpose,
                destination,
            };
            self.broker(invocation, use_);
        }
        Ok(Prepared {
            method: parts.method,
            uri: parts.uri,
            body,
            connect: shorter(guest.connect_timeout, self.limits.connect),
            first_byte: shorter(guest.first_byte_timeout, self.limits.first_byte),
            token_templates: tokens::templates(&mut headers),
            headers,
            tokens: Vec::new(),
            carries_credentials,
            dest,
        })
    }
}

/// Asks for an answer the redactor can read: a credential echoed in a
/// compressed body, or in a byte range, would get past it.
pub(super) fn answers_in_plain(headers: &mut HeaderMap) {
    headers.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.remove(http::header::RANGE);
    headers.remove(http::header::IF_RANGE);
}
