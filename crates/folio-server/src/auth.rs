//! API keys: `Authorization: Bearer <key>`, each key with a role per
//! database.
//!
//! The keys file is JSON:
//!
//! ```json
//! { "keys": [
//!     { "key": "s3cr3t-admin", "roles": { "*": "admin" } },
//!     { "key": "shop-writer",  "roles": { "shop": "write", "*": "read" } }
//! ] }
//! ```
//!
//! A role for `*` applies to every database without its own entry.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, header};
use serde::Deserialize;

use crate::error::ApiError;

/// What a key may do in a database; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Load, list and query.
    Read,
    /// Also put, patch, delete and batches.
    Write,
    /// Also create databases.
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key: String,
    roles: HashMap<String, Role>,
}

/// The configured keys.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<KeyEntry>,
}

impl Keys {
    /// Reads a keys file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the keys file format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: KeysFile =
            serde_json::from_str(text).map_err(|e| format!("invalid keys file: {e}"))?;
        if let Some(short) = file.keys.iter().find(|entry| entry.key.len() < 16) {
            return Err(format!(
                "every key must have at least 16 characters (one has {})",
                short.key.len()
            ));
        }
        Ok(Keys { keys: file.keys })
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The role the request's key has in `database` (`None`: no role there).
    /// Fails with 401 when the key is missing or unknown.
    pub fn role(&self, headers: &HeaderMap, database: &str) -> Result<Option<Role>, ApiError> {
        let entry = self.entry(headers)?;
        Ok(entry
            .roles
            .get(database)
            .or_else(|| entry.roles.get("*"))
            .copied())
    }

    /// Checks that the request carries a known key, whatever its roles.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.entry(headers).map(drop)
    }

    /// Checks that the request's key has at least `needed` in `database`.
    pub fn require(
        &self,
        headers: &HeaderMap,
        database: &str,
        needed: Role,
    ) -> Result<(), ApiError> {
        match self.role(headers, database)? {
            Some(role) if role >= needed => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this key may not {} in database {database:?}",
                match needed {
                    Role::Read => "read",
                    Role::Write => "write",
                    Role::Admin => "administer",
                }
            ))),
        }
    }

    fn entry(&self, headers: &HeaderMap) -> Result<&KeyEntry, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, key) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(key)
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("send an API key: Authorization: Bearer <key>".into())
            })?;
        self.keys
            .iter()
            .find(|entry| constant_time_eq(entry.key.as_bytes(), presented.as_bytes()))
            .ok_or_else(|| ApiError::Unauthorized("unknown API key".into()))
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter()
        .zip(b)
        .fold(0u8, |difference, (x, y)| difference | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn roles_per_database_with_a_default() {
        let keys = Keys::parse(
            r#"{"keys":[{"key":"shop-writer-0000000","roles":{"shop":"write","*":"read"}}]}"#,
        )
        .unwrap();
        let writer = headers("shop-writer-0000000");
        assert!(keys.require(&writer, "shop", Role::Write).is_ok());
        assert!(keys.require(&writer, "shop", Role::Admin).is_err());
        assert!(keys.require(&writer, "other", Role::Read).is_ok());
        assert!(matches!(
            keys.require(&writer, "other", Role::Write),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            keys.require(&headers("nope-nope-nope-nope"), "shop", Role::Read),
            Err(ApiError::Unauthorized(_))
        ));
        let mut lowercase = HeaderMap::new();
        lowercase.insert(
            header::AUTHORIZATION,
            "bearer shop-writer-0000000".parse().unwrap(),
        );
        assert!(keys.require(&lowercase, "shop", Role::Write).is_ok());
        assert!(matches!(
            keys.require(&HeaderMap::new(), "shop", Role::Read),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn refuses_short_keys_and_unknown_roles() {
        assert!(Keys::parse(r#"{"keys":[{"key":"short","roles":{"*":"read"}}]}"#).is_err());
        assert!(
            Keys::parse(r#"{"keys":[{"key":"long-enough-key-123","roles":{"*":"owner"}}]}"#)
                .is_err()
        );
    }
}
