use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    id: String,
    #[folio(revision)]
    #[serde(skip)]
    revision: u32,
}

fn main() {}
