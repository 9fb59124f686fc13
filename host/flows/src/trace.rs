//! W3C trace context across the queue: a `traceparent` header travels with
//! each message, so a webhook accepted on one host and delivered by
//! another is one trace. The flows make the spans (webhook accepted,
//! webhook received, message delivered) and hand each finished one to the
//! [`FlowObserver`](crate::observe::FlowObserver)s; exporting them (OTLP)
//! is the operations layer's business.

use std::time::SystemTime;

/// The header the context travels in, in messages and requests.
pub const TRACEPARENT: &str = "traceparent";

/// One hop's trace context: the trace, and the span that is the parent of
/// the next hop's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// A new trace, with a new root span id.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: nonzero(fastrand::u128(..).to_be_bytes()),
            span_id: nonzero(fastrand::u64(..).to_be_bytes()),
            sampled: true,
        }
    }

    /// A new span of the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero(fastrand::u64(..).to_be_bytes()),
            ..*self
        }
    }

    /// Parses a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`);
    /// `None` for anything else, all-zero ids included.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || flags.len() != 2 {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The context in `headers`, if one is there and valid.
    pub fn from_headers(headers: &[(String, String)]) -> Option<Self> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
            .and_then(|(_, v)| Self::parse(v))
    }

    /// Sets `headers`' `traceparent` to this context, replacing any.
    pub fn set_on(&self, headers: &mut Vec<(String, String)>) {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(TRACEPARENT));
        headers.push((TRACEPARENT.to_owned(), self.to_string()));
    }
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes == [0; N] {
        bytes[N - 1] = 1;
    }
    bytes
}

/// A finished span of a flow.
#[derive(Debug, Clone)]
pub struct FlowSpan {
    /// `webhook accept`, `webhook receive`, `pipeline deliver`.
    pub name: &'static str,
    /// This span's own context (its `span_id` is this span's).
    pub context: TraceContext,
    /// The parent span, when there is one (in this trace).
    pub parent_span_id: Option<[u8; 8]>,
    /// Server for an accepted request, consumer for a queued message.
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `webhook`, `pipeline`, `message.id`, `outcome`, …
    pub attributes: Vec<(&'static str, String)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// What a span stands for, as OpenTelemetry kinds go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Consumer,
}

/// Starts a span under `parent` (a new trace when there is none); finish
/// it with [`SpanStart::finish`].
#[derive(Debug, Clone, Copy)]
pub struct SpanStart {
    pub context: TraceContext,
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
}

impl SpanStart {
    pub fn under(parent: Option<TraceContext>) -> Self {
        let context = parent.map_or_else(TraceContext::new_root, |p| p.child());
        SpanStart {
            context,
            parent_span_id: parent.map(|p| p.span_id),
            start: SystemTime::now(),
        }
    }

    /// The finished span, ending now.
    pub fn finish(
        self,
        name: &'static str,
        kind: SpanKind,
        attributes: Vec<(&'static str, String)>,
        error: Option<String>,
    ) -> FlowSpan {
        FlowSpan {
            name,
            context: self.context,
            parent_span_id: self.parent_span_id,
            kind,
            start: self.start,
            end: SystemTime::now(),
            attributes,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_ones() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(text).unwrap();
        assert_eq!(context.to_string(), text);
        assert!(context.sampled);
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let mut headers = vec![
            ("Traceparent".into(), "junk".into()),
            ("a".into(), "b".into()),
        ];
        assert_eq!(TraceContext::from_headers(&headers), None);
        context.set_on(&mut headers);
        assert_eq!(TraceContext::from_headers(&headers), Some(context));
        assert_eq!(headers.len(), 2);
    }
}
