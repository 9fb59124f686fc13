//! Host implementations of the interfaces a connector imports, one module per
//! WIT interface. Each has the same four parts, after wasmtime's capability
//! crates: a cheap-to-clone context (`XCtx`), a borrowed view the generated
//! `Host` trait is implemented on (`XCtxView`), a trait the store data
//! implements to hand out that view (`XView`), and `add_to_linker`.

pub mod config;
pub mod http;
pub mod log;
pub mod rate_limit;
pub mod secrets;
pub mod state;

/// `text` with control characters (newlines, CR, ANSI escapes, …)
/// replaced by their Rust escapes, so a string a guest chose cannot forge
/// a log record or colour a terminal; borrowed when there are none.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(sanitize(text, usize::MAX))
}

/// Replaces control characters so a guest cannot forge log lines or
/// terminal escapes, and cuts the text at `max` bytes on a char boundary.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            out.push_str("…[truncated]");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, sanitize};

    #[test]
    fn escape_controls_borrows_clean_text() {
        assert!(matches!(
            escape_controls("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("x\r\n2026 INFO forged\u{1b}[0m"),
            "x\\r\\n2026 INFO forged\\u{1b}[0m"
        );
    }

    #[test]
    fn escapes_newlines_and_escape_sequences() {
        assert_eq!(sanitize("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn truncates_on_char_boundary() {
        let s = sanitize("ééééé", 4);
        assert_eq!(s, "éé…[truncated]");
    }
}
