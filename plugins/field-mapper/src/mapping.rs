//! The mapping itself: plain Rust, no host calls, so it runs natively too.

use serde_json::{Map, Value};
use switchyard_sdk::Error;

/// A parsed set of renames, drops and defaults.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    renames: Vec<(Vec<String>, String)>,
    drops: Vec<String>,
    defaults: Vec<(String, Value)>,
}

fn pairs(text: &str, what: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| format!("{what}: `{pair}` is not `name=value`"))
        })
        .collect()
}

impl Mapping {
    /// Parses the three settings; errors name the bad entry.
    pub fn parse(rename: &str, drop: &str, defaults: &str) -> Result<Mapping, String> {
        let renames = pairs(rename, "rename")?
            .into_iter()
            .map(|(from, to)| (from.split('.').map(str::to_owned).collect(), to))
            .collect();
        let drops = drop
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        let defaults = pairs(defaults, "defaults")?
            .into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                (k, value)
            })
            .collect();
        Ok(Mapping {
            renames,
            drops,
            defaults,
        })
    }

    /// Maps one JSON object; anything else is invalid input.
    pub fn apply(&self, value: Value) -> Result<Value, Error> {
        let Value::Object(mut object) = value else {
            return Err(Error::invalid_input("expected a JSON object"));
        };
        for (from, to) in &self.renames {
            if let Some(v) = take_path(&mut object, from) {
                object.insert(to.clone(), v);
            }
        }
        for field in &self.drops {
            object.remove(field);
        }
        for (field, value) in &self.defaults {
            object.entry(field.clone()).or_insert_with(|| value.clone());
        }
        Ok(Value::Object(object))
    }

    /// Maps a JSON payload given as bytes.
    pub fn apply_bytes(&self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| Error::invalid_input(format!("payload is not JSON: {e}")))?;
        serde_json::to_vec(&self.apply(value)?).map_err(|e| Error::permanent(e.to_string()))
    }
}

fn take_path(object: &mut Map<String, Value>, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = object;
    for key in parents {
        current = current.get_mut(key)?.as_object_mut()?;
    }
    current.remove(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renames_nested_drops_and_defaults() {
        let m = Mapping::parse(
            "first_name=firstName, address.city=city",
            "ssn",
            "tier=\"free\",score=1",
        )
        .unwrap();
        let out = m
            .apply(
                json!({"first_name": "Ada", "ssn": "x", "address": {"city": "London"}, "score": 7}),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"firstName": "Ada", "address": {}, "city": "London", "tier": "free", "score": 7})
        );
    }

    #[test]
    fn bad_settings_name_the_entry() {
        assert!(
            Mapping::parse("oops", "", "")
                .unwrap_err()
                .contains("`oops`")
        );
    }

    #[test]
    fn non_objects_are_invalid_input() {
        let err = Mapping::default().apply(json!([1])).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
    }
}
