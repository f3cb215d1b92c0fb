use std::fmt;

use serde::{Deserialize, Serialize};

/// The opaque token that names one version of one document, e.g. `A:42-Yk3qM0V7sQ2zQp1b9xJc4w`.
///
/// Folio writes change vectors as `A:{etag}-{database id}`, but callers must
/// treat them as opaque: two change vectors are compared only for equality.
/// The change vector is also the HTTP `ETag` of a document.
///
/// ```
/// use folio_core::ChangeVector;
///
/// let cv = ChangeVector::from("A:42-Yk3qM0V7sQ2zQp1b9xJc4w");
/// assert_eq!(cv.as_str(), "A:42-Yk3qM0V7sQ2zQp1b9xJc4w");
/// assert_eq!(cv, ChangeVector::from(String::from("A:42-Yk3qM0V7sQ2zQp1b9xJc4w")));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeVector(String);

impl ChangeVector {
    /// The change vector that Folio stamps on the write that took `etag` in
    /// the database `database`.
    pub fn new(etag: u64, database: &DatabaseId) -> Self {
        ChangeVector(format!("A:{etag}-{}", database.as_str()))
    }

    /// The string form, as sent over HTTP and stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The etag of the write this change vector names, when `database`
    /// issued it (`A:{etag}-{database id}`); `None` for any other token, which
    /// then matches no stored version. For engines: everyone else compares
    /// change vectors for equality only.
    ///
    /// ```
    /// use folio_core::{ChangeVector, DatabaseId};
    ///
    /// let database = DatabaseId::parse("Ab-cdefghijklmnopqrstu").unwrap();
    /// assert_eq!(ChangeVector::new(42, &database).etag_in(&database), Some(42));
    /// assert_eq!(ChangeVector::from("A:42-someone-else").etag_in(&database), None);
    /// ```
    pub fn etag_in(&self, database: &DatabaseId) -> Option<u64> {
        let (etag, tail) = self.0.strip_prefix("A:")?.split_once('-')?;
        // Only the form Folio writes: change vectors compare as strings, so
        // "A:03-…" is not "A:3-…" (no sign, no leading zero).
        let canonical = etag == "0" || (!etag.starts_with('0') && !etag.is_empty());
        if tail != database.as_str() || !canonical || !etag.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        etag.parse().ok()
    }

    /// Consumes the change vector, returning its string form.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for ChangeVector {
    fn from(value: String) -> Self {
        ChangeVector(value)
    }
}

impl From<&str> for ChangeVector {
    fn from(value: &str) -> Self {
        ChangeVector(value.to_owned())
    }
}

impl From<&ChangeVector> for ChangeVector {
    fn from(value: &ChangeVector) -> Self {
        value.clone()
    }
}

impl AsRef<str> for ChangeVector {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChangeVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChangeVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeVector({:?})", self.0)
    }
}

/// The random identity of one database, made once when the database is
/// created: 22 characters of URL-safe base64 (128 random bits).
///
/// It is the tail of every change vector the database issues, so versions of
/// two databases never compare equal even when their etags do.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DatabaseId(String);

impl DatabaseId {
    /// Makes a new random database id from the operating system's generator.
    ///
    /// # Panics
    ///
    /// When the operating system has no random source at all, which no
    /// supported platform lacks.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        DatabaseId(base64_url(&bytes))
    }

    /// Wraps a stored database id, checking its form (22 URL-safe base64
    /// characters).
    pub fn parse(value: &str) -> crate::Result<Self> {
        let well_formed = value.len() == 22
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if well_formed {
            Ok(DatabaseId(value.to_owned()))
        } else {
            Err(crate::Error::InvalidInput(format!(
                "malformed database id {value:?}: expected 22 URL-safe base64 characters"
            )))
        }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 16 bytes as 22 characters of the URL-safe base64 alphabet (RFC 4648 §5),
/// read as one big-endian number in six-bit groups.
fn base64_url(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = u128::from_be_bytes(*bytes);
    // 22 six-bit groups cover 132 bits; the first group holds the top 2 bits.
    (0..22)
        .rev()
        .map(|group| ALPHABET[((value >> (group * 6)) & 0x3f) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_ids_are_22_url_safe_characters_and_differ() {
        let first = DatabaseId::generate();
        let second = DatabaseId::generate();
        assert_eq!(first.as_str().len(), 22);
        assert!(DatabaseId::parse(first.as_str()).is_ok());
        assert_ne!(first, second);
    }

    #[test]
    fn change_vector_names_etag_and_database() {
        let db = DatabaseId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(
            ChangeVector::new(42, &db).as_str(),
            "A:42-AAAAAAAAAAAAAAAAAAAAAA"
        );
    }

    #[test]
    fn base64_matches_known_vector() {
        assert_eq!(base64_url(&[0xff; 16]), "D_____________________");
        assert_eq!(base64_url(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn only_this_databases_change_vectors_name_an_etag() {
        let ours = DatabaseId::parse("Ab-cdefghijklmnopqrstu").unwrap();
        let etag = |text: &str| ChangeVector::from(text).etag_in(&ours);
        assert_eq!(etag("A:42-Ab-cdefghijklmnopqrstu"), Some(42));
        assert_eq!(etag("A:42-Xb-cdefghijklmnopqrstu"), None);
        assert_eq!(etag("A:+42-Ab-cdefghijklmnopqrstu"), None);
        assert_eq!(etag("A:042-Ab-cdefghijklmnopqrstu"), None);
        assert_eq!(etag("A:-Ab-cdefghijklmnopqrstu"), None);
        assert_eq!(etag("A:0-Ab-cdefghijklmnopqrstu"), Some(0));
        assert_eq!(etag("B:42-Ab-cdefghijklmnopqrstu"), None);
        assert_eq!(etag("garbage"), None);
    }

    #[test]
    fn malformed_database_ids_are_refused() {
        assert!(DatabaseId::parse("short").is_err());
        assert!(DatabaseId::parse("AAAAAAAAAAAAAAAAAAAA/A").is_err());
    }
}
