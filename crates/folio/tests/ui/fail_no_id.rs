use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    key: String,
    name: String,
}

fn main() {}
