//! The remote engine's integration tests, one binary: against a real Folio
//! server in process on loopback.

mod facade;
mod server;
