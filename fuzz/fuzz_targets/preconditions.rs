//! Fuzz target: see `folio_fuzz::preconditions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| folio_fuzz::preconditions(data));
