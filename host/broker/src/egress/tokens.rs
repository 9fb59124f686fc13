//! OAuth access tokens at egress: `{{oauth:NAME}}` in a header becomes the
//! grant's current token, only for a destination the grant is bound to.
//! When no token can be had the guest gets an answer an upstream would
//! give (401 naming the fix, or 503 to retry later), never a placeholder
//! on the wire.

use super::*;
use crate::oauth::{PLACEHOLDER_START, TokenError};

/// Takes every header whose name has a value holding an OAuth placeholder
/// out of `headers`, in order, to be put back by [`Egress::put_tokens`].
pub(super) fn templates(headers: &mut HeaderMap) -> Vec<(http::HeaderName, HeaderValue)> {
    let names: Vec<http::HeaderName> = headers
        .iter()
        .filter(|(_, v)| contains(v.as_bytes(), PLACEHOLDER_START))
        .map(|(n, _)| n.clone())
        .collect();
    let mut taken = Vec::new();
    for name in names {
        if let http::header::Entry::Occupied(entry) = headers.entry(&name) {
            let (name, values) = entry.remove_entry_mult();
            taken.extend(values.map(|v| (name.clone(), v)));
        }
    }
    taken
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The grant names of the placeholders in `bytes`, in order, with where
/// each placeholder starts and ends.
fn placeholders(bytes: &[u8]) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(PLACEHOLDER_START.len())
        .position(|w| w == PLACEHOLDER_START)
    {
        let start = from + at;
        let name_at = start + PLACEHOLDER_START.len();
        let Some(len) = bytes[name_at..].windows(2).position(|w| w == b"}}") else {
            break;
        };
        let name = String::from_utf8_lossy(&bytes[name_at..name_at + len]).into_owned();
        found.push((start, name_at + len + 2, name));
        from = name_at + len + 2;
    }
    found
}

impl Egress {
    /// Puts tokens into the templated headers of `req`. `rejected` holds the
    /// tokens an upstream just refused: their grants refresh. `Err` is the
    /// answer the guest gets instead of the request being sent.
    pub(super) async fn put_tokens(
        &self,
        req: &mut Prepared,
        rejected: Option<&[(String, SecretValue)]>,
        invocation: u64,
    ) -> Result<(), Response<Full<Bytes>>> {
        if req.token_templates.is_empty() {
            return Ok(());
        }
        let url = req.dest.to_string();
        let mut tokens: Vec<(String, SecretValue)> = Vec::new();
        let mut filled = Vec::with_capacity(req.token_templates.len());
        for (name, template) in &req.token_templates {
            let bytes = template.as_bytes();
            let found = placeholders(bytes);
            if found.is_empty() {
                filled.push((name.clone(), template.clone()));
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len() + 64);
            let mut last = 0;
            for (start, end, grant) in found {
                out.extend_from_slice(&bytes[last..start]);
                last = end;
                let token = match tokens.iter().find(|(g, _)| *g == grant) {
                    Some((_, token)) => token.clone(),
                    None => {
                        let token = self.token_for(&grant, &url, rejected).await?;
                        let use_ = BrokerUse::Secret {
                            name: &format!("oauth:{grant}"),
                            purpose: if rejected.is_some() {
                                "http-header-after-401"
                            } else {
                                "http-header"
                            },
                            destination: Some(&url),
                        };
                        self.broker(invocation, use_);
                        tokens.push((grant, token.clone()));
                        token
                    }
                };
                out.extend_from_slice(token.expose());
            }
            out.extend_from_slice(&bytes[last..]);
            let mut value = HeaderValue::from_bytes(&out).map_err(|_| {
                refusal(
                    StatusCode::UNAUTHORIZED,
                    "the access token is not valid in a header",
                )
            })?;
            value.set_sensitive(true);
            filled.push((name.clone(), value));
        }
        for (name, _) in &req.token_templates {
            req.headers.remove(name);
        }
        for (name, value) in filled {
            req.headers.append(name, value);
        }
        if !tokens.is_empty() {
            req.carries_credentials = true;
            super::prepare::answers_in_plain(&mut req.headers);
        }
        req.tokens = tokens;
        Ok(())
    }

    /// The token of `grant` for a request to `url`, or the answer the guest
    /// gets instead.
    async fn token_for(
        &self,
        grant: &str,
        url: &str,
        rejected: Option<&[(String, SecretValue)]>,
    ) -> Result<SecretValue, Response<Full<Bytes>>> {
        // Logged for the operator, answered to the guest.
        let refused = |status: StatusCode, why: &str| {
            tracing::warn!(
                target: "switchyard::egress",
                plugin = &*self.plugin,
                connection = &*self.connection,
                grant,
                reason = %why,
                "oauth placeholder refused"
            );
            refusal(status, why)
        };
        let denied = |why: String| refused(StatusCode::FORBIDDEN, &why);
        let Some(bound) = self.oauth.bound.get(grant) else {
            return Err(denied(format!(
                "no oauth grant `{grant}` is granted to connection `{}`; add [connections.{}.grants.oauth.{grant}] and list `{grant}` in the plugin manifest's `oauth`",
                self.connection, self.connection
            )));
        };
        if bound.check_url(url).is_err() {
            return Err(denied(format!(
                "the access token of oauth grant `{grant}` may not be sent to {url}; bind it there in the grant's `destinations`"
            )));
        }
        let Some(source) = &self.oauth.source else {
            return Err(denied(format!(
                "oauth grant `{grant}`: this host has no token manager"
            )));
        };
        let stale = rejected.and_then(|r| r.iter().find(|(g, _)| g == grant).map(|(_, t)| t));
        match source.access_token(grant, stale).await {
            Ok(token) => Ok(token),
            Err(error) => {
                let status = match &error {
                    TokenError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNAUTHORIZED,
                };
                Err(refused(status, &self.redactor.redact(&error.to_string())))
            }
        }
    }
}

/// The answer a guest gets when the host cannot authorise its request: a
/// normal HTTP response, marked as the host's, with the reason as text (503
/// carries `Retry-After`, so SDKs treat it as retryable).
fn refusal(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("x-switchyard-oauth", "refused")
        .header(http::header::CONTENT_TYPE, "text/plain");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response = response.header(http::header::RETRY_AFTER, 5);
    }
    response
        .body(Full::new(Bytes::from(format!("{reason}\n"))))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_in_order() {
        let found = placeholders(b"Bearer {{oauth:crm}} and {{oauth:b}}{{oauth:");
        let names: Vec<&str> = found.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(names, ["crm", "b"]);
        assert_eq!(&found[0].0, &7);
        assert_eq!(&found[0].1, &20);
    }

    #[test]
    fn templated_headers_are_taken_out_whole() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", "Bearer {{oauth:crm}}".parse().unwrap());
        headers.append("x-other", "plain".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "{{oauth:crm}}".parse().unwrap());
        let taken = templates(&mut headers);
        assert_eq!(taken.len(), 3);
        assert!(headers.get("authorization").is_none() && headers.get("x-multi").is_none());
        assert_eq!(headers.get("x-other").unwrap(), "plain");
    }
}
