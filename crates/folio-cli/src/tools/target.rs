//! The `--target` of `folio bench` and `folio torture`: which engine to
//! drive, named the way a user names a database.
//!
//! * `embedded:PATH`: the embedded engine, database files under the
//!   directory `PATH` (created if absent);
//! * `memory:`: the embedded engine in memory (nothing survives the run);
//! * `postgres:URL` (or a bare `postgres://…` URL): the PostgreSQL engine;
//! * `http://HOST:PORT/db/NAME`: a Folio server, through the remote engine.

use std::fmt;
use std::str::FromStr;

use folio::DocumentStore;

/// A parsed `--target`.
///
/// ```
/// use folio_cli::tools::target::TargetSpec;
///
/// let target: TargetSpec = "embedded:/tmp/bench".parse().unwrap();
/// assert_eq!(target.to_string(), "embedded:/tmp/bench");
/// assert!("mysql://x".parse::<TargetSpec>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// The embedded engine on a directory.
    Embedded(String),
    /// The embedded engine in memory.
    Memory,
    /// The PostgreSQL engine (a `postgres://` URL).
    Postgres(String),
    /// A Folio server (an `http://…/db/NAME` URL).
    Http(String),
}

impl TargetSpec {
    /// Opens a store on the target: database `database` for the engines
    /// whose spec names no database (embedded, PostgreSQL); an HTTP target
    /// names its own.
    pub async fn open(&self, database: &str) -> folio::Result<DocumentStore> {
        let url = match self {
            TargetSpec::Embedded(path) => format!("sqlite:{path}"),
            TargetSpec::Memory => "memory:".to_owned(),
            TargetSpec::Postgres(url) | TargetSpec::Http(url) => url.clone(),
        };
        DocumentStore::builder()
            .url(url)
            .database(database)
            .open()
            .await
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        if let Some(path) = spec.strip_prefix("embedded:") {
            if path.is_empty() {
                return Err("embedded:PATH needs a directory".into());
            }
            return Ok(TargetSpec::Embedded(path.to_owned()));
        }
        if spec == "memory:" || spec == "memory" {
            return Ok(TargetSpec::Memory);
        }
        let postgres = spec
            .strip_prefix("postgres:")
            .filter(|rest| rest.starts_with("postgres://") || rest.starts_with("postgresql://"));
        if let Some(url) = postgres {
            return Ok(TargetSpec::Postgres(url.to_owned()));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(TargetSpec::Postgres(spec.to_owned()));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            if !spec.contains("/db/") {
                return Err(format!(
                    "{spec}: an HTTP target names its database: http://HOST:PORT/db/NAME"
                ));
            }
            return Ok(TargetSpec::Http(spec.to_owned()));
        }
        Err(format!(
            "{spec}: unknown target; use embedded:PATH, memory:, postgres:postgres://… or http://HOST:PORT/db/NAME"
        ))
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Embedded(path) => write!(f, "embedded:{path}"),
            TargetSpec::Memory => f.write_str("memory:"),
            TargetSpec::Postgres(url) => write!(f, "postgres:{url}"),
            TargetSpec::Http(url) => f.write_str(url),
        }
    }
}
