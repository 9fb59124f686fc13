//! Builds request URLs from the configured base, an action's path and its
//! query parameters. Pure, so it is tested natively.

use std::collections::BTreeMap;
use switchyard_sdk::http::encode_component;
use switchyard_sdk::json::Value;

/// `base` + `path` + `?query`. The path is appended to the base's own path
/// (`https://api.example.com/v1` + `/users` → `…/v1/users`), not resolved
/// against it, and must start with `/`. Query keys and values are
/// percent-encoded; an array repeats its key, `null` sends the bare key,
/// and an object is sent as JSON text.
pub fn build_url(
    base: &str,
    path: &str,
    query: &BTreeMap<String, Value>,
) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with `/`"));
    }
    if path.contains(['#', ' ']) || path.chars().any(char::is_control) {
        return Err(format!(
            "path `{path}` has characters a URL path cannot hold"
        ));
    }
    let mut url = format!("{}{path}", base.trim_end_matches('/'));
    let mut separator = if url.contains('?') { '&' } else { '?' };
    for (key, value) in query {
        let values = match value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for value in values {
            url.push(separator);
            separator = '&';
            url.push_str(&encode_component(key));
            match value {
                Value::Null => {}
                Value::String(text) => push_value(&mut url, text),
                other => push_value(&mut url, &other.to_string()),
            }
        }
    }
    Ok(url)
}

fn push_value(url: &mut String, value: &str) {
    url.push('=');
    url.push_str(&encode_component(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::json::json;

    fn query(value: Value) -> BTreeMap<String, Value> {
        let Value::Object(map) = value else {
            panic!("not an object: {value}")
        };
        map.into_iter().collect()
    }

    #[test]
    fn appends_the_path_to_the_base() {
        let none = BTreeMap::new();
        assert_eq!(
            build_url("https://httpbin.org", "/anything", &none).unwrap(),
            "https://httpbin.org/anything"
        );
        assert_eq!(
            build_url("https://api.example.com/v1/", "/users", &none).unwrap(),
            "https://api.example.com/v1/users"
        );
    }

    #[test]
    fn encodes_the_query() {
        let q = query(json!({"q": "a b&c=é", "n": 2, "tag": ["x", "y"], "flag": null}));
        assert_eq!(
            build_url("https://h", "/s", &q).unwrap(),
            "https://h/s?flag&n=2&q=a%20b%26c%3D%C3%A9&tag=x&tag=y"
        );
        let q = query(json!({"page": 2}));
        assert_eq!(
            build_url("https://h", "/s?sort=asc", &q).unwrap(),
            "https://h/s?sort=asc&page=2"
        );
    }

    #[test]
    fn rejects_paths_that_are_not_paths() {
        let none = BTreeMap::new();
        assert!(build_url("https://h", "anything", &none).is_err());
        assert!(build_url("https://h", "/a b", &none).is_err());
        assert!(build_url("https://h", "/a#frag", &none).is_err());
    }
}
