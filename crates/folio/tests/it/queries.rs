//! Queries: every operator with its type rules, nested paths, ordering,
//! paging, first/single/count, refused input, values that look like SQL,
//! tracking of query results, indexes and `query_page`.

use folio::{
    ConcurrencyChecks, Document, DocumentStore, Error, Expectation, Op, Query, SessionOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::harness::{Account, Harness, Person, conflicts, seed};

conformance!(
    collections_are_listed_in_code_point_order_with_their_counts,
    equality_is_type_strict,
    null_and_existence,
    not_equal_matches_documents_without_the_field,
    in_with_mixed_scalars,
    contains_on_arrays_and_strings,
    starts_with_is_case_sensitive_and_literal,
    ranges_do_not_cross_types,
    nested_paths,
    several_filters_must_all_hold,
    ordering_puts_missing_fields_last_then_orders_by_id,
    paging_with_skip_and_take_is_stable,
    first_single_and_count,
    malformed_paths_are_refused,
    operands_that_do_not_suit_the_operator_are_refused,
    values_that_look_like_sql_are_matched_literally,
    queries_see_only_their_collection,
    queried_documents_are_tracked_like_loads,
    queried_documents_are_read_guards_with_writes_and_reads,
    an_index_gives_the_same_results,
    query_page_reports_the_total,
    the_largest_queries_are_served_and_larger_ones_refused,
);

// ---- the collection every scenario queries ------------------------------------

/// A document of any shape: the id, and whatever fields the test gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(collection = "customers")]
pub struct Customer {
    pub id: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

fn customer(id: &str, fields: Value) -> Customer {
    let Value::Object(fields) = fields else {
        panic!("a customer's fields are a JSON object")
    };
    Customer {
        id: id.into(),
        fields,
    }
}

/// Eight customers with numbers, strings, booleans, nulls, arrays, nested
/// objects, and fields that some of them lack:
///
/// | id  | name          | age  | score | rank | address.city | tags                 | note              |
/// |-----|---------------|------|-------|------|--------------|----------------------|-------------------|
/// | c01 | Ada           | 36   | 1     | 2    | Oslo         | [vip, early]         | null              |
/// | c02 | alan          | 41   | "1"   | 1    | London       | [new]                | –                 |
/// | c03 | Grace         | 85   | true  | 2    | Oslo         | []                   | retired admiral   |
/// | c04 | Linus         | 28.5 | 2     | 3    | Helsinki     | [vipish, 1, true]    | –                 |
/// | c05 | –             | "40" | null  | –    | null         | "vip-lounge"         | 50%_off           |
/// | c06 | x' OR '1'='1  | 50   | 0     | 1    | (no address) | ["1"]                | –                 |
/// | c07 | Ángel         | 19   | false | null | (address {}) | [true]               | Oslo fan          |
/// | c08 | Berit         | 64   | "one" | –    | oslo         | [VIP]                | –                 |
fn customers() -> Vec<Customer> {
    vec![
        customer(
            "c01",
            json!({"name": "Ada", "age": 36, "score": 1, "rank": 2, "active": true,
                   "address": {"city": "Oslo", "zip": "0150"}, "tags": ["vip", "early"], "note": null}),
        ),
        customer(
            "c02",
            json!({"name": "alan", "age": 41, "score": "1", "rank": 1, "active": false,
                   "address": {"city": "London"}, "tags": ["new"], "email": "alan@example.com"}),
        ),
        customer(
            "c03",
            json!({"name": "Grace", "age": 85, "score": true, "rank": 2, "active": true,
                   "address": {"city": "Oslo"}, "tags": [], "note": "retired admiral"}),
        ),
        customer(
            "c04",
            json!({"name": "Linus", "age": 28.5, "score": 2, "rank": 3,
                   "address": {"city": "Helsinki", "zip": null}, "tags": ["vipish", 1, true]}),
        ),
        customer(
            "c05",
            json!({"age": "40", "score": null, "address": {"city": null},
                   "tags": "vip-lounge", "note": "50%_off"}),
        ),
        customer(
            "c06",
            json!({"name": "x' OR '1'='1", "age": 50, "score": 0, "rank": 1, "active": true,
                   "tags": ["1"]}),
        ),
        customer(
            "c07",
            json!({"name": "Ángel", "age": 19, "score": false, "rank": null, "active": false,
                   "address": {}, "tags": [true], "note": "Oslo fan"}),
        ),
        customer(
            "c08",
            json!({"name": "Berit", "age": 64, "score": "one", "address": {"city": "oslo"},
                   "tags": ["VIP"]}),
        ),
    ]
}

const ALL: [&str; 8] = ["c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08"];

async fn seeded(h: &Harness) -> DocumentStore {
    let store = h.store().await;
    seed(&store, customers()).await;
    store
}

fn ids(found: &[Customer]) -> Vec<&str> {
    found.iter().map(|c| c.id.as_str()).collect()
}

/// One filter and the ids it must find, in id order (the order of a query
/// without `order_by`).
struct Case {
    path: &'static str,
    op: Op,
    value: Value,
    expected: &'static [&'static str],
}

fn case(path: &'static str, op: Op, value: Value, expected: &'static [&'static str]) -> Case {
    Case {
        path,
        op,
        value,
        expected,
    }
}

/// Runs every case as a list and as a count, in a fresh session.
async fn check(store: &DocumentStore, cases: &[Case]) {
    let mut session = store.open_session();
    for Case {
        path,
        op,
        value,
        expected,
    } in cases
    {
        let found = session
            .query::<Customer>()
            .where_op(path, *op, value.clone())
            .to_list()
            .await
            .unwrap_or_else(|error| panic!("{path} {op:?} {value}: {error}"));
        assert_eq!(ids(&found), *expected, "{path} {op:?} {value}");
        let count = session
            .query::<Customer>()
            .where_op(path, *op, value.clone())
            .count()
            .await
            .unwrap();
        assert_eq!(
            count,
            expected.len() as u64,
            "count of {path} {op:?} {value}"
        );
    }
}

// ---- operators ------------------------------------------------------------------

fn equality_cases() -> Vec<Case> {
    vec![
        // A number never equals a string or a boolean, and vice versa.
        case("score", Op::Eq, json!(1), &["c01"]),
        case("score", Op::Eq, json!("1"), &["c02"]),
        case("score", Op::Eq, json!(true), &["c03"]),
        case("score", Op::Eq, json!(false), &["c07"]),
        case("score", Op::Eq, json!(0), &["c06"]),
        case("score", Op::Eq, json!("one"), &["c08"]),
        case("score", Op::Eq, json!(2), &["c04"]),
        case("age", Op::Eq, json!(28.5), &["c04"]),
        case("age", Op::Eq, json!(40), &[]),
        case("age", Op::Eq, json!("40"), &["c05"]),
        case("active", Op::Eq, json!(true), &["c01", "c03", "c06"]),
        case("active", Op::Eq, json!(1), &[]),
        case("active", Op::Eq, json!(false), &["c02", "c07"]),
        case("active", Op::Eq, json!(0), &[]),
        case("name", Op::Eq, json!("Ada"), &["c01"]),
        // Strings compare exactly: no case folding.
        case("name", Op::Eq, json!("ada"), &[]),
        case("name", Op::Eq, json!("Ángel"), &["c07"]),
        // An array or object field never equals a scalar.
        case("tags", Op::Eq, json!("vip"), &[]),
        case("address", Op::Eq, json!("Oslo"), &[]),
    ]
}

async fn equality_is_type_strict(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &equality_cases()).await;
}

fn null_cases() -> Vec<Case> {
    vec![
        // Eq null: the field is null or absent.
        case(
            "note",
            Op::Eq,
            Value::Null,
            &["c01", "c02", "c04", "c06", "c08"],
        ),
        case("score", Op::Eq, Value::Null, &["c05"]),
        case("missing_everywhere", Op::Eq, Value::Null, &ALL),
        // Exists true: present, even when null; false: absent.
        case(
            "note",
            Op::Exists,
            json!(true),
            &["c01", "c03", "c05", "c07"],
        ),
        case(
            "note",
            Op::Exists,
            json!(false),
            &["c02", "c04", "c06", "c08"],
        ),
        case("missing_everywhere", Op::Exists, json!(true), &[]),
        case("missing_everywhere", Op::Exists, json!(false), &ALL),
        case("tags", Op::Exists, json!(true), &ALL),
        // Ne null: present and not null.
        case("note", Op::Ne, Value::Null, &["c03", "c05", "c07"]),
    ]
}

async fn null_and_existence(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &null_cases()).await;
}

async fn not_equal_matches_documents_without_the_field(h: Harness) {
    let store = seeded(&h).await;
    check(
        &store,
        &[
            // Everything but c01: "1", true, null and other numbers differ from 1.
            case(
                "score",
                Op::Ne,
                json!(1),
                &["c02", "c03", "c04", "c05", "c06", "c07", "c08"],
            ),
            // c05 has no name: it is not "Ada".
            case(
                "name",
                Op::Ne,
                json!("Ada"),
                &["c02", "c03", "c04", "c05", "c06", "c07", "c08"],
            ),
            // Null and absent notes are not "retired admiral".
            case(
                "note",
                Op::Ne,
                json!("retired admiral"),
                &["c01", "c02", "c04", "c05", "c06", "c07", "c08"],
            ),
            case(
                "active",
                Op::Ne,
                json!(true),
                &["c02", "c04", "c05", "c07", "c08"],
            ),
            case("missing_everywhere", Op::Ne, json!(1), &ALL),
        ],
    )
    .await;
}

async fn in_with_mixed_scalars(h: Harness) {
    let store = seeded(&h).await;
    check(
        &store,
        &[
            // Each element keeps its type: 1 is not "1", true is not 1.
            case(
                "score",
                Op::In,
                json!([1, "one", true]),
                &["c01", "c03", "c08"],
            ),
            case("score", Op::In, json!(["1", false]), &["c02", "c07"]),
            case("score", Op::In, json!([0, 2]), &["c04", "c06"]),
            case(
                "name",
                Op::In,
                json!(["Ada", "Grace", "Nobody"]),
                &["c01", "c03"],
            ),
            case(
                "age",
                Op::In,
                json!([28.5, "40", 19]),
                &["c04", "c05", "c07"],
            ),
            case("name", Op::In, json!([]), &[]),
            case("missing_everywhere", Op::In, json!([1, "a"]), &[]),
        ],
    )
    .await;
}

fn contains_cases() -> Vec<Case> {
    vec![
        // An element of an array (whole elements only: not "vipish", not
        // "VIP"), or a substring of a string ("vip-lounge").
        case("tags", Op::Contains, json!("vip"), &["c01", "c05"]),
        // Elements keep their type: 1, "1" and true are three different things.
        case("tags", Op::Contains, json!(1), &["c04"]),
        case("tags", Op::Contains, json!("1"), &["c06"]),
        case("tags", Op::Contains, json!(true), &["c04", "c07"]),
        case("tags", Op::Contains, json!("early"), &["c01"]),
        case("tags", Op::Contains, json!("ear"), &[]),
        // Substrings of string fields, case-sensitive.
        case("note", Op::Contains, json!("admiral"), &["c03"]),
        case("note", Op::Contains, json!("Oslo"), &["c07"]),
        case("note", Op::Contains, json!("oslo"), &[]),
        case("name", Op::Contains, json!("a"), &["c01", "c02", "c03"]),
        // LIKE wildcards mean nothing: only the note that has them.
        case("note", Op::Contains, json!("%"), &["c05"]),
        case("note", Op::Contains, json!("_"), &["c05"]),
        case("name", Op::Contains, json!("%"), &[]),
        // A number field holds no elements and no substrings.
        case("age", Op::Contains, json!(36), &[]),
        case("age", Op::Contains, json!("3"), &[]),
    ]
}

async fn contains_on_arrays_and_strings(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &contains_cases()).await;
}

fn starts_with_cases() -> Vec<Case> {
    vec![
        case("name", Op::StartsWith, json!("A"), &["c01"]),
        case("name", Op::StartsWith, json!("a"), &["c02"]),
        case("name", Op::StartsWith, json!("Ada"), &["c01"]),
        case("name", Op::StartsWith, json!("Adam"), &[]),
        case("name", Op::StartsWith, json!("Á"), &["c07"]),
        // Every string starts with "", but only strings do.
        case(
            "name",
            Op::StartsWith,
            json!(""),
            &["c01", "c02", "c03", "c04", "c06", "c07", "c08"],
        ),
        // Literal: no LIKE or GLOB wildcards.
        case("note", Op::StartsWith, json!("50%"), &["c05"]),
        case("note", Op::StartsWith, json!("_"), &[]),
        case("note", Op::StartsWith, json!("%"), &[]),
        case("name", Op::StartsWith, json!("*"), &[]),
        // Only string fields: 41 does not start with "4", "40" does.
        case("age", Op::StartsWith, json!("4"), &["c05"]),
        case("address.city", Op::StartsWith, json!("O"), &["c01", "c03"]),
        case("tags", Op::StartsWith, json!("vip"), &["c05"]),
    ]
}

async fn starts_with_is_case_sensitive_and_literal(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &starts_with_cases()).await;
}

fn range_cases() -> Vec<Case> {
    vec![
        // Numbers only match numbers: "40" is not a number, true is not 1.
        case("age", Op::Gt, json!(40), &["c02", "c03", "c06", "c08"]),
        case("age", Op::Ge, json!(41), &["c02", "c03", "c06", "c08"]),
        case("age", Op::Gt, json!(41), &["c03", "c06", "c08"]),
        case("age", Op::Lt, json!(36), &["c04", "c07"]),
        case("age", Op::Le, json!(36), &["c01", "c04", "c07"]),
        case("age", Op::Lt, json!(28.5), &["c07"]),
        case("age", Op::Le, json!(28.5), &["c04", "c07"]),
        case("score", Op::Lt, json!(5), &["c01", "c04", "c06"]),
        case("score", Op::Ge, json!(0), &["c01", "c04", "c06"]),
        case("active", Op::Ge, json!(0), &[]),
        // Strings only match strings, and compare by code point (binary, like
        // Rust's `str` ordering: "B" < "a" < "Á").
        case("age", Op::Lt, json!("5"), &["c05"]),
        case("age", Op::Ge, json!(""), &["c05"]),
        case("score", Op::Gt, json!(""), &["c02", "c08"]),
        case("name", Op::Lt, json!("B"), &["c01"]),
        case("name", Op::Le, json!("Berit"), &["c01", "c08"]),
        case("name", Op::Gt, json!("Linus"), &["c02", "c06", "c07"]),
        // Arrays and objects are neither.
        case("tags", Op::Gt, json!(""), &["c05"]),
        case("address", Op::Gt, json!(""), &[]),
    ]
}

async fn ranges_do_not_cross_types(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &range_cases()).await;
}

fn nested_cases() -> Vec<Case> {
    vec![
        // "oslo" and a note mentioning Oslo do not count.
        case("address.city", Op::Eq, json!("Oslo"), &["c01", "c03"]),
        case(
            "address.city",
            Op::Ne,
            json!("Oslo"),
            &["c02", "c04", "c05", "c06", "c07", "c08"],
        ),
        // Null, no city in the address, no address at all.
        case("address.city", Op::Eq, Value::Null, &["c05", "c06", "c07"]),
        case(
            "address.city",
            Op::Exists,
            json!(true),
            &["c01", "c02", "c03", "c04", "c05", "c08"],
        ),
        case("address.city", Op::Exists, json!(false), &["c06", "c07"]),
        case("address.zip", Op::Exists, json!(true), &["c01", "c04"]),
        case("address.zip", Op::Eq, json!("0150"), &["c01"]),
        case("address.zip", Op::Eq, json!(150), &[]),
        case(
            "address",
            Op::Exists,
            json!(true),
            &["c01", "c02", "c03", "c04", "c05", "c07", "c08"],
        ),
        case(
            "address.city",
            Op::In,
            json!(["London", "Helsinki"]),
            &["c02", "c04"],
        ),
        case(
            "address.city",
            Op::Contains,
            json!("slo"),
            &["c01", "c03", "c08"],
        ),
        case("address.city.name", Op::Exists, json!(true), &[]),
        case("name.first", Op::Eq, Value::Null, &ALL),
    ]
}

async fn nested_paths(h: Harness) {
    let store = seeded(&h).await;
    check(&store, &nested_cases()).await;
}

async fn several_filters_must_all_hold(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();
    let found = session
        .query::<Customer>()
        .where_eq("address.city", "Oslo")
        .where_op("age", Op::Gt, 40)
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c03"]);
    let found = session
        .query::<Customer>()
        .where_op("name", Op::Ge, "a")
        .where_op("name", Op::Lt, "z")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c02", "c06"]);
    let found = session
        .query::<Customer>()
        .where_eq("active", true)
        .where_op("tags", Op::Contains, "vip")
        .where_op("note", Op::Exists, true)
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c01"]);
    let none = session
        .query::<Customer>()
        .where_eq("score", 1)
        .where_eq("score", "1")
        .count()
        .await
        .unwrap();
    assert_eq!(none, 0);
}

// ---- order, paging, first/single/count ------------------------------------------

/// `rank`: c02 1, c06 1, c01 2, c03 2, c04 3; c07 null; c05 and c08 none.
const BY_RANK: [&str; 8] = ["c02", "c06", "c01", "c03", "c04", "c05", "c07", "c08"];
const BY_RANK_DESC: [&str; 8] = ["c04", "c01", "c03", "c02", "c06", "c05", "c07", "c08"];

async fn ordering_puts_missing_fields_last_then_orders_by_id(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();

    // No order: by id.
    let found = session.query::<Customer>().to_list().await.unwrap();
    assert_eq!(ids(&found), ALL);

    // Ties by id; null and missing last, by id, in both directions.
    let found = session
        .query::<Customer>()
        .order_by("rank")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), BY_RANK);
    let found = session
        .query::<Customer>()
        .order_by_desc("rank")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), BY_RANK_DESC);

    // Strings.
    let names = json!(["Grace", "Ada", "Linus", "Berit"]);
    let found = session
        .query::<Customer>()
        .where_op("name", Op::In, names.clone())
        .order_by("name")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c01", "c08", "c03", "c04"]);
    let found = session
        .query::<Customer>()
        .where_op("name", Op::In, names)
        .order_by_desc("name")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c04", "c03", "c08", "c01"]);

    // A nested key, then a second key: Oslo by age descending.
    let found = session
        .query::<Customer>()
        .where_op("address.city", Op::StartsWith, "")
        .order_by("address.city")
        .order_by_desc("age")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c04", "c02", "c03", "c01", "c08"]);

    // A field nobody has: everything, by id.
    let found = session
        .query::<Customer>()
        .order_by_desc("missing_everywhere")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ALL);
}

async fn paging_with_skip_and_take_is_stable(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();

    for (desc, expected) in [(false, BY_RANK), (true, BY_RANK_DESC)] {
        let mut pages = Vec::new();
        for page in 0..4 {
            let query = session.query::<Customer>();
            let query = if desc {
                query.order_by_desc("rank")
            } else {
                query.order_by("rank")
            };
            let found = query.skip(page * 3).take(3).to_list().await.unwrap();
            assert!(found.len() <= 3);
            pages.push(
                ids(&found)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(pages[0].len(), 3);
        assert_eq!(pages[2].len(), 2);
        assert!(pages[3].is_empty(), "past the end: nothing");
        let all: Vec<String> = pages.concat();
        assert_eq!(
            all, expected,
            "the pages together are the whole result, once"
        );
    }

    // Without an order: pages in id order.
    let page = session
        .query::<Customer>()
        .skip(2)
        .take(2)
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["c03", "c04"]);
    let page = session
        .query::<Customer>()
        .where_op("address.city", Op::Exists, true)
        .skip(4)
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["c05", "c08"]);
    let empty = session.query::<Customer>().take(0).to_list().await.unwrap();
    assert!(empty.is_empty());
}

async fn first_single_and_count(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();

    let oldest = session
        .query::<Customer>()
        .where_op("age", Op::Gt, 0)
        .order_by_desc("age")
        .first()
        .await
        .unwrap()
        .expect("someone has a numeric age");
    assert_eq!(oldest.id, "c03");
    assert_eq!(oldest.fields["name"], "Grace");
    let second = session
        .query::<Customer>()
        .order_by("rank")
        .skip(1)
        .first()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, "c06");
    let nobody = session
        .query::<Customer>()
        .where_eq("name", "Nobody")
        .first()
        .await
        .unwrap();
    assert!(nobody.is_none());

    let grace = session
        .query::<Customer>()
        .where_eq("name", "Grace")
        .single()
        .await
        .unwrap();
    assert_eq!(grace.id, "c03");
    match session
        .query::<Customer>()
        .where_eq("name", "Nobody")
        .single()
        .await
    {
        Err(Error::NotFound(_)) => {}
        other => panic!("single of nothing must be NotFound, got {other:?}"),
    }
    match session
        .query::<Customer>()
        .where_eq("address.city", "Oslo")
        .single()
        .await
    {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("single of two must be InvalidInput, got {other:?}"),
    }

    // count ignores skip, take and order.
    assert_eq!(session.query::<Customer>().count().await.unwrap(), 8);
    assert_eq!(
        session
            .query::<Customer>()
            .where_eq("address.city", "Oslo")
            .skip(1)
            .take(1)
            .order_by("age")
            .count()
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        session
            .query::<Customer>()
            .skip(100)
            .take(0)
            .count()
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        session
            .query::<Customer>()
            .where_eq("name", "Nobody")
            .count()
            .await
            .unwrap(),
        0
    );
}

// ---- refused input ------------------------------------------------------------

fn assert_invalid<T: std::fmt::Debug>(result: folio::Result<T>, what: &str) {
    match result {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

async fn malformed_paths_are_refused(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();
    let bad_paths = [
        "a..b",
        "x') OR 1=1 --",
        "name' OR '1'='1",
        "",
        ".name",
        "name.",
        "na me",
        "name\"",
        "$.name",
        "tags[0]",
        "name;DROP TABLE documents",
    ];
    for path in bad_paths {
        assert_invalid(
            session
                .query::<Customer>()
                .where_eq(path, 1)
                .to_list()
                .await,
            &format!("where_eq({path:?})"),
        );
        assert_invalid(
            session
                .query::<Customer>()
                .where_op(path, Op::Exists, true)
                .count()
                .await,
            &format!("count where {path:?}"),
        );
        assert_invalid(
            session.query::<Customer>().order_by(path).to_list().await,
            &format!("order_by({path:?})"),
        );
        assert_invalid(
            session
                .query::<Customer>()
                .order_by_desc(path)
                .first()
                .await,
            &format!("order_by_desc({path:?})"),
        );
        assert_invalid(
            session
                .query::<Customer>()
                .where_eq(path, "x")
                .single()
                .await,
            &format!("single where {path:?}"),
        );
    }
    // A bad path stays an error even when good steps follow it.
    assert_invalid(
        session
            .query::<Customer>()
            .where_eq("a..b", 1)
            .where_eq("name", "Ada")
            .order_by("age")
            .to_list()
            .await,
        "a bad path followed by good ones",
    );
    // Too long or too deep.
    let deep = vec!["a"; 17].join(".");
    assert_invalid(
        session
            .query::<Customer>()
            .where_eq(&deep, 1)
            .to_list()
            .await,
        "17 segments",
    );
    assert_invalid(
        session
            .query::<Customer>()
            .where_eq(&"a".repeat(65), 1)
            .to_list()
            .await,
        "a 65-character segment",
    );
    // Nothing was harmed.
    assert_eq!(session.query::<Customer>().count().await.unwrap(), 8);
}

async fn operands_that_do_not_suit_the_operator_are_refused(h: Harness) {
    let store = seeded(&h).await;
    let mut session = store.open_session();
    let bad = [
        ("age", Op::Lt, json!(true)),
        ("age", Op::Le, Value::Null),
        ("age", Op::Gt, json!([1])),
        ("age", Op::Ge, json!({"a": 1})),
        ("tags", Op::In, json!("vip")),
        ("tags", Op::In, json!(1)),
        ("tags", Op::In, json!([[1]])),
        ("tags", Op::In, json!([null])),
        ("tags", Op::In, json!([{"a": 1}])),
        ("tags", Op::Contains, Value::Null),
        ("tags", Op::Contains, json!(["vip"])),
        ("name", Op::StartsWith, json!(1)),
        ("name", Op::StartsWith, Value::Null),
        ("note", Op::Exists, json!("yes")),
        ("note", Op::Exists, json!(1)),
        ("address", Op::Eq, json!({"city": "Oslo"})),
        ("tags", Op::Ne, json!(["vip"])),
    ];
    for (path, op, value) in bad {
        let what = format!("{path} {op:?} {value}");
        assert_invalid(
            session
                .query::<Customer>()
                .where_op(path, op, value.clone())
                .to_list()
                .await,
            &what,
        );
        assert_invalid(
            session
                .query::<Customer>()
                .where_op(path, op, value.clone())
                .count()
                .await,
            &what,
        );
        // The engine refuses it too, whoever builds the query.
        let query = Query::new("customers").filter(path, op, value).unwrap();
        assert_invalid(store.engine().query(&query).await, &what);
        assert_invalid(store.engine().count(&query).await, &what);
        assert_invalid(store.engine().query_page(&query).await, &what);
    }
    // And a malformed collection name.
    assert_invalid(
        store.engine().query(&Query::new("customers; --")).await,
        "a bad collection",
    );
    assert_eq!(session.query::<Customer>().count().await.unwrap(), 8);
}

async fn values_that_look_like_sql_are_matched_literally(h: Harness) {
    let store = seeded(&h).await;
    let tricky = [
        "'; DROP TABLE documents; --",
        "\" OR \"\"=\"",
        "Robert'); DELETE FROM documents WHERE ('1'='1",
        "back\\slash",
        "?1",
        ":name",
    ];
    seed(
        &store,
        tricky
            .iter()
            .enumerate()
            .map(|(n, name)| customer(&format!("t{n}"), json!({ "name": name })))
            .collect(),
    )
    .await;
    let mut session = store.open_session();
    let find = async |session: &mut folio::Session, op: Op, value: Value| {
        let found = session
            .query::<Customer>()
            .where_op("name", op, value)
            .to_list()
            .await
            .unwrap();
        found.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };

    assert_eq!(
        find(&mut session, Op::Eq, json!("x' OR '1'='1")).await,
        ["c06"]
    );
    for near_miss in [
        "x",
        "' OR '1'='1",
        "x' OR '1'='1' --",
        "x' or '1'='1",
        "X' OR '1'='1",
    ] {
        assert!(
            find(&mut session, Op::Eq, json!(near_miss))
                .await
                .is_empty(),
            "{near_miss:?} must match nothing"
        );
    }
    assert_eq!(
        find(&mut session, Op::In, json!(["x' OR '1'='1"])).await,
        ["c06"]
    );
    assert_eq!(
        find(&mut session, Op::StartsWith, json!("x' OR")).await,
        ["c06"]
    );
    assert_eq!(
        find(&mut session, Op::Contains, json!("' OR '1'")).await,
        ["c06"]
    );
    assert_eq!(
        session
            .query::<Customer>()
            .where_op("name", Op::Ne, "x' OR '1'='1")
            .count()
            .await
            .unwrap(),
        8 + tricky.len() as u64 - 1
    );
    for (n, name) in tricky.iter().enumerate() {
        assert_eq!(
            find(&mut session, Op::Eq, json!(name)).await,
            [format!("t{n}")],
            "{name:?}"
        );
    }
    assert!(find(&mut session, Op::Eq, json!("?")).await.is_empty());

    // The same values as ids and in loads.
    seed(
        &store,
        vec![customer("x' OR '1'='1", json!({"name": "id with quotes"}))],
    )
    .await;
    let loaded = store
        .open_session()
        .load::<Customer>("x' OR '1'='1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.fields["name"], "id with quotes");
    assert!(
        store
            .open_session()
            .load::<Customer>("x' OR '1'='2")
            .await
            .unwrap()
            .is_none()
    );

    // Nothing was dropped or deleted.
    assert_eq!(
        session.query::<Customer>().count().await.unwrap(),
        8 + tricky.len() as u64 + 1
    );
}

async fn queries_see_only_their_collection(h: Harness) {
    let store = seeded(&h).await;
    // A person named like a customer, with the same shape.
    seed(&store, vec![Person::new("c01", "Ada")]).await;
    let mut session = store.open_session();
    let customers = session
        .query::<Customer>()
        .where_eq("name", "Ada")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&customers), ["c01"]);
    assert_eq!(customers[0].fields["age"], 36);
    let people = session
        .query::<Person>()
        .where_eq("name", "Ada")
        .to_list()
        .await
        .unwrap();
    assert_eq!(people.len(), 1);
    assert_eq!(people[0].age, 0);
    assert_eq!(session.query::<Person>().count().await.unwrap(), 1);
    assert_eq!(session.query::<Account>().count().await.unwrap(), 0);
    assert!(
        session
            .query::<Account>()
            .to_list()
            .await
            .unwrap()
            .is_empty()
    );
}

// ---- tracking -------------------------------------------------------------------

async fn queried_documents_are_tracked_like_loads(h: Harness) {
    let store = h.store().await;
    let mut ada = Person::new("people/1", "Ada");
    ada.age = 36;
    seed(&store, vec![ada, Person::new("people/2", "Alan")]).await;
    seed(
        &store,
        vec![Account {
            id: "a1".into(),
            balance: 10,
        }],
    )
    .await;

    let mut session = store.open_session();
    let mut queried = session
        .query::<Person>()
        .where_eq("name", "Ada")
        .single()
        .await
        .unwrap();
    // The result carries its version, as a load would.
    let stored = store
        .open_session()
        .metadata_for::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queried.change_vector.as_ref(), Some(&stored.change_vector));
    assert_eq!(queried.revision, 1);
    assert_eq!(
        session
            .change_vector_for::<Person>("people/1")
            .await
            .unwrap(),
        Some(stored.change_vector.clone())
    );
    // Account has no change-vector field: only the session's tracking can
    // know which version was read.
    let mut account = session
        .query::<Account>()
        .where_op("balance", Op::Ge, 0)
        .first()
        .await
        .unwrap()
        .unwrap();

    // Someone else changes both.
    let mut other = store.open_session();
    let mut theirs = other.load::<Person>("people/1").await.unwrap().unwrap();
    theirs.age = 37;
    other.store(theirs).unwrap();
    let mut their_account = other.load::<Account>("a1").await.unwrap().unwrap();
    their_account.balance = 99;
    other.store(their_account).unwrap();
    other.save_changes().await.unwrap();

    queried.name = "Ada Lovelace".into();
    session.store(queried).unwrap();
    account.balance = 20;
    session.store(account).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found.len(), 2, "{found:?}");
    let person = found.iter().find(|c| c.id() == "people/1").unwrap();
    assert_eq!(person.type_name(), "Person");
    assert_eq!(
        person.expected(),
        &Expectation::version(stored.change_vector.clone())
    );
    let account_conflict = found.iter().find(|c| c.id() == "a1").unwrap();
    assert_eq!(account_conflict.type_name(), "Account");
    assert!(matches!(
        account_conflict.expected(),
        Expectation::Version { .. }
    ));
    let now = store
        .open_session()
        .load::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(person.actual(), now.change_vector.as_ref());
    assert_eq!((now.name.as_str(), now.age), ("Ada", 37));
    let now = store
        .open_session()
        .load::<Account>("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.balance, 99);

    // A query of a document the session already holds returns the
    // session's copy and keeps the version first read.
    let mut session = store.open_session();
    let mut alan = session.load::<Person>("people/2").await.unwrap().unwrap();
    seed(&store, vec![Person::new("people/2", "Alan Turing")]).await;
    let again = session
        .query::<Person>()
        .where_op("name", Op::StartsWith, "Alan")
        .single()
        .await
        .unwrap();
    assert_eq!(again.name, "Alan", "the identity map's copy");
    assert_eq!(again.change_vector, alan.change_vector);
    alan.age = 41;
    alan.change_vector = None;
    session.store(alan).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found[0].id(), "people/2");
}

async fn queried_documents_are_read_guards_with_writes_and_reads(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![
            Account {
                id: "a1".into(),
                balance: 50,
            },
            Account {
                id: "a2".into(),
                balance: 50,
            },
        ],
    )
    .await;

    // Withdraw from a2 if the total stays positive: reads both by query,
    // writes only a2.
    let mut session = store.open_session_with(SessionOptions {
        concurrency_checks: ConcurrencyChecks::WritesAndReads,
        ..SessionOptions::default()
    });
    let accounts = session
        .query::<Account>()
        .order_by("balance")
        .to_list()
        .await
        .unwrap();
    assert_eq!(accounts.iter().map(|a| a.balance).sum::<i64>(), 100);
    let mut a2 = accounts.into_iter().find(|a| a.id == "a2").unwrap();
    a2.balance -= 80;

    // Meanwhile a1 is drained.
    seed(
        &store,
        vec![Account {
            id: "a1".into(),
            balance: -10,
        }],
    )
    .await;

    session.store(a2).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id(), "a1", "the document only read is guarded");
    let a2 = store
        .open_session()
        .load::<Account>("a2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2.balance, 50, "nothing written");
}

// ---- indexes and pages ---------------------------------------------------------

async fn an_index_gives_the_same_results(h: Harness) {
    let plain = seeded(&h).await;
    let indexed = h
        .builder()
        .document::<Customer>(|d| d.index("address.city").index("rank"))
        .open()
        .await
        .expect("the store opens with indexes");
    // Opening again with the same index is fine (created only if absent).
    let again = h
        .builder()
        .document::<Customer>(|d| d.index("address.city"))
        .open()
        .await
        .expect("an existing index is kept");
    drop(again);

    for store in [&plain, &indexed] {
        check(store, &nested_cases()).await;
        check(store, &equality_cases()).await;
        check(store, &starts_with_cases()).await;
        let mut session = store.open_session();
        let found = session
            .query::<Customer>()
            .order_by("rank")
            .to_list()
            .await
            .unwrap();
        assert_eq!(ids(&found), BY_RANK);
        let found = session
            .query::<Customer>()
            .where_op("address.city", Op::StartsWith, "")
            .order_by("address.city")
            .order_by_desc("age")
            .to_list()
            .await
            .unwrap();
        assert_eq!(ids(&found), ["c04", "c02", "c03", "c01", "c08"]);
    }

    // Writes after the index exists are found through it.
    seed(
        &indexed,
        vec![customer(
            "c09",
            json!({"address": {"city": "Oslo"}, "rank": 0}),
        )],
    )
    .await;
    let mut session = indexed.open_session();
    let found = session
        .query::<Customer>()
        .where_eq("address.city", "Oslo")
        .to_list()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["c01", "c03", "c09"]);
    let first = session
        .query::<Customer>()
        .order_by("rank")
        .first()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, "c09");

    // A malformed index path is refused when the store opens.
    match h
        .builder()
        .document::<Customer>(|d| d.index("address..city"))
        .open()
        .await
    {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("a bad index path must be refused, got {other:?}"),
    }

    if let Some(file) = h.database_file() {
        let connection = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut statement = connection
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .unwrap();
        let indexes: Vec<(String, String)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let on_city: Vec<_> = indexes
            .iter()
            .filter(|(_, sql)| sql.contains("address") && sql.contains("city"))
            .collect();
        assert_eq!(on_city.len(), 1, "one index on address.city: {indexes:?}");
        assert!(
            indexes.iter().any(|(_, sql)| sql.contains("rank")),
            "an index on rank: {indexes:?}"
        );
    }
    if let Some(postgres) = h.postgres() {
        let client = crate::harness::sql_client(&postgres.url).await;
        let indexes: Vec<(String, String)> = client
            .query(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1",
                &[&postgres.schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let on_city: Vec<_> = indexes
            .iter()
            .filter(|(_, sql)| sql.contains("address") && sql.contains("city"))
            .collect();
        assert_eq!(on_city.len(), 1, "one index on address.city: {indexes:?}");
        assert!(
            indexes.iter().any(|(_, sql)| sql.contains("rank")),
            "an index on rank: {indexes:?}"
        );
    }
}

async fn query_page_reports_the_total(h: Harness) {
    let store = seeded(&h).await;
    let engine = store.engine();

    let oslo = Query::new("customers")
        .filter("address.city", Op::Eq, "Oslo")
        .unwrap()
        .order_by("age", true)
        .unwrap();
    let page = engine
        .query_page(&oslo.clone().skip(1).take(1))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    let page_ids: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.metadata.id.as_str())
        .collect();
    assert_eq!(page_ids, ["c01"]);
    assert_eq!(page.entries[0].metadata.collection, "customers");
    let document: Value = serde_json::from_str(&page.entries[0].document).unwrap();
    assert_eq!(document["name"], "Ada");

    let past_the_end = engine.query_page(&oslo.skip(5)).await.unwrap();
    assert!(past_the_end.entries.is_empty());
    assert_eq!(past_the_end.total, 2);

    let all = Query::new("customers").order_by("rank", false).unwrap();
    let first_three = engine.query_page(&all.clone().take(3)).await.unwrap();
    assert_eq!(first_three.total, 8);
    let page_ids: Vec<&str> = first_three
        .entries
        .iter()
        .map(|e| e.metadata.id.as_str())
        .collect();
    assert_eq!(page_ids, BY_RANK[..3]);

    let none = engine
        .query_page(&Query::new("nobody_here").take(10))
        .await
        .unwrap();
    assert_eq!((none.entries.len(), none.total), (0, 0));

    // The entries carry the stored versions.
    let mut session = store.open_session();
    for entry in &first_three.entries {
        let known = session
            .metadata_for::<Customer>(&entry.metadata.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(known, entry.metadata);
    }
}

/// Each size limit of `Query::validate`: the largest query allowed is
/// served (right results, every engine), one more is refused with
/// `InvalidInput` naming the limit.
async fn the_largest_queries_are_served_and_larger_ones_refused(h: Harness) {
    let store = h.store().await;
    let engine = store.engine();
    let commands: Vec<folio::Command> = (0..100)
        .map(|n| {
            folio::Command::put(
                "numbers",
                format!("n{n:03}"),
                json!({"n": n, "s": format!("s{n}")}).to_string(),
                Expectation::Missing,
            )
        })
        .collect();
    engine
        .commit(folio::Batch::from(commands))
        .await
        .unwrap()
        .unwrap();
    let numbers = |range: std::ops::Range<i64>| Value::Array(range.map(Value::from).collect());
    let served = |query: Query, expected: usize| {
        let engine = engine.clone();
        async move {
            let page = engine
                .query_page(&query)
                .await
                .unwrap_or_else(|error| panic!("served: {error}"));
            assert_eq!(page.entries.len(), expected);
            assert_eq!(page.total, expected as u64);
            page.entries
                .into_iter()
                .map(|entry| entry.metadata.id)
                .collect::<Vec<_>>()
        }
    };
    let refused = |query: Query, limit: usize| {
        let engine = engine.clone();
        async move {
            for result in [
                engine.query_page(&query).await.map(drop),
                engine.count(&query).await.map(drop),
            ] {
                match result {
                    Err(Error::InvalidInput(message)) => {
                        assert!(message.contains(&format!("at most {limit}")), "{message}")
                    }
                    other => panic!("refused naming {limit}: {other:?}"),
                }
            }
        }
    };

    // One `in` of the most values: numbers, and numbers with strings.
    let most = Query::MAX_IN_VALUES as i64;
    let query = Query::new("numbers")
        .filter("n", Op::In, numbers(-most + 50..50))
        .unwrap();
    assert_eq!(served(query, 50).await.len(), 50);
    let mut mixed = numbers(0..most - 2);
    if let Value::Array(values) = &mut mixed {
        values.push(json!("s7"));
        values.push(json!(true));
    }
    let query = Query::new("numbers")
        .filter("s", Op::In, mixed.clone())
        .unwrap();
    assert_eq!(served(query, 1).await, ["n007"]);
    if let Value::Array(values) = &mut mixed {
        values.push(json!(-1));
    }
    refused(
        Query::new("numbers").filter("n", Op::In, mixed).unwrap(),
        Query::MAX_IN_VALUES,
    )
    .await;

    // The most filters.
    let mut query = Query::new("numbers");
    for k in 0..Query::MAX_FILTERS as i64 {
        query = query.filter("n", Op::Ne, -k - 1).unwrap();
    }
    assert_eq!(served(query.clone(), 100).await.len(), 100);
    refused(
        query.filter("n", Op::Exists, true).unwrap(),
        Query::MAX_FILTERS,
    )
    .await;

    // The most `in` values in all, spread over several filters.
    let mut query = Query::new("numbers");
    let per_filter = Query::MAX_IN_VALUES as i64;
    for k in 0..(Query::MAX_QUERY_VALUES as i64 / per_filter) {
        query = query
            .filter("n", Op::In, numbers(k * 5..k * 5 + per_filter))
            .unwrap();
    }
    let found = served(query.clone(), 55).await;
    assert_eq!(found.first().map(String::as_str), Some("n045"));
    refused(
        query.filter("s", Op::In, json!(["s1"])).unwrap(),
        Query::MAX_QUERY_VALUES,
    )
    .await;

    // The most ordering keys: fields no document has, then `n` descending.
    let mut query = Query::new("numbers");
    for k in 0..Query::MAX_ORDER_KEYS - 1 {
        query = query.order_by(&format!("absent{k}"), k % 2 == 0).unwrap();
    }
    query = query.order_by("n", true).unwrap();
    let found = served(query.clone(), 100).await;
    assert_eq!(found[..3], ["n099", "n098", "n097"]);
    refused(query.order_by("s", false).unwrap(), Query::MAX_ORDER_KEYS).await;
}

/// `Engine::collections`: what holds documents now, with how many, ordered
/// by code point on every engine (`Zeta` before `alpha`, whatever the
/// database's collation); a collection whose last document is deleted is
/// no longer listed.
async fn collections_are_listed_in_code_point_order_with_their_counts(h: Harness) {
    use folio::{Batch, CollectionCount, Command};
    let store = h.store().await;
    let engine = store.engine();
    assert_eq!(engine.collections().await.unwrap(), Vec::new());
    let put = |collection: &str, id: &str| {
        Command::put(collection, id, r#"{"n":1}"#, Expectation::Missing)
    };
    engine
        .commit(Batch::from(vec![
            put("alpha", "a1"),
            put("alpha", "a2"),
            put("alpha", "a3"),
            put("Zeta", "z1"),
            put("gone", "g1"),
            put("_under", "u1"),
        ]))
        .await
        .unwrap()
        .unwrap();
    engine
        .commit(Batch::from(vec![
            Command::delete("alpha", "a2", Expectation::Any),
            Command::delete("gone", "g1", Expectation::Any),
        ]))
        .await
        .unwrap()
        .unwrap();
    let count = |name: &str, documents: u64| CollectionCount {
        name: name.into(),
        documents,
    };
    assert_eq!(
        engine.collections().await.unwrap(),
        vec![count("Zeta", 1), count("_under", 1), count("alpha", 2)]
    );
}
