use folio::{ChangeVector, Document};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    id: String,
    #[folio(change_vector)]
    #[serde(skip_serializing)]
    change_vector: Option<ChangeVector>,
}

fn main() {}
