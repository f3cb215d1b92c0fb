//! Three-way merge of JSON documents: an edit made from a version that
//! has changed since, merged with what is stored now.
//!
//! * `base`: the version the edit started from; `theirs`: what is stored
//!   now; `mine`: the edit.
//! * Objects merge key by key, recursively; any other value (arrays
//!   included) is replaced whole. A key absent from a side is that side's
//!   deletion of it.
//! * Where only one side changed a value (or a key), its change is taken;
//!   where both changed it to the same value, that value; where both
//!   changed it differently, it is an **overlap**, named by its JSON
//!   Pointer (RFC 6901; `""` is the whole document).
//!
//! The same rules hold in the Rust session (`OnConflict::Merge`), the
//! server (`Prefer: merge`) and Folio Studio; `tests/merge_cases.json` is
//! the fixture all three pass.

use serde_json::{Map, Value};

/// Merges `mine` and `theirs`, both made from `base`: the merged document,
/// or the JSON Pointer of every value changed differently on both sides,
/// in document order.
///
/// ```
/// use serde_json::json;
///
/// let base = json!({ "name": "Ann", "city": "Oslo" });
/// let theirs = json!({ "name": "Ann", "city": "Bergen" });
/// let mine = json!({ "name": "Anne", "city": "Oslo" });
/// assert_eq!(
///     folio_core::merge(&base, &theirs, &mine),
///     Ok(json!({ "name": "Anne", "city": "Bergen" }))
/// );
/// let both = json!({ "name": "Ann", "city": "Tromsø" });
/// assert_eq!(folio_core::merge(&base, &theirs, &both), Err(vec!["/city".to_owned()]));
/// ```
pub fn merge(base: &Value, theirs: &Value, mine: &Value) -> Result<Value, Vec<String>> {
    let mut overlaps = Vec::new();
    let merged = merge_at(Some(base), Some(theirs), Some(mine), "", &mut overlaps);
    if overlaps.is_empty() {
        Ok(merged.unwrap_or(Value::Null))
    } else {
        Err(overlaps)
    }
}

/// The merge of one value (`None`: absent on that side) at `path`;
/// overlaps are added to `overlaps`.
fn merge_at(
    base: Option<&Value>,
    theirs: Option<&Value>,
    mine: Option<&Value>,
    path: &str,
    overlaps: &mut Vec<String>,
) -> Option<Value> {
    if mine == base || mine == theirs {
        return theirs.cloned();
    }
    if theirs == base {
        return mine.cloned();
    }
    match (base, theirs, mine) {
        (Some(Value::Object(base)), Some(Value::Object(theirs)), Some(Value::Object(mine))) => {
            Some(Value::Object(merge_objects(
                base, theirs, mine, path, overlaps,
            )))
        }
        _ => {
            overlaps.push(path.to_owned());
            theirs.cloned()
        }
    }
}

fn merge_objects(
    base: &Map<String, Value>,
    theirs: &Map<String, Value>,
    mine: &Map<String, Value>,
    path: &str,
    overlaps: &mut Vec<String>,
) -> Map<String, Value> {
    let mut keys: Vec<&String> = theirs.keys().collect();
    keys.extend(mine.keys().filter(|key| !theirs.contains_key(*key)));
    keys.extend(
        base.keys()
            .filter(|key| !theirs.contains_key(*key) && !mine.contains_key(*key)),
    );
    let mut merged = Map::new();
    for key in keys {
        let at = format!("{path}/{}", escape(key));
        if let Some(value) = merge_at(base.get(key), theirs.get(key), mine.get(key), &at, overlaps)
        {
            merged.insert(key.clone(), value);
        }
    }
    merged
}

/// A key as a JSON Pointer reference token (RFC 6901: `~` → `~0`, `/` →
/// `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case of the fixture that the server and Folio Studio pass too.
    #[test]
    fn the_shared_cases_merge_as_they_say() {
        let cases: Vec<Value> =
            serde_json::from_str(include_str!("../tests/merge_cases.json")).unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let outcome = merge(&case["base"], &case["theirs"], &case["mine"]);
            match (case.get("merged"), case.get("overlaps")) {
                (Some(merged), None) => assert_eq!(outcome.as_ref(), Ok(merged), "{name}"),
                (None, Some(overlaps)) => {
                    let expected: Vec<String> = serde_json::from_value(overlaps.clone()).unwrap();
                    assert_eq!(outcome, Err(expected), "{name}");
                }
                _ => panic!("{name}: a case has merged or overlaps"),
            }
        }
    }
}
