//! The access check of action calls and sync runs: the decision is
//! [`Access`]'s; this turns it into 401 / 403 JSON answers and records
//! every decision in the metrics and, for refusals and sync runs, the
//! audit trail (allowed action calls reach the audit trail from their
//! invocation, with its id).

use crate::{AppState, error_body};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use switchyard_host::access::{Caller, Refusal};
use switchyard_ops::audit::AccessEvent;

/// What the check is about.
pub(crate) enum Target<'a> {
    /// An action of a connection (its name without `@version`).
    Action {
        connection: &'a str,
        action: &'a str,
    },
    Sync(&'a str),
}

impl Target<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Target::Action { .. } => "action",
            Target::Sync(_) => "sync",
        }
    }
}

/// The bearer token of `headers`, if any. A malformed `Authorization`
/// header counts as a presented (and so unknown) key, not as none.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    Some(value.strip_prefix(b"Bearer ").unwrap_or(b""))
}

/// Decides, records and, on refusal, answers.
pub(crate) fn check(
    state: &AppState,
    headers: &HeaderMap,
    target: &Target<'_>,
) -> Result<Caller, Box<Response>> {
    let presented = presented(headers);
    let decision = match target {
        Target::Action { connection, action } => {
            state.access.check_action(presented, connection, action)
        }
        Target::Sync(sync) => match presented {
            Some(token) if state.admin.is_admin_token(token) => Ok(Caller::Admin),
            _ => state.access.check_sync(presented, sync),
        },
    };
    let (connection, name, known) = match target {
        Target::Action { connection, action } => (
            *connection,
            *action,
            state.runtime.connection(connection).is_some(),
        ),
        Target::Sync(sync) => (
            "",
            *sync,
            (state.syncs.as_ref()).is_some_and(|s| s.configs().contains_key(*sync)),
        ),
    };
    let label = if known {
        match target {
            Target::Action { connection, .. } => connection,
            Target::Sync(sync) => sync,
        }
    } else {
        "unknown"
    };
    let (caller, kind) = match &decision {
        Ok(caller) => (caller.id(), "allowed"),
        Err(refusal) => (refusal.caller_id(), refusal.kind()),
    };
    if let Some(metrics) = &state.metrics {
        metrics.api_request(caller, target.kind(), label, kind);
    }
    // Allowed action calls are audited from their invocation.
    let audited_here = decision.is_err() || matches!(target, Target::Sync(_));
    if let Some(audit) = state.audit.as_ref().filter(|_| audited_here) {
        audit.access(&AccessEvent {
            caller,
            decision: kind,
            target: target.kind(),
            connection: if known { connection } else { "" },
            name: if known { name } else { "" },
        });
    }
    decision.map_err(|refusal| Box::new(refuse(&refusal, target)))
}

fn refuse(refusal: &Refusal, target: &Target<'_>) -> Response {
    let what = match target {
        Target::Action { connection, .. } => format!("connection `{connection}`"),
        Target::Sync(sync) => format!("sync `{sync}`"),
    };
    let mut response = match refusal {
        Refusal::Missing => error_body(
            StatusCode::UNAUTHORIZED,
            refusal.kind(),
            &format!(
                "{what} is not public: send a caller key as `Authorization: Bearer <key>` (keys are configured under [access.keys] in switchyard.toml)"
            ),
        ),
        Refusal::Unknown => error_body(
            StatusCode::UNAUTHORIZED,
            refusal.kind(),
            "the bearer token is not a configured caller key",
        ),
        Refusal::OutOfScope(id) => {
            let grant = match target {
                Target::Action { connection, action } => format!(
                    "add \"{connection}\" to its `connections` or \"{connection}/{action}\" to its `actions`"
                ),
                Target::Sync(sync) => format!("add \"{sync}\" to its `syncs`"),
            };
            return error_body(
                StatusCode::FORBIDDEN,
                refusal.kind(),
                &format!("key `{id}` may not call {what}: {grant} under [access.keys.{id}]"),
            );
        }
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
    response
}
