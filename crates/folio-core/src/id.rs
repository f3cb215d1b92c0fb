use std::sync::Mutex;

use ulid::Generator;

/// The process-wide ULID generator: ids made by one process are strictly
/// increasing even within one millisecond.
static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

/// A new time-sortable document id: a 26-character ULID
/// (`01JD3X5Q8Z4K2M7N9P0R1S2T3V`).
///
/// Ids generated later sort after ids generated earlier, byte-wise, in one
/// process; across processes they sort by millisecond.
///
/// ```
/// let first = folio_core::generate_id();
/// let second = folio_core::generate_id();
/// assert_eq!(first.len(), 26);
/// assert!(first < second);
/// ```
pub fn generate_id() -> String {
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ulid = match generator.generate() {
        Ok(ulid) => ulid,
        // 2^80 ids in one millisecond: borrow the next millisecond.
        Err(overflow) => overflow.commit_overflow_increment(),
    };
    ulid.to_string()
}
