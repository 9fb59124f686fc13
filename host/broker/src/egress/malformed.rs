//! Request parts refused before a request exists: wasi:http's
//! `set-authority` is answered by the host (see
//! [`interfaces::http::add_to_linker`](crate::interfaces::http::add_to_linker)),
//! and a malformed authority is refused there with a log line and an
//! egress event, like every refusal on the egress path.

use super::Egress;
use crate::observe::EgressEvent;
use std::time::Duration;

/// Longest part quoted in the log; a guest chooses its length.
const QUOTED_CHARS: usize = 200;

impl Egress {
    /// Reports `text`, refused as the `part` (`authority`) of a request
    /// of `method` because of `reason`: a warning naming the reason, with
    /// the text redacted, escaped and cut to 200 characters, and an
    /// egress event (not granted, destination `malformed-authority`).
    pub fn refuse_malformed(
        &self,
        invocation: u64,
        method: &str,
        part: &'static str,
        text: &str,
        reason: &str,
    ) {
        let redacted = self.redactor.redact(text);
        let mut quoted: String = redacted.chars().take(QUOTED_CHARS).collect();
        if redacted.chars().count() > QUOTED_CHARS {
            quoted.push('…');
        }
        let reason = format!("malformed {part} {quoted:?}: {reason}");
        tracing::warn!(
            target: "switchyard::egress",
            plugin = &*self.plugin,
            connection = &*self.connection,
            invocation,
            method,
            code = "set-authority refused",
            reason = %reason,
            "outbound request refused or failed"
        );
        if let Some(observer) = &self.observer {
            let destination = format!("malformed-{part}");
            observer.egress(&EgressEvent {
                plugin: &self.plugin,
                version: &self.version,
                connection: &self.connection,
                invocation,
                method,
                destination: &destination,
                granted: false,
                status: None,
                error: Some(&reason),
                bytes_out: 0,
                bytes_in: 0,
                attempts: 0,
                elapsed: Duration::ZERO,
            });
        }
    }
}
