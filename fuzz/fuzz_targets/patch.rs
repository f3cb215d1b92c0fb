//! Fuzz target: see `folio_fuzz::patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| folio_fuzz::patch(data));
