//! What a call's raw result becomes: the connection's secrets scrubbed
//! and control characters escaped from everything the guest chose, then
//! the library's error tiers, with the guest's overreach (a limit it hit)
//! told apart from the host's own failures.

use crate::bindings::{ConnectorError, Message};
use crate::error::InvokeError;
use crate::invoke::Output;
use crate::limits::Limits;
use crate::state::InvocationState;
use switchyard_broker::secrets::Redactor;
use wasmtime::{Store, Trap};

impl Output {
    /// The output with the connection's secret values scrubbed from every
    /// string and byte the guest chose (payloads, ids, streams, keys,
    /// headers, cursors and per-message errors) and control characters
    /// escaped in the short strings that reach logs (all but payloads and
    /// cursors, which are data handed back verbatim). Everything a guest
    /// says leaves the sandbox through here (or the error paths below), so the
    /// logs, queues, dead letters, audit trail and APIs downstream only
    /// ever see clean text.
    pub(crate) fn redacted(self, redactor: &Redactor) -> Output {
        let redact = |s: &mut String| {
            if !redactor.is_empty()
                && let std::borrow::Cow::Owned(clean) = redactor.redact(s)
            {
                *s = clean;
            }
        };
        let text = |s: &mut String| {
            redact(s);
            escape(s);
        };
        let message = |mut m: Message| {
            if !redactor.is_empty() {
                m.payload = redactor.redact_bytes(&m.payload);
            }
            text(&mut m.id);
            text(&mut m.stream);
            if let Some(key) = m.key.as_mut() {
                text(key);
            }
            for (name, value) in &mut m.headers {
                text(name);
                text(value);
            }
            m
        };
        match self {
            Output::Action(bytes) if redactor.is_empty() => Output::Action(bytes),
            Output::Action(bytes) => Output::Action(redactor.redact_bytes(&bytes)),
            Output::Messages(ms) => Output::Messages(ms.into_iter().map(message).collect()),
            Output::Page(mut page) => {
                page.messages = page.messages.into_iter().map(message).collect();
                if let Some(cursor) = page.next_cursor.as_mut() {
                    redact(cursor);
                }
                Output::Page(page)
            }
            Output::Write(outcomes) => Output::Write(
                outcomes
                    .into_iter()
                    .map(|mut o| {
                        text(&mut o.id);
                        o.outcome = o.outcome.map_err(|e| redact_error(e, redactor));
                        o
                    })
                    .collect(),
            ),
            Output::Describe(info) => Output::Describe(info),
        }
    }
}

/// Turns a raw call result into the library's error tiers.
pub(crate) fn finish(
    result: wasmtime::Result<Result<Output, ConnectorError>>,
    store: &Store<InvocationState>,
    limits: &Limits,
) -> Result<Output, InvokeError> {
    let redactor = &store.data().log.redactor;
    match result {
        Ok(Ok(output)) => {
            let output = output.redacted(redactor);
            let size = output.size();
            if size > limits.output_bytes {
                return Err(InvokeError::OutputTooLarge {
                    size,
                    limit: limits.output_bytes,
                });
            }
            Ok(output)
        }
        Ok(Err(guest)) => Err(InvokeError::Guest(redact_error(guest, redactor))),
        Err(err) => Err(redact_failure(classify_trap(err, store, limits), redactor)),
    }
}

/// A trap's text can quote the guest (its panic message) and a host
/// error can quote what the guest passed: both are scrubbed.
fn redact_failure(mut err: InvokeError, redactor: &Redactor) -> InvokeError {
    if let InvokeError::Trap { message }
    | InvokeError::Host(message)
    | InvokeError::ResourceLimit(message) = &mut err
    {
        if let std::borrow::Cow::Owned(clean) = redactor.redact(message) {
            *message = clean;
        }
        escape(message);
    }
    err
}

fn redact_error(mut err: ConnectorError, redactor: &Redactor) -> ConnectorError {
    let message = crate::error::guest_error_message_mut(&mut err);
    if let std::borrow::Cow::Owned(clean) = redactor.redact(message) {
        *message = clean;
    }
    escape(message);
    err
}

/// Escapes control characters in place (see
/// [`switchyard_broker::interfaces::escape_controls`]).
fn escape(text: &mut String) {
    if let std::borrow::Cow::Owned(clean) = switchyard_broker::interfaces::escape_controls(text) {
        *text = clean;
    }
}

pub(crate) fn classify_trap(
    err: wasmtime::Error,
    store: &Store<InvocationState>,
    limits: &Limits,
) -> InvokeError {
    if let Some(limit) = &store.data().limiter.exceeded {
        return InvokeError::ResourceLimit(limit.clone());
    }
    // The full error carries a wasm backtrace: useful to the operator, noise
    // to the caller.
    tracing::debug!(error = ?err, "guest trapped");
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Timeout {
            deadline_ms: limits.deadline_ms,
        },
        Some(Trap::OutOfFuel) => InvokeError::ResourceLimit(format!(
            "CPU budget spent: {} fuel units (limits.fuel)",
            limits.fuel
        )),
        Some(Trap::StackOverflow) => InvokeError::Trap {
            message: format!(
                "wasm stack overflow (limits.wasm_stack_bytes = {}); unbounded recursion?",
                limits.wasm_stack_bytes
            ),
        },
        Some(Trap::UnreachableCodeReached) => InvokeError::Trap {
            message: match store.data().panic_message() {
                Some(panic) => format!("the connector {panic}"),
                None => "the connector aborted (a panic or `unreachable`)".to_owned(),
            },
        },
        Some(trap) => InvokeError::Trap {
            message: trap.to_string(),
        },
        None if err.is::<wasmtime::PoolConcurrencyLimitError>() => InvokeError::ResourceLimit(
            format!("instance pool exhausted ({err}); raise limits.pool_instances"),
        ),
        None => guest_overreach(&err, limits)
            .map(InvokeError::ResourceLimit)
            .unwrap_or_else(|| InvokeError::Host(format!("{err:#}"))),
    }
}

/// The limit a host call refused because the guest asked too much of it
/// (its fault, not the host's), named for the caller; `None` for a real
/// host failure.
fn guest_overreach(err: &wasmtime::Error, limits: &Limits) -> Option<String> {
    use wasmtime::component::ResourceTableError;
    use wasmtime_wasi_http::FieldMapError;
    for cause in err.chain() {
        if let Some(ResourceTableError::Full) = cause.downcast_ref::<ResourceTableError>() {
            return Some(format!(
                "more than {} resource handles held at once (limits.resource_handles); drop requests, bodies and streams when done",
                limits.resource_handles
            ));
        }
        if let Some(e @ (FieldMapError::TooManyFields | FieldMapError::TotalSizeTooBig)) =
            cause.downcast_ref::<FieldMapError>()
        {
            return Some(format!(
                "HTTP header fields: {e} (wasi:http allows {} bytes of fields per map)",
                DEFAULT_FIELD_BYTES
            ));
        }
        // wasmtime-wasi refuses with text only.
        let text = cause.to_string();
        if text.starts_with("requested len") && text.contains("exceeds limit") {
            return Some(format!(
                "wasi:random: {text} (at most {} bytes per call)",
                crate::state::MAX_RANDOM_BYTES
            ));
        }
    }
    None
}

/// wasmtime-wasi-http's bound on the bytes of one header map.
const DEFAULT_FIELD_BYTES: usize = 128 * 1024;
