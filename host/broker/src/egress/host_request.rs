//! Requests the host makes on its own behalf (OAuth token requests) through
//! the same path as guests' requests: the URL checked against rules, the
//! name resolved and every address checked, a checked address dialed,
//! TLS with the same roots, the same timeouts and size caps. Nothing is
//! substituted or redacted: the answer is for the host.

use super::*;
use crate::capabilities::{Grants, PluginManifest};

impl Egress {
    /// An egress for the host itself, named `who` in logs, reaching only
    /// the egress rules `allow`.
    pub fn for_host(
        who: &str,
        allow: &[String],
        limits: EgressLimits,
        network: Network,
    ) -> Result<Self, String> {
        let manifest = PluginManifest {
            http: allow.to_vec(),
            ..PluginManifest::default()
        };
        let grants = Grants {
            allow: allow.to_vec(),
            ..Grants::default()
        };
        let rights = EffectiveRights::new(&manifest, &grants)?;
        Ok(Egress::new(
            "switchyard".into(),
            who.into(),
            rights,
            Arc::default(),
            Arc::default(),
            None,
            limits,
            network,
        ))
    }

    /// Sends the host's own `request` (no retries, no pacing). Errors say
    /// what failed, for the operator.
    pub async fn send_as_host(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, String> {
        let (parts, body) = request.into_parts();
        let dest = self
            .rights
            .check_url(&parts.uri.to_string())
            .map_err(|denied| denied.to_string())?;
        if body.len() > self.limits.request_bytes {
            return Err(format!(
                "request body over {} bytes",
                self.limits.request_bytes
            ));
        }
        let mut headers = parts.headers;
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        // Only the path goes on the request line: the authority travels in
        // `Host`, which HTTP/1.1 servers require.
        if let Some(authority) = parts.uri.authority()
            && !headers.contains_key(http::header::HOST)
        {
            let host = HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("host header: {e}"))?;
            headers.insert(http::header::HOST, host);
        }
        let prepared = Prepared {
            method: parts.method,
            uri: parts.uri,
            headers,
            body: Bytes::from(body),
            dest,
            connect: self.limits.connect,
            first_byte: self.limits.first_byte,
            token_templates: Vec::new(),
            tokens: Vec::new(),
            carries_credentials: false,
        };
        let answer = tokio::time::timeout(self.limits.total, self.attempt(&prepared))
            .await
            .map_err(|_| {
                format!(
                    "no complete answer within {} ms",
                    self.limits.total.as_millis()
                )
            })?
            .map_err(|failure| format!("{} ({})", failure.reason, failure.code))?;
        let (parts, body) = answer.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(never) => match never {},
        };
        Ok(Response::from_parts(parts, body))
    }
}
