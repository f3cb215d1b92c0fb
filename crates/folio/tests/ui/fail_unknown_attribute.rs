use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person {
    id: String,
    #[folio(index)]
    email: String,
}

fn main() {}
