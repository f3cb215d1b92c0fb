//! The `folio` command's library: what its subcommands do, apart from
//! parsing their arguments (`src/main.rs`).
//!
//! * [`client`]: the client commands against a server (`get`, `put`,
//!   `delete`, `query`, `import`, `export`, `create`, `databases`,
//!   `collections`);
//! * [`transfer`]: backups, restores and copies between servers, data
//!   directories, PostgreSQL and backup files;
//! * [`tools`]: the load generator (`folio bench`) and the torture harness
//!   (`folio torture`).
//!
//! `folio serve` is [`folio_server::serve`] over the options of the
//! command line.

pub mod client;
pub mod tools;
pub mod transfer;
