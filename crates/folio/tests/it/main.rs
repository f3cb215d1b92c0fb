//! Folio's integration tests: one binary.
//!
//! * `harness`: the engines every conformance scenario runs against, and the
//!   `conformance!` macro that instantiates scenarios once per engine;
//! * `sessions`, `writes`, `queries`, `concurrency`, `durability`: the
//!   conformance suite (DESIGN.md's contract), written once;
//! * `faults`: failed commits change neither the database nor the session;
//! * `derive`: compile-fail tests of `#[derive(Document)]`.

#![allow(unreachable_pub)]

#[macro_use]
mod harness;

mod derive;
mod sessions;
