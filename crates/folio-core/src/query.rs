//! The query AST: a collection, filters on JSON field paths, order, paging.
//!
//! Engines translate it to their SQL; field paths are validated here to a
//! strict alphabet so that no engine ever splices unchecked text into SQL.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// The most segments a field path may have.
pub(crate) const MAX_PATH_SEGMENTS: usize = 16;
/// The longest field path segment.
pub(crate) const MAX_SEGMENT_LEN: usize = 64;

/// A dotted path to a field inside a document, e.g. `address.city`.
///
/// Each segment is 1–64 characters of `A-Z a-z 0-9 _ -`, at most 16 segments.
///
/// ```
/// use folio_core::FieldPath;
///
/// let path = FieldPath::parse("address.city").unwrap();
/// assert_eq!(path.segments(), ["address", "city"]);
/// assert!(FieldPath::parse("a..b").is_err());
/// assert!(FieldPath::parse("name') OR 1=1 --").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses and validates a dotted path.
    pub fn parse(text: &str) -> Result<Self> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.is_empty() || segments.len() > MAX_PATH_SEGMENTS {
            return Err(invalid_path(text));
        }
        let well_formed = segments.iter().all(|segment| {
            !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_LEN
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed {
            return Err(invalid_path(text));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn invalid_path(text: &str) -> Error {
    Error::InvalidInput(format!(
        "invalid field path {text:?}: use 1 to {MAX_PATH_SEGMENTS} dot-separated names of 1 to \
         {MAX_SEGMENT_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
    ))
}

impl TryFrom<String> for FieldPath {
    type Error = Error;

    fn try_from(value: String) -> Result<Self> {
        FieldPath::parse(&value)
    }
}

impl TryFrom<&str> for FieldPath {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        FieldPath::parse(value)
    }
}

impl From<FieldPath> for String {
    fn from(path: FieldPath) -> Self {
        path.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.text)
    }
}

/// A filter operator.
///
/// Comparisons only match fields of the same JSON type as the value (a
/// number never equals a string, `true` never equals `1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal; `null` matches a null or absent field.
    Eq,
    /// Not equal; matches absent fields too.
    Ne,
    /// Less than (numbers or strings).
    Lt,
    /// Less than or equal (numbers or strings).
    Le,
    /// Greater than (numbers or strings).
    Gt,
    /// Greater than or equal (numbers or strings).
    Ge,
    /// Equal to one of the values of an array.
    In,
    /// An array field holding the value as an element, or a string field
    /// holding the (string) value as a substring.
    Contains,
    /// A string field starting with the (string) value; case-sensitive.
    StartsWith,
    /// With `true`: the field is present (even if null); with `false`: absent.
    Exists,
}

/// One condition of a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The field.
    pub path: FieldPath,
    /// The operator.
    pub op: Op,
    /// The operand (see [`Op`] for what each operator takes).
    #[serde(default)]
    pub value: Value,
}

impl Filter {
    /// Checks that the operand suits the operator.
    pub fn validate(&self) -> Result<()> {
        let fits = match self.op {
            Op::Eq | Op::Ne => is_scalar(&self.value),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => self.value.is_number() || self.value.is_string(),
            Op::In => self.value.as_array().is_some_and(|values| {
                values
                    .iter()
                    .all(|value| is_scalar(value) && !value.is_null())
            }),
            Op::Contains => is_scalar(&self.value) && !self.value.is_null(),
            Op::StartsWith => self.value.is_string(),
            Op::Exists => self.value.is_boolean(),
        };
        if holds_nul(&self.value) {
            return Err(Error::InvalidInput(format!(
                "the value of {} holds the character U+0000, which no document can hold",
                self.path
            )));
        }
        if fits {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "operator {:?} on {} does not take {}: {}",
                self.op,
                self.path,
                self.value,
                match self.op {
                    Op::Eq | Op::Ne => "use a string, number, boolean or null",
                    Op::Lt | Op::Le | Op::Gt | Op::Ge => "use a number or a string",
                    Op::In => "use an array of strings, numbers or booleans",
                    Op::Contains => "use a string, number or boolean",
                    Op::StartsWith => "use a string",
                    Op::Exists => "use true or false",
                }
            )))
        }
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(values) => values.iter().any(holds_nul),
        _ => false,
    }
}

fn is_scalar(value: &Value) -> bool {
    !(value.is_array() || value.is_object())
}

/// One ordering key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The field.
    pub path: FieldPath,
    /// Descending instead of ascending.
    #[serde(default)]
    pub desc: bool,
}

/// A query over one collection, serialized as in the HTTP protocol:
/// `{ "collection", "where": [...], "order_by": [...], "skip", "take" }`.
///
/// Results are ordered by the `order_by` keys, then by id, so paging with
/// `skip`/`take` is stable.
///
/// ```
/// use folio_core::{Op, Query};
///
/// let query = Query::new("people")
///     .filter("address.city", Op::Eq, "Oslo").unwrap()
///     .order_by("age", true).unwrap()
///     .take(10);
/// assert!(query.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The collection to search.
    pub collection: String,
    /// Conditions, all of which must hold.
    #[serde(default, rename = "where")]
    pub filters: Vec<Filter>,
    /// Ordering keys, most significant first.
    #[serde(default)]
    pub order_by: Vec<Order>,
    /// How many results to skip.
    #[serde(default, deserialize_with = "count::skip")]
    pub skip: u64,
    /// How many results to return at most (`None`: all).
    #[serde(default, deserialize_with = "count::take")]
    pub take: Option<u64>,
}

/// `skip` and `take` in JSON: whole numbers, also when written with a
/// fraction of zero (`10.0`), as JSON Schema's `integer` allows.
mod count {
    use serde::{Deserialize, Deserializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
    }

    fn whole<'de, D: Deserializer<'de>>(number: Number) -> Result<u64, D::Error> {
        match number {
            Number::Whole(whole) => Ok(whole),
            // Exactly representable: below 2^53, and no fraction.
            Number::Float(float)
                if float.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&float) =>
            {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(float as u64)
            }
            Number::Float(float) => Err(D::Error::custom(format!(
                "expected a whole number of at least 0, got {float}"
            ))),
        }
    }

    pub(super) fn skip<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        whole::<D>(Number::deserialize(deserializer)?)
    }

    pub(super) fn take<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        Option::<Number>::deserialize(deserializer)?
            .map(whole::<D>)
            .transpose()
    }
}

impl Query {
    /// The most filters (`where` conditions) a query may have.
    pub const MAX_FILTERS: usize = 100;
    /// The most values the operand of one `in` filter may hold.
    pub const MAX_IN_VALUES: usize = 1000;
    /// The most values the `in` filters of one query may hold together.
    pub const MAX_QUERY_VALUES: usize = 10_000;
    /// The most ordering keys a query may have.
    pub const MAX_ORDER_KEYS: usize = 32;

    /// A query for every document of `collection`.
    pub fn new(collection: impl Into<String>) -> Self {
        Query {
            collection: collection.into(),
            filters: Vec::new(),
            order_by: Vec::new(),
            skip: 0,
            take: None,
        }
    }

    /// Adds a filter; fails on a malformed path.
    pub fn filter(mut self, path: &str, op: Op, value: impl Into<Value>) -> Result<Self> {
        self.filters.push(Filter {
            path: FieldPath::parse(path)?,
            op,
            value: value.into(),
        });
        Ok(self)
    }

    /// Adds an ordering key; fails on a malformed path.
    pub fn order_by(mut self, path: &str, desc: bool) -> Result<Self> {
        self.order_by.push(Order {
            path: FieldPath::parse(path)?,
            desc,
        });
        Ok(self)
    }

    /// Sets how many results to skip.
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    /// Sets how many results to return at most.
    pub fn take(mut self, take: u64) -> Self {
        self.take = Some(take);
        self
    }

    /// Checks the collection name, every filter, that `skip` and `take`
    /// fit SQL's 64-bit signed integers, and the size of the query: at most
    /// [`Query::MAX_FILTERS`] filters, [`Query::MAX_IN_VALUES`] values in one `in`,
    /// [`Query::MAX_QUERY_VALUES`] in all the `in`s together, and
    /// [`Query::MAX_ORDER_KEYS`] ordering keys. Every engine serves every query
    /// within these limits (SQLite refuses expressions deeper than 1000
    /// terms or with more than 32,766 parameters, PostgreSQL statements
    /// with more than 65,535 parameters or 1,664 result columns, sort keys
    /// included).
    ///
    /// ```
    /// use folio_core::{Op, Query};
    ///
    /// let values: Vec<u64> = (0..=Query::MAX_IN_VALUES as u64).collect();
    /// let query = Query::new("people").filter("age", Op::In, values).unwrap();
    /// assert!(query.validate().unwrap_err().to_string().contains("at most 1000 values"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        crate::validate::collection(&self.collection)?;
        if self.filters.len() > Self::MAX_FILTERS {
            return Err(Error::InvalidInput(format!(
                "a query has at most {} filters; this one has {}",
                Self::MAX_FILTERS,
                self.filters.len()
            )));
        }
        if self.order_by.len() > Self::MAX_ORDER_KEYS {
            return Err(Error::InvalidInput(format!(
                "a query has at most {} ordering keys; this one has {}",
                Self::MAX_ORDER_KEYS,
                self.order_by.len()
            )));
        }
        let mut values = 0;
        for filter in &self.filters {
            if let (Op::In, Some(operand)) = (filter.op, filter.value.as_array()) {
                if operand.len() > Self::MAX_IN_VALUES {
                    return Err(Error::InvalidInput(format!(
                        "an in filter takes at most {} values; the one on {} has {}",
                        Self::MAX_IN_VALUES,
                        filter.path,
                        operand.len()
                    )));
                }
                values += operand.len();
            }
        }
        if values > Self::MAX_QUERY_VALUES {
            return Err(Error::InvalidInput(format!(
                "the in filters of a query take at most {} values together; this one has {values}",
                Self::MAX_QUERY_VALUES
            )));
        }
        for (name, count) in [("skip", Some(self.skip)), ("take", self.take)] {
            if count.is_some_and(|count| i64::try_from(count).is_err()) {
                return Err(Error::InvalidInput(format!(
                    "{name} is at most {}",
                    i64::MAX
                )));
            }
        }
        self.filters.iter().try_for_each(Filter::validate)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_the_protocol_form() {
        let query: Query = serde_json::from_value(json!({
            "collection": "people",
            "where": [ { "path": "address.city", "op": "eq", "value": "Oslo" } ],
            "order_by": [ { "path": "age", "desc": true } ],
            "skip": 0, "take": 50
        }))
        .unwrap();
        assert_eq!(query.filters[0].path.segments(), ["address", "city"]);
        assert_eq!(query.filters[0].op, Op::Eq);
        assert!(query.order_by[0].desc);
        assert_eq!(query.take, Some(50));
        query.validate().unwrap();
    }

    /// A misspelt field is an error, not a default: `"valeu"` in an `eq`
    /// filter would otherwise query for `null`.
    #[test]
    fn unknown_fields_of_filters_and_orders_are_refused() {
        let parse = |text: &str| serde_json::from_str::<Query>(text);
        let misspelt = parse(r#"{"collection":"c","where":[{"path":"a","op":"eq","valeu":"x"}]}"#)
            .unwrap_err();
        assert!(misspelt.to_string().contains("valeu"), "{misspelt}");
        let misspelt =
            parse(r#"{"collection":"c","order_by":[{"path":"a","descending":true}]}"#).unwrap_err();
        assert!(misspelt.to_string().contains("descending"), "{misspelt}");
    }

    #[test]
    fn skip_and_take_are_whole_numbers() {
        let parse = |text: &str| serde_json::from_str::<Query>(text);
        let query = parse(r#"{"collection":"c","skip":10.0,"take":5}"#).unwrap();
        assert_eq!((query.skip, query.take), (10, Some(5)));
        assert_eq!(
            parse(r#"{"collection":"c","take":null}"#).unwrap().take,
            None
        );
        assert!(Query::new("c").skip(u64::MAX).validate().is_err());
        assert!(Query::new("c").take(1 << 63).validate().is_err());
        assert!(Query::new("c").skip(i64::MAX as u64).validate().is_ok());
        for bad in [
            r#""skip":1.5"#,
            r#""skip":-1"#,
            r#""take":-2.0"#,
            r#""skip":"1""#,
            r#""take":1e300"#,
        ] {
            assert!(
                parse(&format!(r#"{{"collection":"c",{bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_malformed_paths_in_json() {
        let bad = serde_json::from_value::<Query>(json!({
            "collection": "people",
            "where": [ { "path": "a')--", "op": "eq", "value": 1 } ]
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn operands_must_suit_operators() {
        let check = |op, value: Value| {
            Filter {
                path: FieldPath::parse("f").unwrap(),
                op,
                value,
            }
            .validate()
        };
        assert!(check(Op::Eq, json!(null)).is_ok());
        assert!(check(Op::Eq, json!({"a": 1})).is_err());
        assert!(check(Op::Lt, json!(true)).is_err());
        assert!(check(Op::In, json!([1, "a"])).is_ok());
        assert!(check(Op::In, json!(1)).is_err());
        assert!(check(Op::StartsWith, json!(1)).is_err());
        assert!(check(Op::Exists, json!(true)).is_ok());
        assert!(check(Op::Exists, json!("yes")).is_err());
        assert!(check(Op::Contains, json!(null)).is_err());
        assert!(check(Op::Eq, json!("a\u{0}b")).is_err());
        assert!(check(Op::In, json!(["a", "\u{0}"])).is_err());
    }

    #[test]
    fn size_limits() {
        let many = |count: usize| Value::Array((0..count as u64).map(Value::from).collect());
        let with_filters = |count: usize| {
            (0..count).fold(Query::new("c"), |query, n| {
                query.filter(&format!("f{n}"), Op::Eq, 1).unwrap()
            })
        };
        let with_keys = |count: usize| {
            (0..count).fold(Query::new("c"), |query, n| {
                query.order_by(&format!("k{n}"), false).unwrap()
            })
        };
        let with_ins = |count: usize, each: usize| {
            (0..count).fold(Query::new("c"), |query, n| {
                query.filter(&format!("f{n}"), Op::In, many(each)).unwrap()
            })
        };
        let refused = |query: Query, words: &str| {
            let message = query.validate().unwrap_err().to_string();
            assert!(message.contains(words), "{message}");
        };
        assert!(with_filters(Query::MAX_FILTERS).validate().is_ok());
        refused(
            with_filters(Query::MAX_FILTERS + 1),
            "at most 100 filters; this one has 101",
        );
        assert!(with_keys(Query::MAX_ORDER_KEYS).validate().is_ok());
        refused(
            with_keys(Query::MAX_ORDER_KEYS + 1),
            "at most 32 ordering keys; this one has 33",
        );
        assert!(with_ins(1, Query::MAX_IN_VALUES).validate().is_ok());
        refused(
            with_ins(1, Query::MAX_IN_VALUES + 1),
            "the one on f0 has 1001",
        );
        assert!(with_ins(10, Query::MAX_IN_VALUES).validate().is_ok());
        let mut past = with_ins(10, Query::MAX_IN_VALUES);
        past = past.filter("g", Op::In, many(1)).unwrap();
        refused(past, "at most 10000 values together; this one has 10001");
    }

    #[test]
    fn path_limits() {
        assert!(FieldPath::parse(&vec!["a"; 16].join(".")).is_ok());
        assert!(FieldPath::parse(&vec!["a"; 17].join(".")).is_err());
        assert!(FieldPath::parse(&"a".repeat(64)).is_ok());
        assert!(FieldPath::parse(&"a".repeat(65)).is_err());
        for bad in ["", ".", "a.", ".a", "a b", "a\"b", "a'b", "a$b", "a[0]"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
