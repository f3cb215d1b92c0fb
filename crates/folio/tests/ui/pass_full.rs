#![deny(warnings)]

use folio::{ChangeVector, Document};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[folio(collection = "people", optimistic_concurrency)]
struct Person {
    #[folio(id)]
    id: String,
    name: String,
    #[folio(change_vector)]
    #[serde(skip)]
    change_vector: Option<ChangeVector>,
    #[folio(revision)]
    #[serde(skip)]
    revision: u64,
}

/// A generic document: the bounds the trait needs are declared on the type
/// (and `bound = ""` keeps serde from adding `T: Deserialize<'de>` beside
/// `T: DeserializeOwned`, which the compiler finds ambiguous).
#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[serde(bound = "")]
#[folio(optimistic_concurrency = false)]
struct Envelope<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    #[folio(id)]
    key: String,
    payload: T,
    #[folio(revision)]
    #[serde(skip_serializing, default)]
    rev: u64,
}

/// The id found by name, the collection by default, no metadata fields.
#[derive(Debug, Serialize, Deserialize, Document)]
struct OrderLine {
    id: String,
    quantity: u32,
}

fn main() {
    assert_eq!(Person::COLLECTION, "people");
    assert_eq!(Person::TYPE_NAME, "Person");
    assert_eq!(Person::OPTIMISTIC_CONCURRENCY, Some(true));

    let mut person = Person {
        id: String::new(),
        name: "Ada".into(),
        change_vector: None,
        revision: 0,
    };
    assert_eq!(person.id(), "");
    person.set_id("people/1".into());
    assert_eq!(person.id(), "people/1");
    assert_eq!(person.change_vector(), None);
    person.set_change_vector(Some(ChangeVector::from("A:1-abc")));
    assert_eq!(person.change_vector(), Some(&ChangeVector::from("A:1-abc")));
    person.set_revision(7);
    assert_eq!(person.revision, 7);

    // The change vector and the revision are never persisted.
    let json = serde_json::to_value(&person).unwrap();
    assert_eq!(json, serde_json::json!({ "id": "people/1", "name": "Ada" }));
    let back: Person = serde_json::from_value(json).unwrap();
    assert_eq!(back.change_vector(), None);
    assert_eq!(back.revision, 0);
    person.set_change_vector(None);
    assert_eq!(person.change_vector(), None);

    assert_eq!(Envelope::<Vec<u32>>::COLLECTION, "envelopes");
    assert_eq!(Envelope::<Vec<u32>>::TYPE_NAME, "Envelope");
    assert_eq!(Envelope::<Vec<u32>>::OPTIMISTIC_CONCURRENCY, Some(false));
    let mut envelope = Envelope {
        key: "envelopes/1".into(),
        payload: vec![1_u32, 2],
        rev: 0,
    };
    assert_eq!(envelope.id(), "envelopes/1");
    envelope.set_id("envelopes/2".into());
    assert_eq!(envelope.key, "envelopes/2");
    envelope.set_revision(3);
    assert_eq!(envelope.rev, 3);
    envelope.set_change_vector(Some(ChangeVector::from("A:2-abc")));
    assert_eq!(envelope.change_vector(), None);
    assert_eq!(
        serde_json::to_value(&envelope).unwrap(),
        serde_json::json!({ "key": "envelopes/2", "payload": [1, 2] })
    );

    assert_eq!(OrderLine::COLLECTION, "order_lines");
    assert_eq!(OrderLine::TYPE_NAME, "OrderLine");
    assert_eq!(OrderLine::OPTIMISTIC_CONCURRENCY, None);
    let mut line = OrderLine {
        id: "order_lines/1".into(),
        quantity: 2,
    };
    line.set_revision(1);
    line.set_change_vector(Some(ChangeVector::from("A:3-abc")));
    assert_eq!(line.change_vector(), None);
    assert_eq!(line.id(), "order_lines/1");
    assert_eq!(line.quantity, 2);

    fn assert_document<D: Document>() {}
    assert_document::<Person>();
    assert_document::<Envelope<String>>();
    assert_document::<OrderLine>();
}
