//! Folio's HTTP protocol (`docs/protocol.md`), tested in-process with
//! `tower::ServiceExt::oneshot` on `folio_server::router`, each test over
//! its own temporary data directory; and once over a real socket.
//! `security` has hostile clients: slow-loris connections, oversized and
//! deep bodies, and a property test of every problem body.

mod auth;
mod backup;
mod batch;
mod changes;
mod common;
mod concurrency;
mod conflicts;
mod edge;
mod headers;
mod idempotency;
mod leaks;
mod limits;
mod merge;
mod names;
mod patch;
mod positions;
mod preconditions;
mod query;
mod revisions;
mod security;
mod service;
mod socket;
mod status;
mod storage;
mod studio;
