//! HTTP conditional requests (RFC 9110 §13): `If-Match`, `If-None-Match`,
//! and what they require of the stored document.
//!
//! The entity tag of a document is its change vector, quoted:
//! `ETag: "A:42-Yk3q…"`. Nothing else is ever an entity tag.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use folio_core::{ChangeVector, Expectation};

use crate::error::{ApiError, ApiResult, PreconditionFailure};

/// One entity tag of a precondition header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/"…"`: never matches in `If-Match` (strong comparison).
    pub weak: bool,
    /// The tag without quotes: a change vector.
    pub value: String,
}

/// A precondition header's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tags {
    /// `*`: any current version.
    Any,
    /// A list of entity tags.
    List(Vec<EntityTag>),
}

impl Tags {
    /// Parses `*` or a comma-separated list of `"tag"` / `W/"tag"`.
    pub fn parse(value: &str) -> Result<Tags, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Tags::Any);
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start();
            let (weak, after_weak) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let quoted = after_weak
                .strip_prefix('"')
                .ok_or_else(|| format!("an entity tag must be quoted: {value:?}"))?;
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("an entity tag is not closed: {value:?}"))?;
            let tag = &quoted[..end];
            if tag.bytes().any(|b| b < 0x21 || b == 0x7f) {
                return Err(format!(
                    "an entity tag holds an invalid character: {value:?}"
                ));
            }
            tags.push(EntityTag {
                weak,
                value: tag.to_owned(),
            });
            rest = quoted[end + 1..].trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after,
                None if rest.is_empty() => break,
                None => {
                    return Err(format!(
                        "entity tags must be separated by commas: {value:?}"
                    ));
                }
            }
        }
        if tags.is_empty() {
            return Err("an empty precondition".into());
        }
        Ok(Tags::List(tags))
    }

    /// Strong comparison (If-Match): a weak tag never matches.
    fn matches_strongly(&self, current: &ChangeVector) -> bool {
        match self {
            Tags::Any => true,
            Tags::List(tags) => tags
                .iter()
                .any(|tag| !tag.weak && tag.value == current.as_str()),
        }
    }

    /// Weak comparison (If-None-Match).
    fn matches_weakly(&self, current: &ChangeVector) -> bool {
        match self {
            Tags::Any => true,
            Tags::List(tags) => tags.iter().any(|tag| tag.value == current.as_str()),
        }
    }
}

/// The preconditions of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`.
    pub if_match: Option<Tags>,
    /// `If-None-Match`.
    pub if_none_match: Option<Tags>,
}

impl Preconditions {
    /// Reads `If-Match` and `If-None-Match`; 400 when malformed.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        Ok(Preconditions {
            if_match: tags(headers, &header::IF_MATCH)?,
            if_none_match: tags(headers, &header::IF_NONE_MATCH)?,
        })
    }

    /// Whether the request has no precondition.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// When the only precondition is one strong `If-Match` tag, the
    /// expectation it stands for, with no need to read the document first.
    pub fn single_version(&self) -> Option<Expectation> {
        match (&self.if_match, &self.if_none_match) {
            (Some(Tags::List(tags)), None) if tags.len() == 1 && !tags[0].weak => {
                Some(Expectation::version(tags[0].value.as_str()))
            }
            _ => None,
        }
    }

    /// The expectation a write must carry, given the current version
    /// (`None`: the document does not exist); a 412 when the preconditions
    /// do not hold now.
    pub fn expectation(
        &self,
        current: Option<&ChangeVector>,
    ) -> Result<Expectation, PreconditionFailure> {
        let failed = |detail: &str| PreconditionFailure {
            detail: detail.to_owned(),
            actual: current.map(|cv| cv.to_string()),
        };
        if let Some(if_match) = &self.if_match {
            return match current {
                Some(current) if if_match.matches_strongly(current) => {
                    Ok(Expectation::version(current.clone()))
                }
                Some(_) => Err(failed(
                    "If-Match: the document has changed since that version",
                )),
                None => Err(failed("If-Match: the document does not exist")),
            };
        }
        if let Some(if_none_match) = &self.if_none_match {
            return match current {
                Some(current) if if_none_match.matches_weakly(current) => {
                    Err(failed(match if_none_match {
                        Tags::Any => "If-None-Match: *: the document already exists",
                        Tags::List(_) => "If-None-Match: the document has that version",
                    }))
                }
                Some(current) => Ok(Expectation::version(current.clone())),
                None => Ok(Expectation::Missing),
            };
        }
        Ok(Expectation::Any)
    }

    /// Whether a `GET` with these preconditions may answer 304 for `current`.
    pub fn not_modified(&self, current: &ChangeVector) -> bool {
        self.if_none_match
            .as_ref()
            .is_some_and(|tags| tags.matches_weakly(current))
    }
}

fn tags(headers: &HeaderMap, name: &HeaderName) -> ApiResult<Option<Tags>> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut joined = String::new();
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{name}: not visible ASCII")))?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    Tags::parse(&joined)
        .map(Some)
        .map_err(|detail| ApiError::BadRequest(format!("{name}: {detail}")))
}

/// The `ETag` header value of a change vector.
pub fn etag_header(change_vector: &ChangeVector) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{change_vector}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entity_tag_lists() {
        assert_eq!(Tags::parse(" * "), Ok(Tags::Any));
        assert_eq!(
            Tags::parse(r#""A:1-x", W/"A:2-x""#),
            Ok(Tags::List(vec![
                EntityTag {
                    weak: false,
                    value: "A:1-x".into()
                },
                EntityTag {
                    weak: true,
                    value: "A:2-x".into()
                },
            ]))
        );
        for bad in ["", "A:1-x", r#""open"#, r#""a" "b""#, r#""a b""#, ","] {
            assert!(Tags::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn expectations_from_preconditions() {
        let current = ChangeVector::from("A:2-x");
        let if_match = |value: &str| Preconditions {
            if_match: Some(Tags::parse(value).unwrap()),
            if_none_match: None,
        };
        let if_none_match = |value: &str| Preconditions {
            if_match: None,
            if_none_match: Some(Tags::parse(value).unwrap()),
        };
        assert_eq!(
            if_match(r#""A:2-x""#).expectation(Some(&current)).unwrap(),
            Expectation::version("A:2-x")
        );
        assert!(if_match(r#""A:1-x""#).expectation(Some(&current)).is_err());
        assert!(
            if_match(r#"W/"A:2-x""#)
                .expectation(Some(&current))
                .is_err()
        );
        assert!(if_match("*").expectation(None).is_err());
        assert_eq!(
            if_match("*").expectation(Some(&current)).unwrap(),
            Expectation::version("A:2-x")
        );
        assert_eq!(
            if_none_match("*").expectation(None).unwrap(),
            Expectation::Missing
        );
        assert!(if_none_match("*").expectation(Some(&current)).is_err());
        assert!(
            if_none_match(r#"W/"A:2-x""#)
                .expectation(Some(&current))
                .is_err()
        );
        assert_eq!(
            Preconditions::default()
                .expectation(Some(&current))
                .unwrap(),
            Expectation::Any
        );
        assert_eq!(
            if_match(r#""A:9-x""#).single_version(),
            Some(Expectation::version("A:9-x"))
        );
        assert!(if_none_match(r#""A:2-x""#).not_modified(&current));
    }
}
