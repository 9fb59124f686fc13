//! How one webhook delivery becomes messages. Pure, so it is tested natively.

use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_sdk::{Headers, Message, WebhookRequest};

/// Headers naming a delivery, preferred first: Standard Webhooks, GitHub.
const ID_HEADERS: [&str; 2] = ["webhook-id", "x-github-delivery"];
/// Standard Webhooks' send time, in seconds since the Unix epoch.
const TIMESTAMP_HEADER: &str = "webhook-timestamp";

/// Which stream each event goes to.
#[derive(Debug)]
pub struct Routing {
    /// The stream when `stream_from` is unset or the event lacks that field.
    pub stream: String,
    /// A top-level field whose string value names the event's stream.
    pub stream_from: Option<String>,
}

/// One message per event: the body itself, or each element of a body that
/// is an array. Payloads are the events' own bytes.
///
/// An event's id is the delivery's id header (`#<index>` appended for an
/// array's elements), else the event's own `id` field. The timestamp is
/// `webhook-timestamp` in milliseconds, else 0. Each message keeps the
/// delivery's `content-type` and id header.
///
/// Fails, saying why, if the body is not JSON or an event has no id.
pub fn to_messages(request: &WebhookRequest, routing: &Routing) -> Result<Vec<Message>, String> {
    let content_type = header(&request.headers, "content-type");
    let body: &RawValue = serde_json::from_slice(&request.body).map_err(|e| {
        let mut problem = if request.body.trim_ascii().is_empty() {
            "the webhook body is empty; expected JSON".to_owned()
        } else {
            format!("the webhook body is not valid JSON: {e}")
        };
        if let Some(kind) = content_type.filter(|kind| !kind.contains("json")) {
            problem.push_str(&format!(" (content-type is `{kind}`)"));
        }
        problem
    })?;
    let events: Vec<(Option<usize>, &RawValue)> = if body.get().starts_with('[') {
        let elements: Vec<&RawValue> =
            serde_json::from_str(body.get()).map_err(|e| format!("the webhook body: {e}"))?;
        elements
            .into_iter()
            .enumerate()
            .map(|(i, e)| (Some(i), e))
            .collect()
    } else {
        vec![(None, body)]
    };

    let delivery = ID_HEADERS
        .iter()
        .find_map(|name| header(&request.headers, name).map(|value| (*name, value)));
    let timestamp_ms = header(&request.headers, TIMESTAMP_HEADER)
        .and_then(|seconds| seconds.trim().parse::<u64>().ok())
        .map_or(0, |seconds| seconds.saturating_mul(1000));
    let mut headers = Headers::new();
    if let Some(kind) = content_type {
        headers.push(("content-type".to_owned(), kind.to_owned()));
    }
    if let Some((name, value)) = delivery {
        headers.push((name.to_owned(), value.to_owned()));
    }

    let mut messages = Vec::with_capacity(events.len());
    for (index, event) in events {
        // Only to read `id` and the routing field; the payload stays raw.
        let fields: Value = serde_json::from_str(event.get()).unwrap_or_default();
        let id = match (delivery, index) {
            (Some((_, id)), Some(index)) => format!("{id}#{index}"),
            (Some((_, id)), None) => id.to_owned(),
            // An event's own id names it wherever it sits in a batch.
            (None, _) => own_id(&fields).ok_or_else(|| {
                let at = index.map_or(String::new(), |i| format!(" at index {i}"));
                format!(
                    "cannot name the event{at}: no `webhook-id` or `x-github-delivery` header and no `id` field"
                )
            })?,
        };
        let stream = routing
            .stream_from
            .as_deref()
            .and_then(|field| fields.get(field))
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .unwrap_or(&routing.stream);
        let mut message = Message::new(id, stream, event.get().as_bytes().to_vec());
        message.headers = headers.clone();
        message.timestamp_ms = timestamp_ms;
        messages.push(message);
    }
    Ok(messages)
}

/// The first header called `name`, compared case-insensitively.
fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The event's `id` field, a string or a number.
fn own_id(fields: &Value) -> Option<String> {
    match fields.get("id")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(headers: &[(&str, &str)], body: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn routing(stream_from: Option<&str>) -> Routing {
        Routing {
            stream: "events".into(),
            stream_from: stream_from.map(str::to_owned),
        }
    }

    #[test]
    fn one_event_per_delivery() {
        let request = delivery(
            &[
                ("Content-Type", "application/json"),
                ("Webhook-Id", "msg_1"),
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", "v1,abc"),
            ],
            r#"{"type":"invoice.paid","n":123456789012345678901234567890}"#,
        );
        let messages = to_messages(&request, &routing(None)).unwrap();
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert_eq!(
            (message.id.as_str(), message.stream.as_str()),
            ("msg_1", "events")
        );
        assert_eq!(message.timestamp_ms, 1_700_000_000_000);
        assert_eq!(message.payload, request.body);
        assert_eq!(
            message.headers,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("webhook-id".to_owned(), "msg_1".to_owned()),
            ]
        );
    }

    #[test]
    fn arrays_split_with_indexed_ids() {
        let request = delivery(
            &[("x-github-delivery", "d-7")],
            r#" [{"type":"push"}, {"type":"issues","x":[1, 2]}, 3] "#,
        );
        let messages = to_messages(&request, &routing(Some("type"))).unwrap();
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["d-7#0", "d-7#1", "d-7#2"]);
        let streams: Vec<&str> = messages.iter().map(|m| m.stream.as_str()).collect();
        assert_eq!(streams, ["push", "issues", "events"]);
        assert_eq!(messages[1].payload, br#"{"type":"issues","x":[1, 2]}"#);
        assert_eq!(messages[0].timestamp_ms, 0);
        assert_eq!(messages[0].header("x-github-delivery"), Some("d-7"));
        assert!(
            to_messages(&delivery(&[], "[]"), &routing(None))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn without_an_id_header_events_name_themselves() {
        let request = delivery(&[], r#"[{"id":"evt_1"},{"id":42}]"#);
        let messages = to_messages(&request, &routing(None)).unwrap();
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["evt_1", "42"]);
        assert!(messages[0].headers.is_empty());

        let nameless = delivery(&[], r#"[{"id":"evt_1"},{"type":"x"}]"#);
        let problem = to_messages(&nameless, &routing(None)).unwrap_err();
        assert!(problem.contains("at index 1"), "{problem}");
    }

    #[test]
    fn says_what_is_wrong_with_the_body() {
        let form = delivery(
            &[("content-type", "application/x-www-form-urlencoded")],
            "payload=%7B%7D",
        );
        let problem = to_messages(&form, &routing(None)).unwrap_err();
        assert!(problem.contains("not valid JSON"), "{problem}");
        assert!(problem.contains("x-www-form-urlencoded"), "{problem}");
        let empty = to_messages(&delivery(&[], " "), &routing(None)).unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
    }
}
