//! The URL of one database on a Folio server, and the URLs of its routes.

use folio_core::{Error, Result, validate};
use url::Url;

/// Where one database is: the server's root (which may carry a path
/// prefix, e.g. behind a reverse proxy) and the database's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `scheme://host:port/prefix` without the `/db/NAME` suffix.
    root: Url,
    database: String,
}

const FORM: &str = "http://host:port/db/NAME";

impl Endpoint {
    /// Parses `http://host:port[/prefix]/db/NAME` (a trailing `/` is
    /// allowed). Refuses other schemes, credentials in the URL (use the API
    /// key), query strings, fragments, and invalid database names.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let url = Url::parse(text)
            .map_err(|error| invalid(text, &format!("it is not a URL ({error})")))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(Error::InvalidInput(format!(
                    "{:?}: this build of folio-remote has no TLS built in; use http:// \
                     (e.g. behind a TLS-terminating proxy on the same host)",
                    redacted(text)
                )));
            }
            other => return Err(invalid(text, &format!("the scheme {other:?} is not http"))),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(text, "it names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                text,
                "it carries credentials: give the API key in the options instead",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(text, "it has a query string or a fragment"));
        }
        let mut segments: Vec<&str> = url.path_segments().map_or_else(Vec::new, Iterator::collect);
        if segments.last() == Some(&"") {
            segments.pop();
        }
        let [prefix @ .., "db", database] = segments.as_slice() else {
            return Err(invalid(text, "its path does not end with /db/NAME"));
        };
        // The database name is plain ASCII: no percent-encoding to undo.
        validate::database(database)?;
        let database = (*database).to_owned();
        let mut root = url.clone();
        root.set_path(&prefix.join("/"));
        Ok(Endpoint { root, database })
    }

    /// `host[:port]` as the `Host` header names it: the port only when it
    /// is not HTTP's default (brackets kept around an IPv6 address).
    pub(crate) fn authority(&self) -> &str {
        &self.root[url::Position::BeforeHost..url::Position::AfterPort]
    }

    /// The database's name.
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// The URL of `/db/{database}/{segments…}`; each segment is
    /// percent-encoded as one path segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.root.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("an http URL has a path that segments can be pushed to");
            path.pop_if_empty().push("db").push(&self.database);
            path.extend(segments);
        }
        url
    }

    /// The URL of the server's `/db/{segments…}` (its databases, not this
    /// one's routes); each segment is percent-encoded as one path segment.
    pub(crate) fn server_url(&self, segments: &[&str]) -> Url {
        let mut url = self.root.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("an http URL has a path that segments can be pushed to");
            path.pop_if_empty().push("db");
            path.extend(segments);
        }
        url
    }

    /// The database's URL, as given to [`Endpoint::parse`] (normalized).
    pub(crate) fn database_url(&self) -> Url {
        self.url(&[])
    }
}

fn invalid(text: &str, why: &str) -> Error {
    let shown = redacted(text);
    Error::InvalidInput(format!(
        "invalid Folio server URL {shown:?}: {why}; expected {FORM}"
    ))
}

/// `text` with any `user:password@` of its authority replaced by `***@`,
/// whether or not it parses, so that no message repeats a password.
fn redacted(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|index| index + 3) else {
        return text.to_owned();
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..scheme_end], &rest[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Endpoint {
        Endpoint::parse(text).unwrap_or_else(|error| panic!("{text} parses: {error}"))
    }

    fn refused(text: &str) -> String {
        match Endpoint::parse(text) {
            Err(Error::InvalidInput(message)) => message,
            other => panic!("{text:?} must be refused as invalid input, got {other:?}"),
        }
    }

    #[test]
    fn parses_host_port_and_database() {
        let endpoint = parse("http://127.0.0.1:7070/db/shop");
        assert_eq!(endpoint.database(), "shop");
        assert_eq!(
            endpoint.database_url().as_str(),
            "http://127.0.0.1:7070/db/shop"
        );
        assert_eq!(
            endpoint.url(&["batch"]).as_str(),
            "http://127.0.0.1:7070/db/shop/batch"
        );
        assert_eq!(
            endpoint.url(&["docs", "people", "get"]).as_str(),
            "http://127.0.0.1:7070/db/shop/docs/people/get"
        );
    }

    #[test]
    fn accepts_a_trailing_slash_a_default_port_and_a_prefix() {
        assert_eq!(
            parse("http://localhost:7070/db/shop/"),
            parse("http://localhost:7070/db/shop")
        );
        assert_eq!(
            parse("http://folio.internal/db/a-b_1")
                .url(&["query"])
                .as_str(),
            "http://folio.internal/db/a-b_1/query"
        );
        let behind_proxy = parse("http://proxy:8080/folio/v1/db/shop");
        assert_eq!(behind_proxy.database(), "shop");
        assert_eq!(
            behind_proxy.url(&["batch"]).as_str(),
            "http://proxy:8080/folio/v1/db/shop/batch"
        );
        // A prefix that itself contains "db" segments: the last pair names the database.
        assert_eq!(parse("http://h/db/db/db/x").database(), "x");
        assert_eq!(
            parse("http://[::1]:7070/db/shop").database_url().as_str(),
            "http://[::1]:7070/db/shop"
        );
    }

    #[test]
    fn the_authority_is_what_the_host_header_names() {
        assert_eq!(
            parse("http://127.0.0.1:7070/db/shop").authority(),
            "127.0.0.1:7070"
        );
        assert_eq!(
            parse("http://Folio.Internal:80/x/db/shop").authority(),
            "folio.internal"
        );
        assert_eq!(parse("http://[::1]:7070/db/shop").authority(), "[::1]:7070");
    }

    #[test]
    fn segments_are_percent_encoded() {
        let endpoint = parse("http://h:1/db/shop");
        assert_eq!(
            endpoint.url(&["docs", "a/b c?"]).as_str(),
            "http://h:1/db/shop/docs/a%2Fb%20c%3F"
        );
    }

    #[test]
    fn refuses_malformed_urls() {
        for bad in [
            "",
            "localhost:7070/db/shop",
            "127.0.0.1:7070",
            "http://",
            "http:///db/shop",
            "http://h:7070",
            "http://h:7070/",
            "http://h:7070/db",
            "http://h:7070/db/",
            "http://h:7070/shop",
            "http://h:7070/db/shop/docs",
            "http://h:7070/db/shop?x=1",
            "http://h:7070/db/shop#top",
            "http://user:secret@h:7070/db/shop",
            "ftp://h/db/shop",
            "postgres://h/db/shop",
            "http://h:99999/db/shop",
            "http://user:secret@h:99999/db/shop",
            "https://user:secret@h/db/shop",
            // Dot segments are resolved before the path is read.
            "http://h:7070/db/..",
            "http://h:7070/db/%2E%2E",
            "http://h:7070/db/shop/..",
        ] {
            let message = refused(bad);
            assert!(!message.contains("secret"), "{message}");
        }
        assert!(refused("http://h:7070/db/shop?x=1").contains("query string"));
        assert!(refused("http://u:p@h/db/shop").contains("API key"));
        assert!(refused("http://h:7070/shop").contains("/db/NAME"));
    }

    #[test]
    fn refuses_invalid_database_names() {
        for bad in ["Shop", "-shop", "a.b", "a%2Fb", "sh op", "%C3%A9"] {
            let url = format!("http://h:7070/db/{bad}");
            let message = refused(&url);
            assert!(message.contains("database name"), "{url}: {message}");
        }
        let long = format!("http://h/db/{}", "d".repeat(64));
        assert!(refused(&long).contains("database name"));
        parse(&format!("http://h/db/{}", "d".repeat(63)));
    }

    #[test]
    fn https_says_tls_is_not_built_in() {
        let message = refused("https://folio.example:7070/db/shop");
        assert!(message.contains("TLS"), "{message}");
    }
}
