//! Where a database is: the one grammar of database URLs, read by
//! [`DocumentStore::connect`](crate::DocumentStore::connect) and by every
//! option of the `folio` command that names a database (`--target` of
//! `bench` and `torture`, `copy`'s places, `serve --postgres`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{Error, Result};

/// A parsed database URL.
///
/// | URL | engine |
/// | --- | --- |
/// | `sqlite:DIR` (also `file:DIR`, `embedded:DIR`) | embedded: one file per database in the directory `DIR` |
/// | `memory:` | embedded, in memory: nothing outlives the store |
/// | `postgres://…`, `postgresql://…` (also `postgres:postgres://…`) | PostgreSQL: each Folio database a schema of that database |
/// | `http://HOST:PORT/db/NAME` (also `https://`) | a Folio server's database `NAME`, through the remote engine |
///
/// ```
/// use folio::Location;
///
/// let location: Location = "embedded:./data".parse().unwrap();
/// assert_eq!(location, Location::Embedded("./data".into()));
/// assert_eq!(location.to_string(), "sqlite:./data");
/// let server: Location = "http://127.0.0.1:7070/db/shop".parse().unwrap();
/// assert_eq!(server.server_database(), Some("shop"));
/// assert!("mysql://x".parse::<Location>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded engine on a data directory.
    Embedded(PathBuf),
    /// The embedded engine in memory.
    Memory,
    /// The PostgreSQL engine on the server of this `postgres://` URL.
    Postgres(String),
    /// A Folio server: an `http(s)://` URL, naming its database with
    /// `/db/NAME` (the command line lets some commands name it apart).
    Server(String),
}

impl Location {
    /// Parses a database URL; [`Error::InvalidInput`] saying what is
    /// accepted when it is none.
    pub fn parse(url: &str) -> Result<Location> {
        if url == "memory:" || url == "memory" {
            return Ok(Location::Memory);
        }
        let embedded = ["sqlite:", "file:", "embedded:"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        if let Some(path) = embedded {
            let path = match path.strip_prefix("//") {
                // `file:///var/folio`, `file://localhost/var/folio`; a
                // directory on another host is none of this machine's.
                Some(rest) if url.starts_with("file:") => match rest.find('/') {
                    Some(0) => rest,
                    Some(slash) if &rest[..slash] == "localhost" => &rest[slash..],
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "{url:?} names a directory on another host; give a local one \
                             (file:///PATH or sqlite:PATH)"
                        )));
                    }
                },
                Some(rest) => rest,
                None => path,
            };
            if path.is_empty() {
                return Err(Error::InvalidInput(format!("{url:?} names no directory")));
            }
            return Ok(Location::Embedded(PathBuf::from(path)));
        }
        let postgres = url
            .strip_prefix("postgres:")
            .filter(|rest| is_postgres(rest));
        if let Some(url) = postgres {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if is_postgres(url) {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Location::Server(url.to_owned()));
        }
        Err(Error::InvalidInput(format!(
            "unknown database URL {:?}: use sqlite:DIR, memory:, postgres://… or \
             http://HOST:PORT/db/NAME",
            redacted(url)
        )))
    }

    /// A server URL's database: the `NAME` of a path that ends with
    /// `/db/NAME` (`None` for other locations, or a server URL without it).
    pub fn server_database(&self) -> Option<&str> {
        let Location::Server(url) = self else {
            return None;
        };
        split_server(url).1
    }

    /// A server URL without its `/db/NAME` (a path prefix before it is
    /// kept, for a server behind a reverse proxy; `None` for other
    /// locations).
    pub fn server_base(&self) -> Option<&str> {
        let Location::Server(url) = self else {
            return None;
        };
        Some(split_server(url).0)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A server URL as its base and the database its path ends with
/// (`/db/NAME`); a query string or a fragment is no part of either.
fn split_server(url: &str) -> (&str, Option<&str>) {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let url = url.trim_end_matches('/');
    if let Some((before, name)) = url.rsplit_once('/')
        && let Some(base) = before.strip_suffix("/db")
        && base
            .split_once("://")
            .is_some_and(|(_, authority)| !authority.is_empty())
        && !name.is_empty()
    {
        return (base, Some(name));
    }
    (url, None)
}

/// `url` with the password of its authority (`user:password@`) replaced
/// by `***`, for messages.
pub(crate) fn redacted(url: &str) -> String {
    let Some(start) = url.find("://").map(|index| index + 3) else {
        return url.to_owned();
    };
    let end = url[start..]
        .find('/')
        .map_or(url.len(), |index| start + index);
    let authority = &url[start..end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..start],
            &authority[..colon],
            &url[start + at..]
        ),
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Location {
    /// As [`Display`](fmt::Display): a password is shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl FromStr for Location {
    type Err = Error;

    fn from_str(url: &str) -> Result<Location> {
        Location::parse(url)
    }
}

impl fmt::Display for Location {
    /// The URL in its first spelling (`sqlite:DIR` for the embedded
    /// engine), for messages: a password in it is shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Embedded(path) => write!(f, "sqlite:{}", path.display()),
            Location::Memory => f.write_str("memory:"),
            Location::Postgres(url) | Location::Server(url) => f.write_str(&redacted(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_to_one_location() {
        for (url, location) in [
            ("sqlite:./data", Location::Embedded("./data".into())),
            ("file:///var/folio", Location::Embedded("/var/folio".into())),
            ("embedded:data", Location::Embedded("data".into())),
            ("memory:", Location::Memory),
            (
                "postgres://folio@db/folio",
                Location::Postgres("postgres://folio@db/folio".into()),
            ),
            (
                "postgres:postgresql://db/folio",
                Location::Postgres("postgresql://db/folio".into()),
            ),
            (
                "http://127.0.0.1:7070/db/shop",
                Location::Server("http://127.0.0.1:7070/db/shop".into()),
            ),
        ] {
            assert_eq!(Location::parse(url).unwrap(), location, "{url}");
            // What it prints parses back to itself.
            assert_eq!(Location::parse(&location.to_string()).unwrap(), location);
        }
    }

    #[test]
    fn servers_name_their_database_and_bad_urls_say_what_is_accepted() {
        let server = Location::parse("http://h:1/db/shop/").unwrap();
        assert_eq!(server.server_database(), Some("shop"));
        assert_eq!(server.server_base(), Some("http://h:1"));
        let bare = Location::parse("http://h:1").unwrap();
        assert_eq!(bare.server_database(), None);
        assert_eq!(bare.server_base(), Some("http://h:1"));
        // The last `/db/NAME` names the database, behind a prefix that may
        // hold one of its own; a query string is no part of it.
        let proxied = Location::parse("http://h/db/folio/db/shop?x=1").unwrap();
        assert_eq!(proxied.server_database(), Some("shop"));
        assert_eq!(proxied.server_base(), Some("http://h/db/folio"));
        let deeper = Location::parse("http://h/db/shop/docs").unwrap();
        assert_eq!(deeper.server_database(), None);
        let host_named_db = Location::parse("http://db/x").unwrap();
        assert_eq!(host_named_db.server_database(), None);
        // A password is never shown.
        let secret = Location::parse("postgres://folio:s3cret@db/folio").unwrap();
        assert_eq!(secret.to_string(), "postgres://folio:***@db/folio");
        let refused = Location::parse("mysql://u:s3cret@x").unwrap_err();
        assert!(!refused.to_string().contains("s3cret"), "{refused}");
        assert_eq!(
            Location::parse("file://localhost/var/folio").unwrap(),
            Location::Embedded("/var/folio".into())
        );
        for bad in [
            "sqlite:",
            "mysql://x",
            "./data",
            "postgres:mysql://x",
            "file://far/x",
        ] {
            match Location::parse(bad) {
                Err(Error::InvalidInput(detail)) => assert!(detail.contains(bad), "{detail}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
