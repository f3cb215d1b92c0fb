//! The `folio` command, run as a user runs it: `folio serve` as a real
//! process on a loopback port (crashes, shutdowns, descriptor limits,
//! scale-out over PostgreSQL, the README's commands), the client commands,
//! backups and copies, `bench` and `torture`.

mod bench;
mod cli;
mod cli_backup;
// The in-process server and raw-socket client of the server's own tests.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../folio-server/tests/it/common.rs"]
mod common;
mod crash;
mod descriptors;
mod docs;
mod process;
mod scale_out;
mod shutdown;
mod torture;
mod transfer;
