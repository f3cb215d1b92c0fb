//! Translation of the query AST to SQLite SQL over the JSONB `data` column.
//!
//! Values are always bound as parameters. Field paths are validated by
//! [`FieldPath`] to `[A-Za-z0-9_-]` segments and written as SQL string
//! literals (`'$."address"."city"'`), which is what lets SQLite match an
//! expression index made by `ensure_index` with the same text.
//!
//! Comparisons are guarded by the JSON type of the field, so that `1` never
//! equals `true` or `"1"` (SQLite's `json_extract` alone would not tell
//! them apart).

use std::fmt::Write as _;

use folio_core::{FieldPath, Filter, Op, Query, Result};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

/// The columns every read selects, in the order `read::entry_from_row` expects.
pub(crate) const ENTRY_COLUMNS: &str = "id, etag, revision, last_modified, json(data)";

/// The SQLite JSON path literal for `path`, e.g. `'$."address"."city"'`.
pub(crate) fn path_literal(path: &FieldPath) -> String {
    let mut literal = String::from("'$");
    for segment in path.segments() {
        // Segments are [A-Za-z0-9_-]+ (FieldPath guarantees it): no quote can occur.
        write!(literal, ".\"{segment}\"").expect("writing to a String cannot fail");
    }
    literal.push('\'');
    literal
}

/// The indexed expression for `path`; `ensure_index` and queries share it.
pub(crate) fn extract(path: &FieldPath) -> String {
    format!("json_extract(data, {})", path_literal(path))
}

/// The name prefix of the indexes `ensure_index` makes:
/// `folio_index:{collection}:{path}`.
pub(crate) const INDEX_PREFIX: &str = "folio_index:";

/// The statement that makes the index of `path` in `collection` (validated
/// to `[A-Za-z0-9_-]`, so safe inside a quoted identifier) if absent: the
/// indexed expression is the one queries use.
pub(crate) fn index_sql(collection: &str, path: &FieldPath) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS \"{INDEX_PREFIX}{collection}:{path}\" ON documents (collection, {})",
        extract(path)
    )
}

fn json_type(path: &FieldPath) -> String {
    format!("json_type(data, {})", path_literal(path))
}

/// A compiled statement: SQL text and its parameters in order.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<SqlValue>,
}

impl Sql {
    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }
}

/// `SELECT <entry columns> … ORDER BY … LIMIT … OFFSET …` for `query`.
pub(crate) fn select(query: &Query) -> Result<Sql> {
    query.validate()?;
    let mut sql = Sql {
        text: format!("SELECT {ENTRY_COLUMNS} FROM documents"),
        params: Vec::new(),
    };
    where_clause(&mut sql, query)?;
    sql.text.push_str(" ORDER BY ");
    for order in &query.order_by {
        let direction = if order.desc { "DESC" } else { "ASC" };
        // Documents without the field come last in both directions.
        write!(
            sql.text,
            "{} {direction} NULLS LAST, ",
            extract(&order.path)
        )
        .expect("infallible");
    }
    sql.text.push_str("id ASC");
    let limit = query
        .take
        .map_or(-1, |take| i64::try_from(take).unwrap_or(i64::MAX));
    let offset = i64::try_from(query.skip).unwrap_or(i64::MAX);
    let limit = sql.bind(SqlValue::Integer(limit));
    let offset = sql.bind(SqlValue::Integer(offset));
    write!(sql.text, " LIMIT {limit} OFFSET {offset}").expect("infallible");
    Ok(sql)
}

/// `SELECT count(*) …` for `query`'s filters.
pub(crate) fn count(query: &Query) -> Result<Sql> {
    query.validate()?;
    let mut sql = Sql {
        text: "SELECT count(*) FROM documents".into(),
        params: Vec::new(),
    };
    where_clause(&mut sql, query)?;
    Ok(sql)
}

fn where_clause(sql: &mut Sql, query: &Query) -> Result<()> {
    let collection = sql.bind(SqlValue::Text(query.collection.clone()));
    write!(sql.text, " WHERE collection = {collection}").expect("infallible");
    for filter in &query.filters {
        let condition = condition(sql, filter);
        write!(sql.text, " AND {condition}").expect("infallible");
    }
    Ok(())
}

fn condition(sql: &mut Sql, filter: &Filter) -> String {
    let path = &filter.path;
    match filter.op {
        Op::Eq => equals(sql, path, &filter.value),
        Op::Ne => format!("NOT coalesce({}, 0)", equals(sql, path, &filter.value)),
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
                return "0".into();
            }
            one_of(sql, path, values)
        }
        Op::Contains => contains(sql, path, &filter.value),
        Op::StartsWith => {
            let prefix = sql.bind(scalar(&filter.value));
            format!(
                "({} = 'text' AND substr({}, 1, length({prefix})) = {prefix})",
                json_type(path),
                extract(path)
            )
        }
        Op::Exists => {
            let present = filter.value.as_bool().unwrap_or(true);
            format!(
                "{} IS {}NULL",
                json_type(path),
                if present { "NOT " } else { "" }
            )
        }
    }
}

/// A condition true when the field equals `value` (same JSON type), false
/// or NULL otherwise (NULL when the field is absent: callers that negate it
/// wrap it in `coalesce`).
///
/// The comparison with `extract(path)` is a plain `AND` term, not wrapped in
/// a function, so that SQLite can use an index made by `ensure_index`.
fn equals(sql: &mut Sql, path: &FieldPath, value: &Value) -> String {
    let json_type = json_type(path);
    match value {
        Value::Null => format!("({json_type} IS NULL OR {json_type} = 'null')"),
        Value::Bool(true) => format!("coalesce({json_type} = 'true', 0)"),
        Value::Bool(false) => format!("coalesce({json_type} = 'false', 0)"),
        Value::Number(_) => {
            let param = sql.bind(scalar(value));
            format!(
                "({} = {param} AND {json_type} IN ('integer', 'real'))",
                extract(path)
            )
        }
        _ => {
            let param = sql.bind(scalar(value));
            format!("({} = {param} AND {json_type} = 'text')", extract(path))
        }
    }
}

/// A condition true when the field equals one of `values` (non-null
/// scalars; same JSON type), as [`equals`] of each would be: one `IN` list
/// of numbers and one of strings, so that a thousand values make flat
/// lists (which an index made by `ensure_index` serves) rather than a
/// chain of a thousand `OR`s, deeper than SQLite takes (1000).
fn one_of(sql: &mut Sql, path: &FieldPath, values: &[Value]) -> String {
    let json_type = json_type(path);
    let (mut numbers, mut strings) = (Vec::new(), Vec::new());
    let (mut true_, mut false_) = (false, false);
    for value in values {
        match value {
            Value::Bool(true) => true_ = true,
            Value::Bool(false) => false_ = true,
            Value::Number(_) => numbers.push(sql.bind(scalar(value))),
            _ => strings.push(sql.bind(scalar(value))),
        }
    }
    let mut alternatives = Vec::new();
    if !numbers.is_empty() {
        alternatives.push(format!(
            "({} IN ({}) AND {json_type} IN ('integer', 'real'))",
            extract(path),
            numbers.join(", ")
        ));
    }
    if !strings.is_empty() {
        alternatives.push(format!(
            "({} IN ({}) AND {json_type} = 'text')",
            extract(path),
            strings.join(", ")
        ));
    }
    for (present, word) in [(true_, "true"), (false_, "false")] {
        if present {
            alternatives.push(format!("coalesce({json_type} = '{word}', 0)"));
        }
    }
    format!("({})", alternatives.join(" OR "))
}

fn compare(sql: &mut Sql, path: &FieldPath, operator: &str, value: &Value) -> String {
    let types = if value.is_number() {
        "IN ('integer', 'real')"
    } else {
        "= 'text'"
    };
    let param = sql.bind(scalar(value));
    format!(
        "({} {types} AND {} {operator} {param})",
        json_type(path),
        extract(path)
    )
}

fn contains(sql: &mut Sql, path: &FieldPath, value: &Value) -> String {
    let element = match value {
        Value::Bool(true) => "type = 'true'".to_owned(),
        Value::Bool(false) => "type = 'false'".to_owned(),
        Value::Number(_) => format!(
            "type IN ('integer', 'real') AND value = {}",
            sql.bind(scalar(value))
        ),
        _ => format!("type = 'text' AND value = {}", sql.bind(scalar(value))),
    };
    let in_array = format!(
        "({} = 'array' AND EXISTS (SELECT 1 FROM json_each(data, {}) WHERE {element}))",
        json_type(path),
        path_literal(path)
    );
    match value {
        Value::String(_) => {
            let needle = sql.bind(scalar(value));
            format!(
                "({in_array} OR ({} = 'text' AND instr({}, {needle}) > 0))",
                json_type(path),
                extract(path)
            )
        }
        _ => in_array,
    }
}

/// A JSON scalar as the SQL value `json_extract` yields for it.
fn scalar(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(flag) => SqlValue::Integer(i64::from(*flag)),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => SqlValue::Integer(integer),
            None => SqlValue::Real(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => SqlValue::Text(text.clone()),
        composite => SqlValue::Text(composite.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use folio_core::{Op, Query};

    use super::*;

    fn check(query: Query, expected_sql: &str, expected_params: usize) {
        let sql = select(&query).unwrap();
        assert_eq!(sql.text, expected_sql);
        assert_eq!(sql.params.len(), expected_params);
    }

    #[test]
    fn equality_and_order() {
        check(
            Query::new("people")
                .filter("address.city", Op::Eq, "Oslo")
                .unwrap()
                .order_by("age", true)
                .unwrap()
                .take(10),
            "SELECT id, etag, revision, last_modified, json(data) FROM documents WHERE collection = ?1 \
             AND (json_extract(data, '$.\"address\".\"city\"') = ?2 AND \
             json_type(data, '$.\"address\".\"city\"') = 'text') \
             ORDER BY json_extract(data, '$.\"age\"') DESC NULLS LAST, id ASC LIMIT ?3 OFFSET ?4",
            4,
        );
    }

    /// A database with an index on `address.city` (made as `ensure_index`
    /// makes it) and statistics on a few hundred people in 20 cities.
    fn indexed_database() -> rusqlite::Connection {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        crate::schema::open(&mut connection).unwrap();
        let path = FieldPath::parse("address.city").unwrap();
        connection
            .execute_batch(&format!(
                "CREATE INDEX \"folio_index:people:address.city\" ON documents (collection, {})",
                extract(&path)
            ))
            .unwrap();
        for n in 0..400 {
            connection
                .execute(
                    "INSERT INTO documents (collection, id, etag, revision, last_modified, data) \
                     VALUES ('people', ?1, ?3, 1, 0, jsonb(?2))",
                    rusqlite::params![
                        format!("p{n}"),
                        format!(r#"{{"address": {{"city": "city{}"}}}}"#, n % 20),
                        n + 1
                    ],
                )
                .unwrap();
        }
        connection.execute_batch("ANALYZE").unwrap();
        connection
    }

    /// The plan SQLite picks for `sql`.
    fn plan(connection: &rusqlite::Connection, sql: &Sql) -> String {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))
            .unwrap();
        let details: Vec<String> = statement
            .query_map(rusqlite::params_from_iter(sql.params.iter()), |row| {
                row.get(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        details.join("; ")
    }

    #[test]
    fn equality_uses_an_index_on_its_path() {
        let connection = indexed_database();
        for value in [Value::from("city7"), Value::from(7)] {
            for op in [Op::Eq, Op::In] {
                let operand = match op {
                    Op::In => Value::Array(vec![value.clone()]),
                    _ => value.clone(),
                };
                let query = Query::new("people")
                    .filter("address.city", op, operand)
                    .unwrap();
                for sql in [select(&query).unwrap(), count(&query).unwrap()] {
                    let chosen = plan(&connection, &sql);
                    assert!(
                        chosen.contains("folio_index:people:address.city"),
                        "{op:?} {value}: {} uses {chosen}",
                        sql.text
                    );
                }
            }
        }
    }

    #[test]
    fn values_are_always_parameters() {
        let sql = select(
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
    fn empty_in_matches_nothing() {
        let sql = count(
            &Query::new("people")
                .filter("age", Op::In, Value::Array(vec![]))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            sql.text,
            "SELECT count(*) FROM documents WHERE collection = ?1 AND 0"
        );
    }

    #[test]
    fn invalid_queries_are_refused() {
        assert!(select(&Query::new("bad name")).is_err());
        assert!(select(&Query::new("people").filter("age", Op::Lt, true).unwrap()).is_err());
    }
}
