//! Translation of the query AST to PostgreSQL SQL over the `jsonb` column.
//!
//! Values are always bound parameters (sent as JSON text and cast, so that
//! `1`, `"1"` and `true` stay distinct: jsonb equality is typed). Field paths
//! are validated by [`FieldPath`] to `[A-Za-z0-9_-]` segments and written as
//! `text[]` literals (`data #> '{"address","city"}'`), the same text that
//! `ensure_index` indexes, so PostgreSQL can use the index.
//!
//! Strings compare and sort by code point (`COLLATE "C"`), numbers
//! numerically, and documents without the field (or with `null`) sort last,
//! as in the embedded engine.

use std::fmt::Write as _;

use folio_core::{FieldPath, Filter, Op, Query, Result};
use serde_json::Value;

/// A compiled statement: SQL text and its parameters (all text) in order.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Param>,
}

/// A statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Integer(i64),
}

impl Sql {
    fn new(text: String) -> Self {
        Sql {
            text,
            params: Vec::new(),
        }
    }

    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }

    /// Binds a JSON value as `$n::text::jsonb`.
    fn bind_json(&mut self, value: &Value) -> String {
        format!("{}::text::jsonb", self.bind(Param::Text(value.to_string())))
    }

    /// Binds a string as `$n::text`.
    fn bind_text(&mut self, text: &str) -> String {
        format!("{}::text", self.bind(Param::Text(text.to_owned())))
    }
}

/// The `text[]` literal of `path`: `'{"address","city"}'`.
pub(crate) fn path_literal(path: &FieldPath) -> String {
    let mut literal = String::from("'{");
    for (index, segment) in path.segments().iter().enumerate() {
        if index > 0 {
            literal.push(',');
        }
        // Segments are [A-Za-z0-9_-]+ (FieldPath guarantees it): no quote can occur.
        write!(literal, "\"{segment}\"").expect("writing to a String cannot fail");
    }
    literal.push_str("}'");
    literal
}

/// The field as jsonb; `ensure_index` indexes exactly this expression.
pub(crate) fn field(path: &FieldPath) -> String {
    format!("(data #> {})", path_literal(path))
}

fn field_text(path: &FieldPath) -> String {
    format!("(data #>> {})", path_literal(path))
}

fn json_type(path: &FieldPath) -> String {
    format!("jsonb_typeof(data #> {})", path_literal(path))
}

/// The columns every entry read selects, in the order `read_entry` expects.
pub(crate) const ENTRY_COLUMNS: &str = "id, etag, revision, last_modified, data::text";

/// `SELECT <entry columns> … ORDER BY … LIMIT … OFFSET …` for `query`.
pub(crate) fn select(schema: &str, query: &Query) -> Result<Sql> {
    query.validate()?;
    let mut sql = Sql::new(format!("SELECT {ENTRY_COLUMNS} FROM {schema}.documents"));
    where_clause(&mut sql, query);
    sql.text.push_str(" ORDER BY ");
    for order in &query.order_by {
        let direction = if order.desc { "DESC" } else { "ASC" };
        let t = json_type(&order.path);
        write!(
            sql.text,
            "({t} IS NULL OR {t} = 'null') ASC, \
             (CASE {t} WHEN 'number' THEN 0 WHEN 'string' THEN 1 ELSE 2 END) {direction}, \
             (CASE WHEN {t} = 'number' THEN {}::numeric END) {direction}, \
             (CASE WHEN {t} = 'string' THEN {} END) COLLATE \"C\" {direction}, ",
            field_text(&order.path),
            field_text(&order.path),
        )
        .expect("infallible");
    }
    sql.text.push_str("id ASC");
    if let Some(take) = query.take {
        let limit = sql.bind(Param::Integer(i64::try_from(take).unwrap_or(i64::MAX)));
        write!(sql.text, " LIMIT {limit}::bigint").expect("infallible");
    }
    if query.skip > 0 {
        let offset = sql.bind(Param::Integer(
            i64::try_from(query.skip).unwrap_or(i64::MAX),
        ));
        write!(sql.text, " OFFSET {offset}::bigint").expect("infallible");
    }
    Ok(sql)
}

/// `SELECT count(*) …` for `query`'s filters.
pub(crate) fn count(schema: &str, query: &Query) -> Result<Sql> {
    query.validate()?;
    let mut sql = Sql::new(format!("SELECT count(*) FROM {schema}.documents"));
    where_clause(&mut sql, query);
    Ok(sql)
}

/// Every collection that holds documents, with how many.
pub(crate) fn collections(schema: &str) -> Sql {
    Sql::new(format!(
        "SELECT collection, count(*) FROM {schema}.documents GROUP BY collection"
    ))
}

fn where_clause(sql: &mut Sql, query: &Query) {
    let collection = sql.bind_text(&query.collection);
    write!(sql.text, " WHERE collection = {collection}").expect("infallible");
    for filter in &query.filters {
        let condition = condition(sql, filter);
        write!(sql.text, " AND {condition}").expect("infallible");
    }
}

fn condition(sql: &mut Sql, filter: &Filter) -> String {
    let path = &filter.path;
    match filter.op {
        Op::Eq => equals(sql, path, &filter.value),
        Op::Ne => format!("NOT coalesce({}, false)", equals(sql, path, &filter.value)),
        Op::Lt => compare(sql, path, "<", &filter.value),
        Op::Le => compare(sql, path, "<=", &filter.value),
        Op::Gt => compare(sql, path, ">", &filter.value),
        Op::Ge => compare(sql, path, ">=", &filter.value),
        Op::In => {
            let values = filter
                .value
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if values.is_empty() {
                return "false".into();
            }
            // Non-null scalars: jsonb equality with each, as one list
            // (hashed by PostgreSQL) rather than a chain of `OR`s.
            let values: Vec<String> = values.iter().map(|value| sql.bind_json(value)).collect();
            format!("{} IN ({})", field(path), values.join(", "))
        }
        Op::Contains => {
            let element = sql.bind_json(&filter.value);
            let in_array = format!(
                "({} = 'array' AND {} @> jsonb_build_array({element}))",
                json_type(path),
                field(path)
            );
            match &filter.value {
                Value::String(needle) => {
                    let needle = sql.bind_text(needle);
                    format!(
                        "({in_array} OR ({} = 'string' AND strpos({}, {needle}) > 0))",
                        json_type(path),
                        field_text(path)
                    )
                }
                _ => in_array,
            }
        }
        Op::StartsWith => {
            let prefix = sql.bind_text(filter.value.as_str().unwrap_or_default());
            format!(
                "({} = 'string' AND left({}, length({prefix})) = {prefix})",
                json_type(path),
                field_text(path)
            )
        }
        Op::Exists => {
            let present = filter.value.as_bool().unwrap_or(true);
            format!(
                "{} IS {}NULL",
                field(path),
                if present { "NOT " } else { "" }
            )
        }
    }
}

/// True when the field equals `value` (jsonb equality: typed), NULL or
/// false otherwise.
fn equals(sql: &mut Sql, path: &FieldPath, value: &Value) -> String {
    match value {
        Value::Null => format!(
            "({} IS NULL OR {} = 'null'::jsonb)",
            field(path),
            field(path)
        ),
        _ => format!("{} = {}", field(path), sql.bind_json(value)),
    }
}

fn compare(sql: &mut Sql, path: &FieldPath, operator: &str, value: &Value) -> String {
    match value {
        Value::String(text) => {
            let param = sql.bind_text(text);
            format!(
                "({} = 'string' AND {} COLLATE \"C\" {operator} {param})",
                json_type(path),
                field_text(path)
            )
        }
        _ => {
            let param = sql.bind_json(value);
            format!(
                "({} = 'number' AND {} {operator} {param})",
                json_type(path),
                field(path)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use folio_core::{Op, Query};

    use super::*;

    #[test]
    fn equality_and_order() {
        let sql = select(
            "\"folio_x\"",
            &Query::new("people")
                .filter("address.city", Op::Eq, "Oslo")
                .unwrap()
                .take(10),
        )
        .unwrap();
        assert_eq!(
            sql.text,
            "SELECT id, etag, revision, last_modified, data::text FROM \"folio_x\".documents \
             WHERE collection = $1::text AND (data #> '{\"address\",\"city\"}') = $2::text::jsonb \
             ORDER BY id ASC LIMIT $3::bigint"
        );
        assert_eq!(sql.params.len(), 3);
    }

    #[test]
    fn values_are_always_parameters() {
        let sql = select(
            "s",
            &Query::new("people")
                .filter("name", Op::StartsWith, "x' OR 1=1 --")
                .unwrap()
                .filter("tags", Op::Contains, "'; DROP TABLE documents; --")
                .unwrap(),
        )
        .unwrap();
        assert!(!sql.text.contains("DROP"));
        assert!(!sql.text.contains("OR 1=1"));
    }

    #[test]
    fn invalid_queries_are_refused() {
        assert!(select("s", &Query::new("bad name")).is_err());
        assert!(
            count(
                "s",
                &Query::new("people").filter("age", Op::Lt, true).unwrap()
            )
            .is_err()
        );
    }
}
