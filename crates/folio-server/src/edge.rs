//! What every request is judged on before it reaches a route, in one
//! middleware ([`admit`]) wrapped once around the router:
//!
//! * **The host it names** (RFC 9112 §3.2). An HTTP/1.1 request without a
//!   `Host`, or with two, is `400`. Without API keys, only loopback names
//!   are served, against DNS rebinding: a web page whose own name its
//!   owner re-points at 127.0.0.1 runs in the browser as that name, so it
//!   could read and write every database of a server on the visitor's
//!   machine if any `Host` were served. Served: `localhost`, names under
//!   `.localhost` (which resolve to loopback and nowhere else, RFC 6761),
//!   IP literals (`127.0.0.1`, `[::1]`, with or without a port: an address
//!   cannot be re-pointed), and the names the operator allows
//!   ([`crate::AppState::with_allowed_hosts`], `--allow-host`). Any other
//!   name is `421 Misdirected Request`. With keys, every name is served: a
//!   page cannot send a key it does not have. Only the `Host` header (or an
//!   absolute request target) counts, never `X-Forwarded-Host` or
//!   `Forwarded`, which a page may set.
//! * **The size its body announces**: a `Content-Length` over the limit is
//!   `413` before any of the body is read, and the connection is closed.
//!   A client that sent `Expect: 100-continue` gets no `100 Continue`
//!   (hyper sends it only when the body is first read) and need not send
//!   the body at all. A chunked body is counted as it arrives, by the
//!   handlers, and is `413` once over the limit.
//! * **The time its body may take**: [`crate::deadline`].

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The longest host name quoted back in a problem body (a DNS name's
/// longest).
const MAX_QUOTED_NAME: usize = 253;

/// Checks the host and the announced body size, then gives the body its
/// deadline.
pub(crate) async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(error) = check_host(&state, &request) {
        return error.into_response();
    }
    let limits = state.limits();
    // A restore's body is a whole database, with no size limit.
    let restore = request.method() == axum::http::Method::POST
        && crate::backup::is_restore_path(request.uri().path());
    if !restore
        && announced_length(request.headers())
            .is_some_and(|length| length > u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX))
    {
        let mut response = ApiError::PayloadTooLarge(limits.max_body_bytes).into_response();
        // The body was not read: reading it only to keep the connection
        // would cost what the limit is there to spare.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(crate::deadline::limit_body_time(
        request,
        limits.body_timeout,
    ))
    .await
}

/// The body length a request announces (hyper has checked that a
/// `Content-Length` is one valid number).
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether this server answers for the host `request` names.
fn check_host(state: &AppState, request: &Request) -> ApiResult<()> {
    let mut headers = request.headers().get_all(header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(ApiError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    // An absolute request target names the host itself, and then the
    // `Host` header does not count (RFC 9112 §3.2.2).
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => match header {
            Some(value) => value
                .to_str()
                .map_err(|_| ApiError::BadRequest("the Host header is not ASCII".into()))?,
            None if request.version() >= Version::HTTP_11 => {
                return Err(ApiError::BadRequest(
                    "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)".into(),
                ));
            }
            // HTTP/1.0 without a `Host` names no host, and no browser
            // sends such a request.
            None => return Ok(()),
        },
    };
    if state.has_keys() {
        return Ok(());
    }
    let host = Host::parse(host).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the Host {:?} is not a host name or address with an optional port",
            quoted(host)
        ))
    })?;
    match host {
        Host::Address => Ok(()),
        Host::Name(name) if is_loopback_name(name) || state.allows_host(name) => Ok(()),
        Host::Name(name) => Err(ApiError::MisdirectedRequest(format!(
            "this server has no API keys, so it answers only requests for localhost, a name \
             under .localhost or an IP address (a page of another site could otherwise reach \
             it through DNS rebinding), and not for {:?}: use one of those, start the server \
             with --allow-host {0}, or give it --keys",
            quoted(name)
        ))),
    }
}

/// A host as a request names it, without its port.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    /// An IPv4 address or a bracketed IPv6 address.
    Address,
    /// A registered name.
    Name(&'a str),
}

impl<'a> Host<'a> {
    /// `host[:port]` (an authority may also carry `user@`): `None` when
    /// malformed.
    fn parse(authority: &'a str) -> Option<Self> {
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if let Some(rest) = host_port.strip_prefix('[') {
            let (literal, after) = rest.split_once(']')?;
            literal.parse::<Ipv6Addr>().ok()?;
            return is_port_part(after).then_some(Host::Address);
        }
        let host = match host_port.split_once(':') {
            Some((host, port)) => {
                if !port.bytes().all(|byte| byte.is_ascii_digit()) {
                    return None;
                }
                host
            }
            None => host_port,
        };
        if host.is_empty() {
            return None;
        }
        if host.parse::<Ipv4Addr>().is_ok() {
            return Some(Host::Address);
        }
        Some(Host::Name(host))
    }
}

/// `""` or `:digits` (an empty port is allowed, RFC 3986 §3.2.3).
fn is_port_part(after: &str) -> bool {
    after.is_empty()
        || after
            .strip_prefix(':')
            .is_some_and(|port| port.bytes().all(|byte| byte.is_ascii_digit()))
}

/// `name` without the trailing dot of a fully qualified name.
pub(crate) fn normalize_name(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// `localhost` and the names under it, which resolve to loopback only.
fn is_loopback_name(name: &str) -> bool {
    let name = normalize_name(name);
    const SUFFIX: &str = ".localhost";
    name.eq_ignore_ascii_case("localhost")
        || (name.len() > SUFFIX.len()
            && name.is_char_boundary(name.len() - SUFFIX.len())
            && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
}

/// `text`, cut to a DNS name's length, to be quoted in a problem body.
fn quoted(text: &str) -> &str {
    let mut end = text.len().min(MAX_QUOTED_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_with_or_without_a_port() {
        for (text, expected) in [
            ("localhost", Some(Host::Name("localhost"))),
            ("localhost:7070", Some(Host::Name("localhost"))),
            ("localhost:", Some(Host::Name("localhost"))),
            ("example.com.:80", Some(Host::Name("example.com."))),
            ("user@example.com:80", Some(Host::Name("example.com"))),
            ("127.0.0.1", Some(Host::Address)),
            ("10.1.2.3:7070", Some(Host::Address)),
            ("[::1]", Some(Host::Address)),
            ("[::1]:7070", Some(Host::Address)),
            ("[fe80::1]:1", Some(Host::Address)),
            ("", None),
            (":7070", None),
            ("localhost:70a", None),
            ("localhost:1:2", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[evil.com]", None),
            ("::1", None),
        ] {
            assert_eq!(Host::parse(text), expected, "{text:?}");
        }
    }

    #[test]
    fn only_localhost_and_its_subdomains_are_loopback_names() {
        for name in [
            "localhost",
            "LocalHost",
            "localhost.",
            "studio.localhost",
            "a.b.LOCALHOST",
        ] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in [
            "localhost.evil.com",
            "evillocalhost",
            ".localhost",
            "localhost.com",
            "127.0.0.1.nip.io",
            "évil.localhos",
        ] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
