//! SQLite's JSONB encoding of a document, built by the caller's thread
//! instead of by `jsonb(?)` on the writer's.
//!
//! The writer is the one thread every commit passes through; turning text
//! into JSONB there was about 5 % of its time. [`encode`] produces exactly
//! the bytes SQLite's `jsonb()` produces for the same RFC 8259 text (the
//! tests compare the two), so what is stored does not depend on who
//! encoded it.
//!
//! The format (<https://sqlite.org/jsonb.html>): every element is a header
//! and a payload. The header's low four bits are the type; its high four
//! bits are the payload size when it is at most 11, or say that the size
//! follows in 1, 2 or 4 big-endian bytes (12, 13, 14). Scalars keep their
//! text: a number's digits, a string's bytes between the quotes with its
//! escapes as written (type TEXTJ when it has any, TEXT otherwise).
//! Arrays and objects hold their elements (an object alternates keys and
//! values). SQLite writes the smallest header that fits; so does this.

use folio_core::{Error, Result};

const NULL: u8 = 0x0;
const TRUE: u8 = 0x1;
const FALSE: u8 = 0x2;
const INT: u8 = 0x3;
const FLOAT: u8 = 0x5;
const TEXT: u8 = 0x7;
const TEXTJ: u8 = 0x8;
const ARRAY: u8 = 0xb;
const OBJECT: u8 = 0xc;

/// A document encoded for storage.
pub(crate) struct Encoded {
    /// The JSONB bytes.
    pub(crate) jsonb: Vec<u8>,
    /// Whether the text had no whitespace outside its strings, so that
    /// SQLite's `json()` of the JSONB gives back the very same text.
    pub(crate) minified: bool,
}

/// Encodes well-formed JSON `text` (as `folio_core::validate::document_text`
/// accepts it) as SQLite's `jsonb(text)` would.
pub(crate) fn encode(text: &str) -> Result<Encoded> {
    let mut encoder = Encoder {
        text: text.as_bytes(),
        at: 0,
        out: Vec::with_capacity(text.len() + 16),
        minified: true,
    };
    encoder.value()?;
    encoder.skip_whitespace();
    if encoder.at != encoder.text.len() {
        return Err(malformed());
    }
    Ok(Encoded {
        jsonb: encoder.out,
        minified: encoder.minified,
    })
}

struct Encoder<'a> {
    text: &'a [u8],
    at: usize,
    out: Vec<u8>,
    minified: bool,
}

impl Encoder<'_> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.minified = false;
            self.at += 1;
        }
    }

    fn next_byte(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.text.get(self.at).copied().ok_or_else(malformed)
    }

    fn value(&mut self) -> Result<()> {
        match self.next_byte()? {
            b'{' => self.container(OBJECT, b'}'),
            b'[' => self.container(ARRAY, b']'),
            b'"' => self.string(),
            b't' => self.literal(b"true", TRUE),
            b'f' => self.literal(b"false", FALSE),
            b'n' => self.literal(b"null", NULL),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(malformed()),
        }
    }

    /// An array or an object. As SQLite does, the header is first sized
    /// for the rest of the text (an upper bound of the payload) and shrunk
    /// once the payload is known.
    fn container(&mut self, kind: u8, close: u8) -> Result<()> {
        let header_at = self.out.len();
        let bound = self.text.len() - self.at;
        push_header(&mut self.out, kind, bound);
        let header_len = self.out.len() - header_at;
        self.at += 1;
        let mut count = 0usize;
        loop {
            if self.next_byte()? == close {
                self.at += 1;
                break;
            }
            if count > 0 {
                if self.next_byte()? != b',' {
                    return Err(malformed());
                }
                self.at += 1;
            }
            if kind == OBJECT {
                if self.next_byte()? != b'"' {
                    return Err(malformed());
                }
                self.string()?;
                if self.next_byte()? != b':' {
                    return Err(malformed());
                }
                self.at += 1;
            }
            self.value()?;
            count += 1;
        }
        let payload = self.out.len() - header_at - header_len;
        let mut header = [0u8; 5];
        let exact = header_bytes(&mut header, kind, payload);
        if exact.len() != header_len {
            self.out
                .copy_within(header_at + header_len.., header_at + exact.len());
            self.out.truncate(header_at + exact.len() + payload);
        }
        self.out[header_at..header_at + exact.len()].copy_from_slice(exact);
        Ok(())
    }

    fn string(&mut self) -> Result<()> {
        let start = self.at + 1;
        let mut end = start;
        let mut kind = TEXT;
        loop {
            match self.text.get(end) {
                Some(b'"') => break,
                Some(b'\\') => {
                    kind = TEXTJ;
                    end += 2;
                }
                Some(_) => end += 1,
                None => return Err(malformed()),
            }
        }
        let payload = self.text.get(start..end).ok_or_else(malformed)?;
        push_header(&mut self.out, kind, payload.len());
        self.out.extend_from_slice(payload);
        self.at = end + 1;
        Ok(())
    }

    fn number(&mut self) -> Result<()> {
        let start = self.at;
        let mut end = start + 1;
        let mut kind = INT;
        while let Some(&byte) = self.text.get(end) {
            match byte {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => kind = FLOAT,
                _ => break,
            }
            end += 1;
        }
        let payload = &self.text[start..end];
        push_header(&mut self.out, kind, payload.len());
        self.out.extend_from_slice(payload);
        self.at = end;
        Ok(())
    }

    fn literal(&mut self, word: &[u8], kind: u8) -> Result<()> {
        if !self.text[self.at..].starts_with(word) {
            return Err(malformed());
        }
        self.out.push(kind);
        self.at += word.len();
        Ok(())
    }
}

/// The smallest header for a payload of `size` bytes.
fn header_bytes(buffer: &mut [u8; 5], kind: u8, size: usize) -> &[u8] {
    if size <= 11 {
        buffer[0] = kind | ((size as u8) << 4);
        &buffer[..1]
    } else if let Ok(size) = u8::try_from(size) {
        buffer[0] = kind | 0xc0;
        buffer[1] = size;
        &buffer[..2]
    } else if let Ok(size) = u16::try_from(size) {
        buffer[0] = kind | 0xd0;
        buffer[1..3].copy_from_slice(&size.to_be_bytes());
        &buffer[..3]
    } else {
        // Documents are far below 4 GiB (`Limits`); saturate rather than wrap.
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        buffer[0] = kind | 0xe0;
        buffer[1..5].copy_from_slice(&size.to_be_bytes());
        &buffer[..5]
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, size: usize) {
    let mut buffer = [0u8; 5];
    out.extend_from_slice(header_bytes(&mut buffer, kind, size));
}

/// Only text the validation let through is encoded, so this is a bug.
fn malformed() -> Error {
    Error::InvalidInput("a document must be well-formed JSON".into())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// What SQLite's own `jsonb()` makes of `text`.
    fn sqlite_jsonb(connection: &Connection, text: &str) -> Vec<u8> {
        connection
            .query_row("SELECT jsonb(?1)", [text], |row| row.get(0))
            .expect("SQLite encodes valid JSON")
    }

    fn check(connection: &Connection, text: &str) {
        folio_core::validate::document_text(text).expect("a valid document");
        let encoded = encode(text).expect("encodes");
        assert_eq!(
            encoded.jsonb,
            sqlite_jsonb(connection, text),
            "the encoding of {text}"
        );
        assert_eq!(
            encoded.minified,
            folio_core::validate::is_minified(text),
            "minified? {text}"
        );
    }

    #[test]
    fn matches_sqlite_byte_for_byte() {
        let connection = Connection::open_in_memory().unwrap();
        let long = "x".repeat(300);
        let longer = "y".repeat(70_000);
        for text in [
            r#"{}"#,
            r#"{"a":[1,2.5,"x"]}"#,
            r#"{"a":[],"b":{},"c":[[]],"d":null,"e":true,"f":false}"#,
            r#"{"n":-0,"m":-12,"big":123456789012345678901234567890,"f":1e5,"g":-1.5E-7,"h":0.0,"i":2e+10}"#,
            r#"{"s":"plain","t":"tab\tquote\"slash\/back\\","u":"\u00e9\ud83d\ude00","v":"é😀"}"#,
            r#"{"k\"ey":1,"":2,"ü":"ö"}"#,
            "{ \"spaced\" : [ 1 , 2 ] ,\n\t\"x\" : { } }\r\n",
            r#"{"a":"exactly eleven","bb":"twelve bytes"}"#,
        ] {
            check(&connection, text);
        }
        check(
            &connection,
            &format!(r#"{{"long":"{long}","nested":{{"l":"{long}"}}}}"#),
        );
        check(
            &connection,
            &format!(r#"{{"longer":"{longer}","after":[1,{{"x":"{long}"}}]}}"#),
        );
        let deep = format!("{{\"d\":{}1{}}}", "[".repeat(127), "]".repeat(127));
        check(&connection, &deep);
        // Sizes around each header boundary.
        for size in [
            0, 1, 10, 11, 12, 13, 250, 251, 252, 253, 254, 255, 256, 65_530, 65_535, 65_536,
        ] {
            check(&connection, &format!(r#"{{"s":"{}"}}"#, "z".repeat(size)));
            let items = vec!["1"; size.min(40_000)].join(",");
            check(&connection, &format!(r#"{{"a":[{items}]}}"#));
        }
    }

    #[test]
    fn random_documents_match_sqlite() {
        use serde_json::{Map, Value};
        let connection = Connection::open_in_memory().unwrap();
        // A fixed xorshift sequence: the same documents every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        fn value(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> Value {
            let pick = if depth > 4 { next(6) } else { next(8) };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(next(2) == 0),
                2 => Value::from(next(u64::MAX) as i64),
                3 => Value::from((next(1 << 40) as f64) / 7.0 - 1e5),
                4 | 5 => {
                    let alphabet = [
                        "a", "Z", " ", "\"", "\\", "\n", "\u{1}", "é", "😀", "/", "\u{7f}",
                    ];
                    let len = next(20) as usize;
                    Value::String(
                        (0..len)
                            .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                            .collect(),
                    )
                }
                6 => Value::Array((0..next(6)).map(|_| value(next, depth + 1)).collect()),
                _ => {
                    let mut map = Map::new();
                    for n in 0..next(6) {
                        map.insert(format!("k{n}{}", next(3)), value(next, depth + 1));
                    }
                    Value::Object(map)
                }
            }
        }
        for round in 0..2_000 {
            let mut map = Map::new();
            for n in 0..next(8) {
                map.insert(format!("f{n}"), value(&mut next, 0));
            }
            let document = Value::Object(map);
            let text = if round % 2 == 0 {
                serde_json::to_string(&document).unwrap()
            } else {
                serde_json::to_string_pretty(&document).unwrap()
            };
            check(&connection, &text);
        }
    }

    #[test]
    fn what_sqlite_decodes_is_the_text_again() {
        let connection = Connection::open_in_memory().unwrap();
        let text = r#"{"a":[1,2.5,"x\ty"],"b":{"c":null}}"#;
        let encoded = encode(text).unwrap();
        let decoded: String = connection
            .query_row("SELECT json(?1)", [encoded.jsonb], |row| row.get(0))
            .unwrap();
        assert_eq!(decoded, text);
    }

    #[test]
    fn malformed_text_is_refused_not_encoded() {
        for text in [
            r#"{"a":}"#,
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x}"#,
            r#"{} x"#,
        ] {
            assert!(encode(text).is_err(), "{text}");
        }
    }
}
