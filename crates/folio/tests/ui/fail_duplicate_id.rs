use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    #[folio(id)]
    id: String,
    #[folio(id)]
    email: String,
}

fn main() {}
