use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
struct Person(String, String);

fn main() {}
