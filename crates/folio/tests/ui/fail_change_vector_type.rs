use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    id: String,
    #[folio(change_vector)]
    #[serde(skip)]
    change_vector: Option<String>,
}

fn main() {}
