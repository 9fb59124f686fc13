//! The WIT types, with constructors that keep connectors short.

use crate::bindings::switchyard::connector::types as wit;

/// Header-like metadata: ordered `(name, value)` pairs.
pub type Headers = Vec<(String, String)>;
/// One record moving between systems.
pub type Message = wit::Message;
/// What a connector says about itself.
pub type ConnectorInfo = wit::ConnectorInfo;
/// A named operation of the `action` role.
pub type ActionInfo = wit::ActionInfo;
/// A stream a source reads or a sink writes.
pub type StreamInfo = wit::StreamInfo;
/// An integration pattern a connector takes part in.
pub type Role = wit::Role;
/// An inbound webhook request.
pub type WebhookRequest = wit::WebhookRequest;
/// A request for the next page of a stream.
pub type ReadRequest = wit::ReadRequest;
/// One page of a stream.
pub type Page = wit::Page;
/// The outcome of writing one message.
pub type WriteOutcome = wit::WriteOutcome;
/// An error the host can act on: retry, pause, or give up.
pub type Error = wit::ConnectorError;

impl wit::ConnectorError {
    /// A transient failure; the host may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }
    /// A failure that will repeat; the host will not retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }
    /// The caller's input is malformed; say what to fix.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }
    /// The upstream throttled the call; `retry_after_ms` if it said when.
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        Self::RateLimited(wit::RateLimit {
            message: message.into(),
            retry_after_ms,
        })
    }
    /// The connector has no action called `action`.
    pub fn unknown_action(action: &str) -> Self {
        Self::permanent(format!("unknown action `{action}`"))
    }
    /// The connector does not take part in `role`.
    pub fn unsupported(role: &str) -> Self {
        Self::permanent(format!("this connector does not support the {role} role"))
    }
    /// The human-readable message, whatever the case.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(m) | Self::Permanent(m) | Self::InvalidInput(m) => m,
            Self::RateLimited(limit) => &limit.message,
        }
    }
}

impl wit::ConnectorInfo {
    /// A connector called `name` at `version` with no roles yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            roles: Vec::new(),
            actions: Vec::new(),
            streams: Vec::new(),
        }
    }
    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
    /// Adds an action (and the `action` role).
    pub fn action(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.add_role(wit::Role::Action);
        self.actions.push(wit::ActionInfo {
            name: name.into(),
            description: description.into(),
        });
        self
    }
    /// Adds a stream (without changing roles).
    pub fn stream(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.streams.push(wit::StreamInfo {
            name: name.into(),
            description: description.into(),
        });
        self
    }
    /// Adds a role.
    pub fn role(mut self, role: wit::Role) -> Self {
        self.add_role(role);
        self
    }
    fn add_role(&mut self, role: wit::Role) {
        if !self.roles.contains(&role) {
            self.roles.push(role);
        }
    }
}

impl wit::Message {
    /// A message on `stream` with `id` and `payload`, no key, no headers,
    /// timestamp zero.
    pub fn new(id: impl Into<String>, stream: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: id.into(),
            stream: stream.into(),
            key: None,
            headers: Vec::new(),
            payload,
            timestamp_ms: 0,
        }
    }
    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
