//! The record transform: a CRM contact (~1 KiB of JSON) mapped to another
//! system's field names, like the field-mapper's `map` with a fixed
//! mapping: parse, rename (nested too), drop, default, serialise.
//! Plain Rust and serde_json, no host calls, so it runs anywhere.

use serde_json::{Map, Value, json};

/// `from` path (dotted into nested objects) → new top-level field.
const RENAMES: &[(&[&str], &str)] = &[
    (&["first_name"], "firstName"),
    (&["last_name"], "lastName"),
    (&["address", "city"], "city"),
    (&["address", "postal_code"], "postalCode"),
    (&["company", "name"], "companyName"),
    (&["metadata", "crm_id"], "crmId"),
];
const DROPS: &[&str] = &["ssn", "internal_notes"];
const DEFAULTS: &[(&str, &str)] = &[("tier", "free"), ("source", "crm")];

/// Record number `i` of the benchmark's input: a contact of about 1 KiB.
pub fn sample_record(i: usize) -> Vec<u8> {
    let value = json!({
        "id": format!("cus_{i:010}"),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": format!("ada.lovelace+{i}@example.com"),
        "phone": "+44 20 7946 0958",
        "website": "https://analytical-engines.example.com/team/ada-lovelace",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "ssn": "078-05-1120",
        "address": {
            "line1": "12 St James's Square",
            "line2": "Flat 3",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "region": "Greater London",
            "country": "GB"
        },
        "company": { "name": "Analytical Engines Ltd", "size": 42, "industry": "computing" },
        "tags": ["vip", "newsletter", "beta-tester", "conference-2026"],
        "created_at": "2026-11-23T20:22:28Z",
        "updated_at": "2026-11-23T21:05:00Z",
        "lifetime_value_cents": 1_284_500 + i,
        "marketing_opt_in": !i.is_multiple_of(3),
        "internal_notes": "Prefers email. Met at the 2026 integration summit; follow up on the enterprise plan in Q1.",
        "preferences": { "channel": "email", "frequency": "weekly", "language": "en", "digest": true },
        "metadata": { "crm_id": "0035e00000B8fWxAAJ", "segment": "enterprise", "score": 87.5, "owner": "usr_00042" }
    });
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// Maps one parsed record; anything but an object is an error.
pub fn transform_value(value: Value) -> Result<Value, String> {
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".to_owned());
    };
    for (from, to) in RENAMES {
        if let Some(v) = take_path(&mut object, from) {
            object.insert((*to).to_owned(), v);
        }
    }
    for field in DROPS {
        object.remove(*field);
    }
    for (field, value) in DEFAULTS {
        object
            .entry(*field)
            .or_insert_with(|| Value::String((*value).to_owned()));
    }
    Ok(Value::Object(object))
}

/// Maps one record given as JSON bytes.
pub fn transform_record(input: &[u8]) -> Result<Vec<u8>, String> {
    let value: Value =
        serde_json::from_slice(input).map_err(|e| format!("record is not JSON: {e}"))?;
    serde_json::to_vec(&transform_value(value)?).map_err(|e| e.to_string())
}

/// Maps newline-separated records into newline-terminated ones.
pub fn transform_lines(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    for line in input.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| format!("record is not JSON: {e}"))?;
        serde_json::to_writer(&mut out, &transform_value(value)?).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(out)
}

fn take_path(object: &mut Map<String, Value>, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = object;
    for key in parents {
        current = current.get_mut(*key)?.as_object_mut()?;
    }
    current.remove(*last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_about_a_kibibyte_and_maps() {
        let input = sample_record(7);
        assert!((900..1300).contains(&input.len()), "{}", input.len());
        let out: Value = serde_json::from_slice(&transform_record(&input).unwrap()).unwrap();
        assert_eq!(out["firstName"], "Ada");
        assert_eq!(out["city"], "London");
        assert_eq!(out["tier"], "free");
        assert!(out.get("ssn").is_none() && out.get("first_name").is_none());
    }

    #[test]
    fn lines_map_one_by_one() {
        let mut input = sample_record(1);
        input.push(b'\n');
        input.extend(sample_record(2));
        let out = transform_lines(&input).unwrap();
        let expected = [
            transform_record(&sample_record(1)).unwrap(),
            transform_record(&sample_record(2)).unwrap(),
        ]
        .join(&b'\n');
        assert_eq!(out, [expected, vec![b'\n']].concat());
    }
}
