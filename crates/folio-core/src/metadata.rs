use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ChangeVector;

/// What Folio knows about one stored version of a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id of the document within its collection.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// The change vector of this version (the HTTP `ETag`).
    pub change_vector: ChangeVector,
    /// How many times the document was written: 1 on creation, +1 per update.
    pub revision: u64,
    /// The database-wide etag that the write of this version took.
    pub etag: u64,
    /// When this version was committed (serialized as RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub last_modified: SystemTime,
}

/// A stored document with its metadata, as engines return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The metadata of the stored version.
    pub metadata: Metadata,
    /// The document, a JSON object as text.
    pub document: String,
}

/// What is stored now of a document, as a refused write reports it
/// ([`crate::Conflict::current`]): the document and its version.
///
/// Serialized as in the HTTP problem body: `{ "document": { … },
/// "change_vector", "revision", "last_modified" }`, the document as the
/// JSON object it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// The document, a JSON object as text.
    #[serde(with = "raw_json")]
    pub document: String,
    /// Its change vector.
    pub change_vector: ChangeVector,
    /// How many times it was written.
    pub revision: u64,
    /// When this version was committed.
    #[serde(with = "rfc3339")]
    pub last_modified: SystemTime,
}

impl From<Entry> for StoredDocument {
    fn from(entry: Entry) -> Self {
        StoredDocument {
            document: entry.document,
            change_vector: entry.metadata.change_vector,
            revision: entry.metadata.revision,
            last_modified: entry.metadata.last_modified,
        }
    }
}

/// JSON text written as the JSON value it is (not as a string), and read
/// back as text.
mod raw_json {
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };
    use serde_json::value::RawValue;

    pub(super) fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(text).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<String, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('{') {
            return Err(D::Error::custom("a document is a JSON object"));
        }
        Ok(raw.get().to_owned())
    }
}

/// Converts between [`SystemTime`] and the milliseconds since the Unix epoch
/// that engines store.
pub fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The [`SystemTime`] `millis` milliseconds after the Unix epoch (negative
/// values clamp to the epoch).
pub fn time_from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Times as RFC 3339 text in UTC with milliseconds, as the protocol writes
/// them: `#[serde(with = "folio_core::rfc3339")]` on a `SystemTime` field.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `time` as `2023-11-14T22:13:20.123Z`.
    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    /// Reads RFC 3339 text (any precision).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json_with_rfc3339_times() {
        let metadata = Metadata {
            id: "p1".into(),
            collection: "people".into(),
            change_vector: ChangeVector::from("A:3-x"),
            revision: 2,
            etag: 3,
            last_modified: time_from_millis(1_700_000_000_123),
        };
        let json = serde_json::to_value(&metadata).unwrap();
        assert_eq!(json["last_modified"], "2023-11-14T22:13:20.123Z");
        let back: Metadata = serde_json::from_value(json).unwrap();
        assert_eq!(back, metadata);
        assert_eq!(millis_since_epoch(back.last_modified), 1_700_000_000_123);
    }
}
