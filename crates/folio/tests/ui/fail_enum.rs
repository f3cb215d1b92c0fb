use folio::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Document)]
enum Shape {
    Circle { id: String, radius: f64 },
    Square { id: String, side: f64 },
}

fn main() {}
