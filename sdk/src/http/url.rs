//! Just enough URL handling for requests and redirects: split an absolute
//! URL into the parts wasi:http wants, and resolve a `location` header
//! against the URL it answered (RFC 3986 §5.2). No case or percent-encoding
//! normalisation: the host parses and checks every hop again. Connectors
//! building URLs get [`encode_component`].

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::fmt;

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` for one URL path segment or query key or value:
/// every byte of its UTF-8 but the RFC 3986 unreserved characters
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (uppercase hex), so `/`, `?`, `&`,
/// `=`, `+` and spaces stay data, e.g. `a b/é` → `a%20b%2F%C3%A9`.
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// An absolute `scheme://authority/path?query` URL, fragment dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Lowercase, e.g. `https`.
    pub scheme: String,
    /// `host[:port]`, as written.
    pub authority: String,
    /// Starts with `/`; `/` when the URL has no path.
    pub path_and_query: String,
}

impl Url {
    /// Parses an absolute URL.
    pub fn parse(text: &str) -> Result<Url, String> {
        let text = strip_fragment(text.trim());
        let (scheme, rest) = text
            .split_once("://")
            .filter(|(scheme, _)| is_scheme(scheme))
            .ok_or_else(|| format!("`{text}` is not an absolute URL (scheme://host/path)"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let path_and_query = match tail.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{tail}"),
            Some(_) => tail.to_owned(),
        };
        Ok(Url {
            scheme: scheme.to_ascii_lowercase(),
            authority: authority.to_owned(),
            path_and_query,
        })
    }

    /// Resolves `reference` (absolute, `//host/…`, `/path`, `?query` or a
    /// relative path) against `self`.
    pub fn join(&self, reference: &str) -> Result<Url, String> {
        let reference = strip_fragment(reference.trim());
        if reference
            .split_once(':')
            .is_some_and(|(scheme, _)| is_scheme(scheme))
        {
            return Url::parse(reference);
        }
        if reference.starts_with("//") {
            return Url::parse(&format!("{}:{reference}", self.scheme));
        }
        let (base_path, _) = split_query(&self.path_and_query);
        let joined = if reference.is_empty() {
            self.path_and_query.clone()
        } else if reference.starts_with('?') {
            format!("{base_path}{reference}")
        } else if reference.starts_with('/') {
            reference.to_owned()
        } else {
            // Relative path: replaces the last segment of the base path.
            let dir = &base_path[..=base_path.rfind('/').unwrap_or(0)];
            format!("{dir}{reference}")
        };
        let (path, query) = split_query(&joined);
        Ok(Url {
            path_and_query: format!("{}{query}", remove_dot_segments(path)),
            ..self.clone()
        })
    }

    /// Whether `other` has the same scheme and authority.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.authority.eq_ignore_ascii_case(&other.authority)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme, self.authority, self.path_and_query
        )
    }
}

fn strip_fragment(text: &str) -> &str {
    text.split_once('#').map_or(text, |(before, _)| before)
}

/// `(path, "?query")`, the query part empty when there is none.
fn split_query(path_and_query: &str) -> (&str, &str) {
    let end = path_and_query.find('?').unwrap_or(path_and_query.len());
    path_and_query.split_at(end)
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Resolves `.` and `..` in an absolute path (RFC 3986 §5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path.trim_start_matches('/').split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." | ".." => {
                if segment == ".." {
                    kept.pop();
                }
                // A trailing dot segment names a directory: keep the slash.
                if last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    format!("/{}", kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn parses_the_parts_wasi_http_wants() {
        let u = url("HTTPS://api.example.com:8443/v1/items?page=2#top");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.authority, "api.example.com:8443");
        assert_eq!(u.path_and_query, "/v1/items?page=2");
        assert_eq!(url("http://h").path_and_query, "/");
        assert_eq!(url("http://h?q=1").path_and_query, "/?q=1");
        assert_eq!(url("http://h/a").to_string(), "http://h/a");
    }

    #[test]
    fn rejects_what_is_not_absolute() {
        assert!(Url::parse("/relative").is_err());
        assert!(Url::parse("httpbin.org/get").is_err());
        assert!(Url::parse("https:///path").is_err());
        assert!(Url::parse("1http://h/").is_err());
    }

    #[test]
    fn resolves_locations_like_a_browser() {
        let base = url("https://h/a/b/c?x=1");
        let cases = [
            ("https://other/p", "https://other/p"),
            ("//other/p?q", "https://other/p?q"),
            ("/root", "https://h/root"),
            ("?y=2", "https://h/a/b/c?y=2"),
            ("d", "https://h/a/b/d"),
            ("./d/", "https://h/a/b/d/"),
            ("../d", "https://h/a/d"),
            ("../../../../d", "https://h/d"),
            ("..", "https://h/a/"),
            ("", "https://h/a/b/c?x=1"),
            ("e#frag", "https://h/a/b/e"),
        ];
        for (reference, expected) in cases {
            assert_eq!(
                base.join(reference).unwrap().to_string(),
                expected,
                "{reference}"
            );
        }
    }

    #[test]
    fn encodes_all_but_unreserved_characters() {
        let unreserved = "AZaz09-._~";
        assert_eq!(encode_component(unreserved), unreserved);
        assert_eq!(encode_component(""), "");
        assert_eq!(
            encode_component("a b/c?d&e=f+g#h%i"),
            "a%20b%2Fc%3Fd%26e%3Df%2Bg%23h%25i"
        );
        assert_eq!(encode_component("é\"\n"), "%C3%A9%22%0A");
        assert_eq!(encode_component("[\"1-g\"]"), "%5B%221-g%22%5D");
    }

    #[test]
    fn compares_origins() {
        let a = url("https://h/a");
        assert!(a.same_origin(&url("https://H/b")));
        assert!(!a.same_origin(&url("http://h/a")));
        assert!(!a.same_origin(&url("https://h:444/a")));
    }
}
