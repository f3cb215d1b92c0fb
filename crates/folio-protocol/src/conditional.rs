//! HTTP conditional requests (RFC 9110 §13): `If-Match`, `If-None-Match`,
//! `If-Unmodified-Since`, `If-Modified-Since`, and what they require of the
//! stored document, evaluated in §13.2.2's order.
//!
//! The entity tag of a document is its change vector, quoted:
//! `ETag: "A:42-Yk3q…"`. Nothing else is ever an entity tag.

use std::time::{SystemTime, UNIX_EPOCH};

use folio_core::{ChangeVector, Conflict, Error, Expectation, Metadata, Result};
use http::{HeaderMap, HeaderName, HeaderValue, header};

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
    pub fn parse(value: &str) -> std::result::Result<Tags, String> {
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

/// The preconditions of a request (RFC 9110 §13.1).
///
/// Dates compare at the precision of an HTTP date, whole seconds: a
/// version's `Last-Modified` is its commit time (stored in milliseconds)
/// truncated to the second, so a version written later within the same
/// second as a date counts as not modified since it. Only an entity tag
/// names a version exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`.
    pub if_match: Option<Tags>,
    /// `If-None-Match`.
    pub if_none_match: Option<Tags>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<SystemTime>,
    /// `If-Modified-Since` (only GET and HEAD heed it).
    pub if_modified_since: Option<SystemTime>,
}

/// What a failed precondition found: answered `412` with `actual`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreconditionFailure {
    /// Why, in words.
    pub detail: String,
    /// The document's current change vector (`None`: it does not exist).
    pub actual: Option<String>,
    /// The refusal as a conflict, with what is stored now (the one
    /// element of the problem's `conflicts`), when the request named one
    /// document.
    pub conflict: Option<Box<Conflict>>,
}

impl PreconditionFailure {
    /// The failure with `conflict` (what is stored now) attached.
    pub fn with_conflict(mut self, conflict: Conflict) -> Self {
        self.conflict = Some(Box::new(conflict));
        self
    }
}

/// What a request's preconditions say about the stored version.
#[derive(Debug)]
pub enum Evaluation {
    /// Perform the request.
    Proceed,
    /// A GET or HEAD: answer `304 Not Modified`.
    NotModified,
    /// Answer `412 Precondition Failed`.
    Failed(PreconditionFailure),
}

impl Preconditions {
    /// Reads the precondition headers: `If-Match` and `If-None-Match`
    /// (400 when malformed), `If-Unmodified-Since` (400 when not one valid
    /// HTTP date: a client that meant to guard a write must not get an
    /// unguarded one) and `If-Modified-Since` (ignored when not one valid
    /// HTTP date, as RFC 9110 §13.1.3 says: it only spares a transfer).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self> {
        Ok(Preconditions {
            if_match: tags(headers, &header::IF_MATCH)?,
            if_none_match: tags(headers, &header::IF_NONE_MATCH)?,
            if_unmodified_since: match date(headers, &header::IF_UNMODIFIED_SINCE) {
                Date::Absent => None,
                Date::Valid(date) => Some(date),
                Date::Invalid => {
                    return Err(Error::InvalidInput(
                        "If-Unmodified-Since: not an HTTP date (such as \
                         \"Sun, 06 Nov 1994 08:49:37 GMT\")"
                            .into(),
                    ));
                }
            },
            if_modified_since: match date(headers, &header::IF_MODIFIED_SINCE) {
                Date::Valid(date) => Some(date),
                Date::Absent | Date::Invalid => None,
            },
        })
    }

    /// Whether the request has no precondition a write heeds.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// Whether the preconditions name the version the client read: an
    /// `If-Match` with entity tags. Only such a request may change an
    /// existing document of a collection that requires preconditions;
    /// `If-Match: *`, `If-None-Match` with entity tags and
    /// `If-Unmodified-Since` name no version (`If-None-Match: *` only
    /// creates).
    pub fn names_version(&self) -> bool {
        matches!(self.if_match, Some(Tags::List(_)))
    }

    /// The expectation a write may carry without reading the document
    /// first, when the preconditions are exactly one strong `If-Match` tag
    /// (that version) or `If-None-Match: *` (no document).
    pub fn without_reading(&self) -> Option<Expectation> {
        if self.if_unmodified_since.is_some() {
            return None;
        }
        match (&self.if_match, &self.if_none_match) {
            (Some(Tags::List(tags)), None) if tags.len() == 1 && !tags[0].weak => {
                Some(Expectation::version(tags[0].value.as_str()))
            }
            (None, Some(Tags::Any)) => Some(Expectation::Missing),
            _ => None,
        }
    }

    /// What the preconditions expect of the stored document, as a
    /// conflict names it: the version of the first `If-Match` tag,
    /// `missing` for `If-None-Match`, else `any` (`If-Match: *`, dates).
    pub fn expected(&self) -> Expectation {
        match (&self.if_match, &self.if_none_match) {
            (Some(Tags::List(tags)), _) if !tags.is_empty() => {
                Expectation::version(tags[0].value.as_str())
            }
            (None, Some(_)) => Expectation::Missing,
            _ => Expectation::Any,
        }
    }

    /// Why a write that carried [`Preconditions::without_reading`]'s
    /// expectation was refused, given what is stored now.
    pub fn refused(&self, actual: Option<&ChangeVector>) -> PreconditionFailure {
        let detail = match (&self.if_none_match, actual) {
            (Some(_), _) => "If-None-Match: *: the document already exists",
            (None, Some(_)) => "If-Match: the document has changed since that version",
            (None, None) => "If-Match: the document does not exist",
        };
        PreconditionFailure {
            detail: detail.to_owned(),
            actual: actual.map(ToString::to_string),
            conflict: None,
        }
    }

    /// Evaluates the preconditions against the stored version (`None`: no
    /// document) in RFC 9110 §13.2.2's order: `If-Match`, else
    /// `If-Unmodified-Since`; then `If-None-Match`, else, for a GET or HEAD
    /// (`read`), `If-Modified-Since`.
    pub fn evaluate(&self, current: Option<&Metadata>, read: bool) -> Evaluation {
        let failed = |detail: String| {
            Evaluation::Failed(PreconditionFailure {
                detail,
                actual: current.map(|metadata| metadata.change_vector.to_string()),
                conflict: None,
            })
        };
        if let Some(if_match) = &self.if_match {
            match current {
                Some(current) if if_match.matches_strongly(&current.change_vector) => {}
                Some(_) => {
                    return failed("If-Match: the document has changed since that version".into());
                }
                None => return failed("If-Match: the document does not exist".into()),
            }
        } else if let (Some(date), Some(current)) = (self.if_unmodified_since, current) {
            // A missing document has no modification date: the condition
            // is ignored (RFC 9110 §13.1.4).
            if modified_since(current, date) {
                return failed(format!(
                    "If-Unmodified-Since: the document was modified after {} (it was \
                     modified at {}; dates count whole seconds)",
                    httpdate::fmt_http_date(date),
                    httpdate::fmt_http_date(current.last_modified)
                ));
            }
        }
        if let Some(if_none_match) = &self.if_none_match {
            let matched =
                current.is_some_and(|current| if_none_match.matches_weakly(&current.change_vector));
            if matched {
                if read {
                    return Evaluation::NotModified;
                }
                return failed(match if_none_match {
                    Tags::Any => "If-None-Match: *: the document already exists".into(),
                    Tags::List(_) => "If-None-Match: the document has that version".into(),
                });
            }
        } else if let (true, Some(date), Some(current)) = (read, self.if_modified_since, current)
            && !modified_since(current, date)
        {
            return Evaluation::NotModified;
        }
        Evaluation::Proceed
    }

    /// Evaluates the preconditions of a `POST` to a collection: the
    /// collection always has a representation (its listing) but neither an
    /// entity tag nor a modification date, so `If-Match` holds only as `*`,
    /// `If-None-Match` only with entity tags, and the dates are ignored.
    pub fn evaluate_collection(&self) -> Evaluation {
        let failed = |detail: &str| {
            Evaluation::Failed(PreconditionFailure {
                detail: detail.to_owned(),
                actual: None,
                conflict: None,
            })
        };
        if matches!(self.if_match, Some(Tags::List(_))) {
            return failed("If-Match: a collection has no entity tag to match");
        }
        if matches!(self.if_none_match, Some(Tags::Any)) {
            return failed("If-None-Match: *: the collection exists");
        }
        Evaluation::Proceed
    }
}

/// Whether `current` was modified after `date`, at the precision of an
/// HTTP date (whole seconds).
fn modified_since(current: &Metadata, date: SystemTime) -> bool {
    let seconds = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    };
    seconds(current.last_modified) > seconds(date)
}

enum Date {
    Absent,
    Valid(SystemTime),
    Invalid,
}

/// One HTTP date header (a second line makes it invalid).
fn date(headers: &HeaderMap, name: &HeaderName) -> Date {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Date::Absent;
    };
    if values.next().is_some() {
        return Date::Invalid;
    }
    value
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
        .map_or(Date::Invalid, Date::Valid)
}

fn tags(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Tags>> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut joined = String::new();
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| Error::InvalidInput(format!("{name}: not visible ASCII")))?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    Tags::parse(&joined)
        .map(Some)
        .map_err(|detail| Error::InvalidInput(format!("{name}: {detail}")))
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

    fn metadata(change_vector: &str, seconds: u64, millis: u64) -> Metadata {
        Metadata {
            id: "p1".into(),
            collection: "people".into(),
            change_vector: ChangeVector::from(change_vector),
            revision: 1,
            etag: 1,
            last_modified: UNIX_EPOCH + std::time::Duration::from_millis(seconds * 1000 + millis),
        }
    }

    fn preconditions(headers: &[(&str, &str)]) -> Preconditions {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Preconditions::from_headers(&map).unwrap()
    }

    fn verdict(headers: &[(&str, &str)], current: Option<&Metadata>, read: bool) -> &'static str {
        match preconditions(headers).evaluate(current, read) {
            Evaluation::Proceed => "proceed",
            Evaluation::NotModified => "304",
            Evaluation::Failed(_) => "412",
        }
    }

    /// RFC 9110 §13.2.2, step by step.
    #[test]
    fn preconditions_are_evaluated_in_order() {
        let current = metadata("A:2-x", 1_000, 900);
        let current = Some(&current);
        // Second 1000 is the version's Last-Modified.
        let at = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(1_000));
        let before = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(999));
        for read in [false, true] {
            assert_eq!(
                verdict(&[("if-match", r#""A:2-x""#)], current, read),
                "proceed"
            );
            assert_eq!(verdict(&[("if-match", r#""A:1-x""#)], current, read), "412");
            assert_eq!(
                verdict(&[("if-match", r#"W/"A:2-x""#)], current, read),
                "412"
            );
            assert_eq!(verdict(&[("if-match", "*")], None, read), "412");
            // If-Unmodified-Since: whole seconds.
            assert_eq!(
                verdict(&[("if-unmodified-since", &at)], current, read),
                "proceed"
            );
            assert_eq!(
                verdict(&[("if-unmodified-since", &before)], current, read),
                "412"
            );
            assert_eq!(
                verdict(&[("if-unmodified-since", &before)], None, read),
                "proceed"
            );
            // If-Match wins over If-Unmodified-Since.
            assert_eq!(
                verdict(
                    &[("if-match", r#""A:2-x""#), ("if-unmodified-since", &before)],
                    current,
                    read
                ),
                "proceed"
            );
            // If-None-Match is evaluated after a passing If-Match.
            let stale_or_current = if read { "304" } else { "412" };
            assert_eq!(
                verdict(
                    &[("if-match", r#""A:2-x""#), ("if-none-match", r#""A:2-x""#)],
                    current,
                    read
                ),
                stale_or_current
            );
            assert_eq!(
                verdict(
                    &[("if-match", r#""A:2-x""#), ("if-none-match", "*")],
                    current,
                    read
                ),
                stale_or_current
            );
            assert_eq!(
                verdict(
                    &[("if-match", r#""A:2-x""#), ("if-none-match", r#""A:1-x""#)],
                    current,
                    read
                ),
                "proceed"
            );
            assert_eq!(verdict(&[("if-none-match", "*")], None, read), "proceed");
        }
        // If-Modified-Since: GET and HEAD only, and only without If-None-Match.
        assert_eq!(verdict(&[("if-modified-since", &at)], current, true), "304");
        assert_eq!(
            verdict(&[("if-modified-since", &before)], current, true),
            "proceed"
        );
        assert_eq!(
            verdict(&[("if-modified-since", &at)], current, false),
            "proceed"
        );
        assert_eq!(
            verdict(
                &[("if-modified-since", &at), ("if-none-match", r#""A:1-x""#)],
                current,
                true
            ),
            "proceed"
        );
        assert_eq!(
            verdict(&[("if-modified-since", "yesterday")], current, true),
            "proceed"
        );
    }

    #[test]
    fn what_needs_no_read_and_what_names_a_version() {
        assert_eq!(
            preconditions(&[("if-match", r#""A:9-x""#)]).without_reading(),
            Some(Expectation::version("A:9-x"))
        );
        assert_eq!(
            preconditions(&[("if-none-match", "*")]).without_reading(),
            Some(Expectation::Missing)
        );
        for needs_a_read in [
            &[("if-match", r#""A:9-x", "A:8-x""#)][..],
            &[("if-match", "*")],
            &[("if-none-match", r#""A:9-x""#)],
            &[("if-match", r#""A:9-x""#), ("if-none-match", "*")],
            &[
                ("if-match", r#""A:9-x""#),
                ("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        ] {
            assert_eq!(
                preconditions(needs_a_read).without_reading(),
                None,
                "{needs_a_read:?}"
            );
        }
        assert!(preconditions(&[("if-match", r#""A:9-x""#)]).names_version());
        for no_version in [
            &[("if-match", "*")][..],
            &[("if-none-match", r#""A:9-x""#)],
            &[("if-none-match", "*")],
            &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            &[],
        ] {
            assert!(!preconditions(no_version).names_version(), "{no_version:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_UNMODIFIED_SINCE,
            HeaderValue::from_static("soon"),
        );
        assert!(Preconditions::from_headers(&headers).is_err());
    }
}
