//! Revisions: the kept versions of documents, per collection, opt-in
//! ([`CollectionConfig`]).
//!
//! With revisions on, every committed write of a collection keeps the
//! version it writes, in the same transaction, beside the document (a
//! delete keeps an item saying so): a document's history is its kept
//! versions, newest first, the current one included, and it stays
//! readable after the document is deleted. A refused batch keeps none.
//! Each document keeps at most `keep` items; the oldest go first. Turning
//! revisions off (`keep: 0`) stops recording and keeps what was kept.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{ChangeVector, Error, Result};

/// The most versions a collection may keep per document.
pub const MAX_KEEP: u32 = 10_000;

/// The most revisions one page of [`crate::Engine::revisions`] holds.
pub const MAX_REVISIONS_PAGE: u32 = 1000;

/// A collection's configuration (`PUT /db/{db}/collections/{c}/config`):
/// what the engine does with every write of the collection. Members that
/// are absent are off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Revisions: the versions kept per document.
    #[serde(default)]
    pub revisions: RevisionsConfig,
}

/// How many versions of each document a collection keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionsConfig {
    /// The most versions kept per document, the current one included
    /// (0: revisions off). At most [`MAX_KEEP`].
    pub keep: u32,
}

impl CollectionConfig {
    /// A configuration keeping `keep` versions per document.
    pub fn revisions(keep: u32) -> Self {
        CollectionConfig {
            revisions: RevisionsConfig { keep },
        }
    }

    /// Reads a configuration as the protocol writes it: a JSON object
    /// (members that are absent or null are off, unknown ones refused),
    /// each member an object too, every value in range.
    pub fn from_json(json: &str) -> Result<Self> {
        let refused = |why: String| {
            Error::InvalidInput(format!(
                "not a collection configuration ({{ \"revisions\": {{ \"keep\": N }} }}): {why}"
            ))
        };
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|error| refused(error.to_string()))?;
        let Some(members) = value.as_object_mut() else {
            return Err(refused("it is a JSON object".into()));
        };
        // A member that is null is absent: off.
        members.retain(|_, member| !member.is_null());
        if !members.values().all(serde_json::Value::is_object) {
            return Err(refused("each member is a JSON object (or null)".into()));
        }
        // A whole number written with a fraction (`100.0`) is that number,
        // as JSON Schema counts it.
        for member in members
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            for value in member.values_mut() {
                if let Some(whole) = value
                    .as_f64()
                    .filter(|number| {
                        number.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(number)
                    })
                    .filter(|_| !value.is_u64())
                {
                    *value = serde_json::Value::from(whole as u64);
                }
            }
        }
        let config: CollectionConfig =
            serde_json::from_value(value).map_err(|error| refused(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the configuration an engine stored for `collection` (as
    /// [`CollectionConfig::from_json`]); one it cannot read is damaged
    /// storage ([`crate::EngineErrorKind::Corrupt`]), not bad input.
    pub fn from_stored(collection: &str, json: &str) -> Result<Self> {
        CollectionConfig::from_json(json).map_err(|error| {
            Error::Engine(crate::EngineError::new(
                crate::EngineErrorKind::Corrupt,
                format!("the configuration of collection {collection} is damaged: {error}"),
            ))
        })
    }

    /// Checks the values' ranges: [`Error::InvalidInput`] naming the one out
    /// of range.
    pub fn validate(&self) -> Result<()> {
        if self.revisions.keep > MAX_KEEP {
            return Err(Error::InvalidInput(format!(
                "revisions.keep is {}; a collection keeps 0 (off) to {MAX_KEEP} versions per \
                 document",
                self.revisions.keep
            )));
        }
        Ok(())
    }
}

/// One kept version of a document, as a history lists it (the document
/// itself: [`crate::Engine::revision`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The change vector of this version (of the delete, for a deletion).
    pub change_vector: ChangeVector,
    /// The document's revision number at this version (for a deletion,
    /// that of the version deleted).
    pub revision: u64,
    /// The database-wide etag this version's write took.
    pub etag: u64,
    /// When it was written.
    #[serde(with = "crate::rfc3339")]
    pub last_modified: SystemTime,
    /// Whether this item is the document's deletion (it has no document).
    pub deleted: bool,
}

/// A page of a document's history ([`crate::Engine::revisions`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionsPage {
    /// The kept versions of the page, newest first.
    pub items: Vec<Revision>,
    /// How many versions are kept in all.
    pub total: u64,
}

/// Checks a page request of a history: `take` 1 to [`MAX_REVISIONS_PAGE`].
pub fn validate_page(take: u32) -> Result<()> {
    if take == 0 || take > MAX_REVISIONS_PAGE {
        return Err(Error::InvalidInput(format!(
            "take is {take}; a page of revisions holds 1 to {MAX_REVISIONS_PAGE}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_reads_as_the_protocol_writes_it_and_refuses_the_rest() {
        let config: CollectionConfig =
            serde_json::from_str(r#"{ "revisions": { "keep": 100 } }"#).unwrap();
        assert_eq!(config, CollectionConfig::revisions(100));
        assert_eq!(
            serde_json::from_str::<CollectionConfig>("{}").unwrap(),
            CollectionConfig::default()
        );
        assert!(
            serde_json::from_str::<CollectionConfig>(r#"{ "revision": { "keep": 1 } }"#).is_err()
        );
        assert!(
            serde_json::from_str::<CollectionConfig>(r#"{ "revisions": { "keep": -1 } }"#).is_err()
        );
        assert!(CollectionConfig::revisions(MAX_KEEP).validate().is_ok());
        assert!(
            CollectionConfig::revisions(MAX_KEEP + 1)
                .validate()
                .is_err()
        );
        assert!(validate_page(0).is_err());
        assert!(validate_page(MAX_REVISIONS_PAGE + 1).is_err());
        assert!(validate_page(1).is_ok());
        for bad in [
            "[]",
            r#"{ "revisions": [5] }"#,
            r#"{ "revisions": { "keep": 10001 } }"#,
            "{",
        ] {
            assert!(CollectionConfig::from_json(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CollectionConfig::from_json(r#"{ "revisions": { "keep": 7 } }"#).unwrap(),
            CollectionConfig::revisions(7)
        );
        assert_eq!(
            CollectionConfig::from_json(r#"{ "revisions": null }"#).unwrap(),
            CollectionConfig::default()
        );
        assert_eq!(
            CollectionConfig::from_json(r#"{ "revisions": { "keep": 12.0 } }"#).unwrap(),
            CollectionConfig::revisions(12)
        );
        assert!(CollectionConfig::from_json(r#"{ "revisions": { "keep": 1.5 } }"#).is_err());
    }
}
