use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
#[folio(collection = "people/archived")]
struct Person {
    id: String,
    name: String,
}

fn main() {}
