//! Calls into connections, each in a fresh instance (or a [`Session`]).

use super::{Connection, Runtime};
use crate::bindings::{Message, Page, ReadRequest, WebhookRequest, WriteOutcome};
use crate::error::InvokeError;
use crate::invoke::{Call, Output, Session, invoke, unexpected};
use crate::observe::{InvocationEvent, Observer};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::Instrument;

impl Runtime {
    /// Calls `action` on connection `connection` with `input` (JSON by
    /// convention) and returns the connector's output.
    pub async fn call_action(
        &self,
        connection: &str,
        action: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let call = Call::Action {
            action: action.to_owned(),
            input: input.to_vec(),
        };
        self.call(connection, call).await?.into_action()
    }

    /// [`Runtime::call_action`] on behalf of `caller` (an API key id, say),
    /// which observers see in [`InvocationEvent::caller`].
    pub async fn call_action_as(
        &self,
        connection: &str,
        action: &str,
        input: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>, InvokeError> {
        let call = Call::Action {
            action: action.to_owned(),
            input: input.to_vec(),
        };
        let connection = self.lookup(connection)?;
        self.run_as(&connection, call, Some(caller))
            .await?
            .into_action()
    }

    /// Hands an inbound webhook to the connection.
    pub async fn handle_webhook(
        &self,
        connection: &str,
        request: WebhookRequest,
    ) -> Result<Vec<Message>, InvokeError> {
        self.call(connection, Call::Webhook(request))
            .await?
            .into_messages()
    }

    /// Transforms a batch of messages.
    pub async fn transform(
        &self,
        connection: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Message>, InvokeError> {
        self.call(connection, Call::Transform(messages))
            .await?
            .into_messages()
    }

    /// Reads the next page of a stream.
    pub async fn read(&self, connection: &str, request: ReadRequest) -> Result<Page, InvokeError> {
        match self.call(connection, Call::Read(request)).await? {
            Output::Page(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a batch of messages.
    pub async fn write(
        &self,
        connection: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<WriteOutcome>, InvokeError> {
        match self.call(connection, Call::Write(messages)).await? {
            Output::Write(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a [`Session`]: one instance reused across calls. Faster, but
    /// calls are not isolated from each other.
    pub async fn session(&self, connection: &str) -> Result<Session, InvokeError> {
        let connection = self.lookup(connection)?;
        let id = self.inner.next_invocation.fetch_add(1, Ordering::Relaxed);
        Session::start(self.engine(), &self.inner.limits, &connection, id).await
    }

    fn lookup(&self, connection: &str) -> Result<Arc<Connection>, InvokeError> {
        self.connection(connection)
            .ok_or_else(|| InvokeError::UnknownConnection(connection.to_owned()))
    }

    async fn call(&self, connection: &str, call: Call) -> Result<Output, InvokeError> {
        let connection = self.lookup(connection)?;
        self.run(&connection, call).await
    }

    pub(super) async fn run(
        &self,
        connection: &Connection,
        call: Call,
    ) -> Result<Output, InvokeError> {
        self.run_as(connection, call, None).await
    }

    async fn run_as(
        &self,
        connection: &Connection,
        call: Call,
        caller: Option<&str>,
    ) -> Result<Output, InvokeError> {
        let id = self.inner.next_invocation.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let pattern = call_kind(&call);
        let action = match &call {
            Call::Action { action, .. } => Some(action.clone()),
            _ => None,
        };
        let plugin = connection.plugin();
        let span = tracing::info_span!(
            "invocation",
            plugin = plugin.name(),
            version = plugin.version(),
            connection = connection.name(),
            pattern,
            invocation = id,
            caller = tracing::field::Empty,
        );
        if let Some(caller) = caller {
            span.record("caller", caller);
        }
        let result = invoke(self.engine(), &self.inner.limits, connection, id, call)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let _entered = span.enter();
        let elapsed_us = elapsed.as_micros() as u64;
        match &result {
            Ok(_) => tracing::debug!(elapsed_us, "invocation ok"),
            Err(e) => tracing::warn!(
                elapsed_us,
                error.kind = e.kind(),
                error = %e,
                "invocation failed"
            ),
        }
        self.inner.observers.invocation(&InvocationEvent {
            plugin: plugin.name(),
            version: plugin.version(),
            connection: connection.name(),
            pattern,
            action: action.as_deref(),
            caller,
            invocation: id,
            elapsed,
            error: result.as_ref().err(),
        });
        result
    }
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Describe => "describe",
        Call::Action { .. } => "action",
        Call::Webhook(_) => "webhook",
        Call::Transform(_) => "transform",
        Call::Read(_) => "read",
        Call::Write(_) => "write",
    }
}
