//! Validation of everything that crosses a boundary: ids, collection and
//! database names, JSON documents.
//!
//! Every public entry point (session, HTTP handler, engine) calls these
//! before anything is queued or written, so bad input fails early with
//! [`Error::InvalidInput`] and a message that says what is allowed.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Error, Result};

/// The longest id, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 512;
/// The longest collection name.
pub const MAX_COLLECTION_LEN: usize = 128;
/// The longest database name.
pub const MAX_DATABASE_LEN: usize = 63;

/// Checks a document id: 1–512 bytes of UTF-8 without control characters.
///
/// ```
/// use folio_core::validate;
///
/// assert!(validate::id("people/1").is_ok());
/// assert!(validate::id("").is_err());
/// assert!(validate::id("bad\nid").is_err());
/// ```
pub fn id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidInput(
            "a document id must not be empty".into(),
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidInput(format!(
            "a document id is at most {MAX_ID_BYTES} bytes of UTF-8; this one has {}",
            id.len()
        )));
    }
    // Fast path: printable ASCII has no control characters.
    if id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some(position) = id.chars().position(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "a document id must not contain control characters (found one at character {position} of {id:?})"
        )));
    }
    Ok(())
}

/// Checks a collection name and every id of a read.
pub fn keys(collection_name: &str, ids: &[String]) -> Result<()> {
    collection(collection_name)?;
    ids.iter().try_for_each(|value| id(value))
}

/// Checks a collection name: 1–128 characters of `A-Z a-z 0-9 _ -`.
///
/// ```
/// use folio_core::validate;
///
/// assert!(validate::collection("people").is_ok());
/// assert!(validate::collection("people; DROP TABLE x").is_err());
/// ```
pub fn collection(name: &str) -> Result<()> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_COLLECTION_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid collection name {name:?}: use 1 to {MAX_COLLECTION_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// Checks a database name: 1–63 characters of `a-z 0-9 _ -`, starting with a
/// letter or digit. Such a name is safe as a file name and a SQL identifier.
///
/// ```
/// use folio_core::validate;
///
/// assert!(validate::database("shop-2").is_ok());
/// assert!(validate::database("../etc").is_err());
/// ```
pub fn database(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.len() <= MAX_DATABASE_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid database name {name:?}: use 1 to {MAX_DATABASE_LEN} characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )))
    }
}

/// How deeply arrays and objects may nest in a document.
pub const MAX_NESTING: usize = 128;

/// Checks that `text` is one well-formed JSON object, nesting at most
/// [`MAX_NESTING`] arrays and objects deep, that any JSON parser reads back
/// the same way: no `\u0000` in its strings (PostgreSQL cannot store that
/// character, so no engine takes it), no lone surrogate escape, no number
/// beyond a 64-bit float, and no object naming one key twice (I-JSON, RFC
/// 7493: parsers disagree on which of the two values counts; keys compare
/// after unescaping, so `"\u0061"` repeats `"a"`).
///
/// ```
/// use folio_core::validate;
///
/// assert!(validate::document_text(r#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_ok());
/// let refused = validate::document_text(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
/// assert!(refused.to_string().contains(r#"key "b" twice in the object at /a"#));
/// ```
pub fn document_text(text: &str) -> Result<()> {
    if !text.trim_start().starts_with('{') {
        return Err(Error::InvalidInput(
            "a document must be a JSON object".into(),
        ));
    }
    check_json(text, "a document")
}

/// Checks JSON `text` of any type as [`document_text`] checks a document
/// (well-formed, nesting, strings, numbers, no repeated key); `what` names
/// it in the error (`"the patch"`). For bodies that are no document but
/// carry values into one, such as a patch.
pub fn json_text(text: &str, what: &str) -> Result<()> {
    check_json(text, what)
}

fn check_json(text: &str, what: &str) -> Result<()> {
    // One pass: the check counts nesting as it reads and stops at the
    // limit; only refused text is scanned again, for the message.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    Checked { depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| {
            let depth = nesting_depth(text);
            if depth > MAX_NESTING {
                return Error::InvalidInput(format!(
                    "{what} may nest arrays and objects at most {MAX_NESTING} deep; this one nests {depth} deep"
                ));
            }
            match repeated_key(text) {
                Some(Repeated { key, object }) => Error::InvalidInput(format!(
                    "{what} names the key {} twice in the object at {} (line {}, column {}): \
                     an object names each key once (I-JSON, RFC 7493); keep one of the values",
                    serde_json::Value::from(key),
                    if object.is_empty() { "the top level" } else { &object },
                    error.line(),
                    error.column()
                )),
                None => Error::InvalidInput(format!("{what} must be well-formed JSON: {error}")),
            }
        })
}

/// Reads JSON `text` whose nesting was checked against [`MAX_NESTING`]
/// (serde_json's own limit stops at 127 levels, one short of it).
pub fn read_value<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A JSON value read only to be checked, as strictly as any JSON parser
/// reads it back: strings decoded (every escape valid, surrogates in
/// pairs) and free of U+0000 (PostgreSQL cannot store it), numbers within
/// a 64-bit float (`1e400` is not), arrays and objects nested at most
/// [`MAX_NESTING`] deep (`depth` is the nesting around this value).
/// Skipping values unread (`IgnoredAny`) checks none of that, and such a
/// document could be stored but never read.
#[derive(Clone, Copy)]
struct Checked {
    depth: usize,
}

impl Checked {
    /// The check of a value inside this array or object.
    fn inner<E: de::Error>(self) -> Result<Checked, E> {
        if self.depth >= MAX_NESTING {
            return Err(E::custom(format_args!(
                "arrays and objects nest more than {MAX_NESTING} deep"
            )));
        }
        Ok(Checked {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        if text.contains('\0') {
            return Err(E::custom(
                "a string holds the character U+0000 (\\u0000), which no engine stores",
            ));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut values: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while values.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        let mut keys = Keys::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            if !keys.insert(key) {
                return Err(de::Error::custom("an object names a key twice"));
            }
            entries.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// An object's key, decoded: borrowed from the text unless it holds
/// escapes (then decoded into a copy, so that `"\u0061"` equals `"a"`).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Checked { depth: 0 }.visit_str::<E>(key)?;
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Checked { depth: 0 }.visit_str::<E>(key)?;
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// How many keys of an object are compared one by one, kept without
/// allocating; an object with more keeps them in a hash set.
const FEW_KEYS: usize = 16;

/// The keys of one object read so far. Most objects have a few keys
/// without escapes: those are compared one by one as slices of the text
/// (nothing to allocate, initialize at length or drop); a key with escapes
/// (decoded, so a copy) or a seventeenth key moves them all to a hash set.
struct Keys<'de> {
    few: [&'de str; FEW_KEYS],
    count: usize,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Keys<'de> {
    fn new() -> Self {
        Keys {
            few: [""; FEW_KEYS],
            count: 0,
            many: None,
        }
    }

    /// Adds `key`; `false` when the object already named it.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        match key {
            Cow::Borrowed(key) if self.count < FEW_KEYS => {
                if self.few[..self.count].contains(&key) {
                    return false;
                }
                self.few[self.count] = key;
                self.count += 1;
                true
            }
            key => {
                let mut many: HashSet<Cow<'de, str>> = self.few[..self.count]
                    .iter()
                    .map(|&seen| Cow::Borrowed(seen))
                    .collect();
                let inserted = many.insert(key);
                self.many = Some(many);
                inserted
            }
        }
    }
}

/// The first key of a JSON text that an object names twice, and where.
struct Repeated {
    key: String,
    /// The JSON Pointer (RFC 6901) of the object.
    object: String,
}

/// Finds the first repeated key of JSON `text` nesting at most
/// [`MAX_NESTING`] deep (read again, keeping the path, only to explain
/// why `text` was refused).
fn repeated_key(text: &str) -> Option<Repeated> {
    let mut search = Search {
        path: Vec::new(),
        found: None,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    // The search stops at the first repeated key (or error) with an error.
    let _ = Searching(&mut search).deserialize(&mut deserializer);
    search.found
}

struct Search {
    /// The reference tokens of the value being read, escaped for a pointer.
    path: Vec<String>,
    found: Option<Repeated>,
}

struct Searching<'a>(&'a mut Search);

impl<'de> DeserializeSeed<'de> for Searching<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Searching<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut values: A) -> Result<(), A::Error> {
        let search = self.0;
        for index in 0usize.. {
            search.path.push(index.to_string());
            let more = values.next_element_seed(Searching(search))?.is_some();
            search.path.pop();
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let search = self.0;
        let mut keys = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if keys.contains(&key) {
                let object = search
                    .path
                    .iter()
                    .map(|token| format!("/{token}"))
                    .collect();
                search.found = Some(Repeated { key, object });
                return Err(de::Error::custom("found"));
            }
            search.path.push(key.replace('~', "~0").replace('/', "~1"));
            entries.next_value_seed(Searching(search))?;
            search.path.pop();
            keys.insert(key);
        }
        Ok(())
    }
}

/// The nesting of JSON `text` when it is deeper than `limit`, else `None`
/// (the same verdict as `nesting_depth(text) > limit`, usually without its
/// scan).
///
/// Each level opens with a `[` or a `{`, so a text with at most `limit` of
/// them cannot nest deeper, wherever they are. Counting them is a pass
/// without branches that the compiler vectorizes, several times faster than
/// [`nesting_depth`]'s scan, which runs only for a text with more.
///
/// ```
/// use folio_core::validate::deeper_than;
///
/// assert_eq!(deeper_than(r#"{"a":[1,{"b":2}]}"#, 3), None);
/// assert_eq!(deeper_than(r#"{"a":[1,{"b":2}]}"#, 2), Some(3));
/// assert_eq!(deeper_than(r#"{"a":"[[[[","b":{}}"#, 2), None);
/// ```
pub fn deeper_than(text: &str, limit: usize) -> Option<usize> {
    let openers = text
        .bytes()
        .filter(|&byte| byte == b'[' || byte == b'{')
        .count();
    if openers <= limit {
        return None;
    }
    Some(nesting_depth(text)).filter(|&depth| depth > limit)
}

/// The deepest nesting of arrays and objects in JSON `text` (brackets inside
/// strings do not count). Meaningful for well-formed JSON only; callers
/// parse afterwards.
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether JSON `text` has no whitespace outside its strings (as
/// `serde_json::to_string` writes it). Meaningful for well-formed JSON only.
///
/// ```
/// use folio_core::validate::is_minified;
///
/// assert!(is_minified(r#"{"a":"x y","b":[1,2]}"#));
/// assert!(!is_minified(r#"{"a": 1}"#));
/// ```
pub fn is_minified(text: &str) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte.is_ascii_whitespace() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeper_than_agrees_with_the_full_scan() {
        // Texts of every shape up to a size: nested arrays and objects,
        // siblings, and strings full of brackets and escaped quotes.
        let pieces = ["[", "]", "{\"k\":", "}", "\"[{\\\"[\"", ",", "1"];
        let mut texts = vec![String::new()];
        for _ in 0..6 {
            let grown: Vec<String> = texts
                .iter()
                .flat_map(|text| pieces.iter().map(move |piece| format!("{text}{piece}")))
                .collect();
            texts.extend(grown);
            texts.dedup();
        }
        texts.push("[".repeat(300) + &"]".repeat(300));
        texts.push(format!("{{\"a\":\"{}\"}}", "{[".repeat(300)));
        for text in &texts {
            let depth = nesting_depth(text);
            for limit in 0..=depth + 2 {
                let expected = (depth > limit).then_some(depth);
                assert_eq!(
                    deeper_than(text, limit),
                    expected,
                    "{text:?} against {limit}"
                );
            }
        }
    }

    #[test]
    fn repeated_keys_are_refused_with_the_key_and_its_object() {
        let refused = |text: &str| document_text(text).unwrap_err().to_string();
        let message = refused(r#"{"a":1,"b":2,"a":3}"#);
        assert!(
            message.contains(r#"the key "a" twice in the object at the top level"#),
            "{message}"
        );
        let message = refused(r#"{"x":[0,{"y":{"k":1,"k":2}}]}"#);
        assert!(
            message.contains(r#"the key "k" twice in the object at /x/1/y"#),
            "{message}"
        );
        // Keys compare decoded; pointer tokens are escaped (RFC 6901).
        let message = refused(r#"{"a/b~":{"\u0061":1,"a":2}}"#);
        assert!(
            message.contains(r#"the key "a" twice in the object at /a~1b~0"#),
            "{message}"
        );
        // Past the keys compared one by one: the hash set finds it.
        let mut many: Vec<String> = (0..40).map(|n| format!("\"k{n}\":{n}")).collect();
        many.push("\"k3\":0".into());
        let message = refused(&format!("{{{}}}", many.join(",")));
        assert!(message.contains(r#"the key "k3" twice"#), "{message}");
        let message = refused(&format!("{{{}}}", many[1..].join(",")));
        assert!(message.contains(r#"the key "k3" twice"#), "{message}");
        // The same key in different objects, and keys that only look alike.
        assert!(document_text(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}],"A":0,"a ":0}"#).is_ok());
        let unique: Vec<String> = (0..40)
            .map(|n| format!("\"k{n}\":{{\"k{n}\":1}}"))
            .collect();
        assert!(document_text(&format!("{{{}}}", unique.join(","))).is_ok());
        assert!(
            json_text(
                r#"[{"op":"add","path":"/a","value":{"b":1,"b":2}}]"#,
                "the patch"
            )
            .unwrap_err()
            .to_string()
            .contains(r#"the patch names the key "b" twice in the object at /0/value"#)
        );
        assert!(json_text("[1, {\"a\": null}]", "the patch").is_ok());
        // A key holding U+0000 is refused as a string would be.
        assert!(refused(r#"{"a\u0000":1}"#).contains("U+0000"));
    }

    #[test]
    fn ids() {
        assert!(id("a").is_ok());
        assert!(id("people/1 ünïcode ✓").is_ok());
        assert!(id(&"x".repeat(512)).is_ok());
        assert!(id(&"x".repeat(513)).is_err());
        // 171 three-byte characters are 513 bytes.
        assert!(id(&"✓".repeat(171)).is_err());
        assert!(id("tab\there").is_err());
        assert!(id("nul\0").is_err());
        assert!(id("del\u{7f}").is_err());
    }

    #[test]
    fn collections() {
        assert!(collection("People_2-x").is_ok());
        assert!(collection(&"c".repeat(128)).is_ok());
        assert!(collection(&"c".repeat(129)).is_err());
        for bad in ["", "a b", "a/b", "a.b", "a'b", "é"] {
            assert!(collection(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn databases() {
        assert!(database("a").is_ok());
        assert!(database("0db_x-y").is_ok());
        assert!(database(&"d".repeat(63)).is_ok());
        assert!(database(&"d".repeat(64)).is_err());
        for bad in ["", "-a", "_a", "A", "a.b", "..", "a/b", "a b"] {
            assert!(database(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn minified() {
        assert!(is_minified(r#"{"a":"\" \\","b":{"c":[true,null]}}"#));
        assert!(!is_minified("{\"a\":1,\n\"b\":2}"));
        assert!(!is_minified(" {}"));
    }

    #[test]
    fn documents() {
        assert!(document_text(r#" {"a": [1, {"b": null}]}"#).is_ok());
        assert!(document_text("[1]").is_err());
        assert!(document_text("42").is_err());
        assert!(document_text(r#"{"a": }"#).is_err());
        assert!(document_text(r#"{"a": 1} trailing"#).is_err());
        assert_eq!(
            nesting_depth(r#"{"a": "[[[{{", "b": [[1]], "c": "\\"[["}"#),
            3
        );
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(document_text(&deep).is_err());
        assert!(document_text(r#"{"a":"x\u0000y"}"#).is_err());
        assert!(document_text(r#"{"x\u0000":1}"#).is_err());
        assert!(document_text(r#"{"a":"\\u0000","u0000":"\u0001"}"#).is_ok());
        assert!(document_text(r#"{"a":1e400}"#).is_err());
        assert!(document_text(r#"{"a":[-1.5E+309]}"#).is_err());
        assert!(document_text(&format!(r#"{{"a":{}}}"#, "9".repeat(400))).is_err());
        assert!(
            document_text(r#"{"a":1e308,"b":-1e-400,"c":"1e400","d":12345678901234567890}"#)
                .is_ok()
        );
        assert!(document_text(r#"{"a":"\uDaaD&"}"#).is_err());
        assert!(document_text(r#"{"a":"\uDC00"}"#).is_err());
        assert!(document_text(r#"{"a":"\uD834\uDD1E \u00e9 \n"}"#).is_ok());
        let deepest = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert_eq!(nesting_depth(&deepest), MAX_NESTING);
        assert!(
            document_text(&deepest).is_ok(),
            "the deepest allowed document"
        );
        let one_deeper = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        let refused = document_text(&one_deeper).unwrap_err().to_string();
        assert!(refused.contains("129 deep"), "{refused}");
        // Far deeper than any stack would take: refused at the limit, not
        // read to the bottom.
        let abyss = format!("{{\"a\":{}", "[".repeat(1_000_000));
        assert!(document_text(&abyss).is_err());
    }
}
