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
