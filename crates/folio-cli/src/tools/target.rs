//! The `--target` of `folio bench` and `folio torture`: a database URL in
//! the grammar of [`folio::Location`] (`sqlite:DIR` or `embedded:DIR`,
//! `memory:`, `postgres://…`, `http://HOST:PORT/db/NAME`), opened as an
//! application opens it.

use folio::{DocumentStore, Location};

/// Parses a `--target` (clap's value parser): a server URL must name its
/// database, which a run creates when it is absent.
///
/// ```
/// use folio::Location;
/// use folio_cli::tools::target::parse;
///
/// assert_eq!(parse("embedded:/tmp/bench"), Ok(Location::Embedded("/tmp/bench".into())));
/// assert!(parse("http://127.0.0.1:7070").is_err());
/// assert!(parse("mysql://x").is_err());
/// ```
pub fn parse(text: &str) -> Result<Location, String> {
    let location = Location::parse(text).map_err(|error| error.to_string())?;
    if matches!(location, Location::Server(_)) && location.server_database().is_none() {
        return Err(format!(
            "{text}: a server target names its database: http://HOST:PORT/db/NAME"
        ));
    }
    Ok(location)
}

/// Opens a store on `target`: database `database` where the URL names
/// none (embedded, PostgreSQL: created if absent); a server's database,
/// named by its URL, is created first when it does not exist.
pub async fn open(target: &Location, database: &str) -> Result<DocumentStore, String> {
    if let Location::Server(url) = target {
        folio::RemoteEngine::create(url, folio::RemoteOptions::default())
            .await
            .map_err(|error| match &error {
                folio::Error::Engine(engine)
                    if engine.kind() == folio::EngineErrorKind::Network =>
                {
                    format!("{target}: the server does not answer: {error}")
                }
                _ => format!("{target}: creating the database failed: {error}"),
            })?;
    }
    DocumentStore::builder()
        .location(target)
        .database(database)
        .open()
        .await
        .map_err(|error| format!("{target}: {error}"))
}
