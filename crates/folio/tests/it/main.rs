//! Folio's integration tests: one binary.
//!
//! * `harness`: the engines every conformance scenario runs against, and the
//!   `conformance!` macro that instantiates scenarios once per engine;
//! * `sessions`, `writes`, `tracking`, `queries`, `concurrency`: the
//!   conformance suite (docs/design.md's contract), written once;
//! * `admin`: creating and listing databases beside a store's own, on
//!   every engine;
//! * `backup`: backups, restores, copies to PostgreSQL and exports of whole
//!   databases keep every version, in one snapshot, on every engine;
//! * `conflicts`: every conflict carries what is stored now, read where
//!   it was refused, on every engine;
//! * `changes`: the changes feed on every engine, and the horizon on PostgreSQL;
//! * `damage`: damaged files (a flipped byte in the database file or the
//!   log, an empty file, a newer layout) are errors, never content;
//! * `disk`: a full disk (a real, small tmpfs) costs writes only, and a
//!   little room brings them back;
//! * `faults`: failed commits change neither the database nor the session;
//!   faults inside the embedded writer (a full disk, a transaction lost
//!   mid-group) tell every caller the truth;
//! * `ha`: PostgreSQL on a Patroni cluster: failovers under load lose
//!   nothing and leave no save in doubt;
//! * `idempotency`: batch ids: a committed batch sent again gets its
//!   recorded results and writes nothing, on every engine;
//! * `log`: the embedded engine's log holds every acknowledged commit, readable
//!   from outside and recovered from a crash copy;
//! * `positions`: read-your-writes: every commit answers a position, and
//!   reads after it see that write, on every engine;
//! * `revisions`: kept versions per collection: across puts, deletes,
//!   re-creation and refused batches, reverts and configuration, on every
//!   engine;
//! * `security`: hostile ids, collection names, paths, values and keys are
//!   refused or taken literally, never executed;
//! * `postgres`: PostgreSQL only: several engines (pools) and several OS
//!   processes on one database lose no update and keep every invariant;
//! * `pg_terminate`: PostgreSQL only: backends terminated mid-batch fail
//!   their batch whole, and the pool recovers;
//! * `snapshot`: `query_page` reads its page and total in one snapshot
//!   (a hook in each engine lets a write land between them);
//! * `versions`: a change vector names one version forever: batches name a
//!   document once, etags are never taken twice, and the embedded engine's
//!   readers see only durable versions;
//! * `derive`: compile-fail tests of `#[derive(Document)]`.

#![allow(unreachable_pub)]

#[macro_use]
mod harness;

mod admin;
mod backup;
mod changes;
mod concurrency;
mod conflicts;
mod damage;
mod derive;
mod disk;
mod faults;
mod ha;
mod idempotency;
mod log;
mod pg_terminate;
mod positions;
mod postgres;
mod queries;
mod revisions;
mod security;
mod sessions;
mod snapshot;
mod tracking;
mod versions;
mod writes;
