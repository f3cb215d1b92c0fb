//! Folio's HTTP protocol (`docs/protocol.md`), tested in-process with
//! `tower::ServiceExt::oneshot` on `folio_server::router`, each test over
//! its own temporary data directory; and once over a real socket.
//! `security` has hostile clients: slow-loris connections, oversized and
//! deep bodies, and a property test of every problem body.

mod auth;
mod backup;
mod batch;
mod bench;
mod changes;
mod cli;
mod cli_backup;
mod common;
mod concurrency;
mod crash;
mod descriptors;
mod edge;
mod headers;
mod leaks;
mod limits;
mod names;
mod patch;
mod preconditions;
mod process;
mod query;
mod readme;
mod scale_out;
mod security;
mod service;
mod shutdown;
mod socket;
mod status;
mod storage;
mod studio;
mod torture;
mod transfer;
