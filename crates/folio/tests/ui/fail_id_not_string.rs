use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    #[folio(id)]
    key: u64,
    name: String,
}

fn main() {}
