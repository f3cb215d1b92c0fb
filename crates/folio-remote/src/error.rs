//! The one mapping of HTTP failures onto [`folio_core::Error`].
//!
//! A failure is either an answer with an error status (and, from a Folio
//! server, an RFC 9457 problem body) or no usable answer at all (the
//! connection failed, timed out, or the body was not what the protocol
//! says). [`map`] turns both into the error kinds every engine returns, so
//! that code above the engine never looks at HTTP status codes.

use folio_core::{BatchId, ConcurrencyError, EngineError, EngineErrorKind, Error, InDoubt};
use folio_protocol::Problem;

/// Something that went wrong with one request.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with a status other than 2xx.
    Status {
        /// The status code.
        status: u16,
        /// The response body (a problem body from a Folio server).
        body: Vec<u8>,
        /// The `Location` of a redirect, if any.
        location: Option<String>,
    },
    /// No answer: connecting, sending or receiving failed or timed out.
    Transport {
        /// What failed.
        error: Transport,
        /// The request, `METHOD URL`, for the message.
        request: String,
        /// Whether the request was a write (a batch), whose fate is then
        /// unknown unless connecting failed.
        write: bool,
    },
    /// An answer that does not follow the protocol (malformed JSON, the
    /// wrong number of results…).
    Protocol(String),
}

/// How a request got no usable answer.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Connecting or sending failed, or the connection ended before the
    /// answer's head.
    Send(hyper_util::client::legacy::Error),
    /// The answer's body could not be read.
    Receive(hyper::Error),
    /// No whole answer within the engine's timeout.
    Timeout(tokio::time::error::Elapsed),
}

/// The longest piece of a non-problem body quoted in a message.
const QUOTED_BODY: usize = 200;

/// Maps a failure onto Folio's errors:
///
/// | failure | error |
/// | --- | --- |
/// | a problem of type `in-doubt` | [`Error::InDoubt`] |
/// | 422 `idempotency-key-reused` | [`Error::BatchIdReused`] |
/// | 400, 413, 415, 422, 428 | [`Error::InvalidInput`] |
/// | 401, 403 | [`Error::Unauthorized`] |
/// | 404 | [`Error::NotFound`] |
/// | 409 with conflicts | [`Error::Concurrency`] |
/// | 429, 503 | [`EngineErrorKind::Busy`] |
/// | 502 | [`EngineErrorKind::Network`] |
/// | 504, a timeout | [`EngineErrorKind::Timeout`] |
/// | no connection, a broken connection | [`EngineErrorKind::Network`] |
/// | 500, any other status, a malformed answer | [`EngineErrorKind::Other`] |
///
/// Messages keep the problem's `detail`; engine errors carry the HTTP
/// client's error (or the timeout) as their source.
pub(crate) fn map(failure: Failure) -> Error {
    match failure {
        Failure::Status {
            status,
            body,
            location,
        } => {
            let problem = serde_json::from_slice::<Problem>(&body).unwrap_or_default();
            let detail = describe(status, &problem, &body, location.as_deref());
            let key = || {
                problem
                    .idempotency_key
                    .as_deref()
                    .and_then(|key| BatchId::parse(key).ok())
            };
            match (status, problem.kind_name()) {
                (_, Some("in-doubt")) => {
                    return Error::InDoubt(InDoubt::new(key(), detail));
                }
                (422, Some("idempotency-key-reused")) => {
                    if let Some(key) = key() {
                        return Error::BatchIdReused(key);
                    }
                }
                _ => {}
            }
            match status {
                400 | 413 | 415 | 422 | 428 => Error::InvalidInput(detail),
                // A refusal of the request, not of the key.
                403 if problem.kind_name() == Some("database-limit") => Error::InvalidInput(detail),
                401 | 403 => Error::Unauthorized(detail),
                404 => Error::NotFound(detail),
                409 => match problem.conflicts {
                    Some(conflicts) if !conflicts.is_empty() => {
                        Error::Concurrency(ConcurrencyError::new(conflicts))
                    }
                    _ => engine(
                        EngineErrorKind::Other,
                        format!("the server answered 409 without conflicts: {detail}"),
                    ),
                },
                429 | 503 => engine(
                    EngineErrorKind::Busy,
                    format!("the server is busy ({status}): {detail}"),
                ),
                502 => engine(
                    EngineErrorKind::Network,
                    format!("a gateway could not reach the server (502): {detail}"),
                ),
                504 => engine(
                    EngineErrorKind::Timeout,
                    format!("a gateway timed out waiting for the server (504): {detail}"),
                ),
                _ => engine(
                    EngineErrorKind::Other,
                    format!("the server answered {status}: {detail}"),
                ),
            }
        }
        Failure::Transport {
            error,
            request,
            write,
        } => {
            let connecting = matches!(&error, Transport::Send(error) if error.is_connect());
            let (kind, what) = match error {
                Transport::Timeout(_) => (
                    EngineErrorKind::Timeout,
                    "the request to the Folio server timed out",
                ),
                _ => (
                    EngineErrorKind::Network,
                    "the request to the Folio server failed",
                ),
            };
            let outcome = if write && !connecting {
                " (the batch may or may not have been applied: read before retrying)"
            } else {
                ""
            };
            let engine = |source: &(dyn std::error::Error + 'static)| {
                EngineError::new(
                    kind,
                    format!("{what}{outcome}: {request}: {}", chain(source)),
                )
            };
            Error::Engine(match error {
                Transport::Send(error) => engine(&error).with_source(error),
                Transport::Receive(error) => engine(&error).with_source(error),
                Transport::Timeout(error) => engine(&error).with_source(error),
            })
        }
        Failure::Protocol(what) => engine(
            EngineErrorKind::Other,
            format!("the Folio server's answer does not follow the protocol: {what}"),
        ),
    }
}

/// Whether a failed batch is sent again with its key, and whether it may
/// have been applied: after no answer once it was sent (a connection that
/// could not be made sent nothing), and after `502`, `503` or `504` (a
/// server or gateway that may have passed it on), unless the server says
/// the batch is in doubt itself (`in-doubt`: it already sent it again).
pub(crate) fn resending(failure: &Failure) -> (bool, bool) {
    match failure {
        Failure::Transport { error, .. } => {
            let connecting = matches!(error, Transport::Send(error) if error.is_connect());
            (true, !connecting)
        }
        Failure::Status {
            status: 502..=504,
            body,
            ..
        } => {
            let problem = serde_json::from_slice::<Problem>(body).unwrap_or_default();
            let resend = problem.kind_name() != Some("in-doubt");
            (resend, resend)
        }
        _ => (false, false),
    }
}

fn engine(kind: EngineErrorKind, message: String) -> Error {
    Error::Engine(EngineError::new(kind, message))
}

/// What the server said: the problem's `detail` (else its title or type),
/// else the start of a non-problem body, else the status alone.
fn describe(status: u16, problem: &Problem, body: &[u8], location: Option<&str>) -> String {
    if let Some(detail) = [&problem.detail, &problem.title, &problem.kind]
        .into_iter()
        .find(|text| !text.is_empty())
    {
        return detail.clone();
    }
    if (300..400).contains(&status) {
        return match location {
            Some(location) => {
                format!("redirected to {location}: connect to that URL instead")
            }
            None => "a redirect, which a Folio client does not follow".to_owned(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("status {status} without a body");
    }
    match text.char_indices().nth(QUOTED_BODY) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// An error and its sources, `: `-separated (the innermost source says
/// what happened).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use folio_core::Expectation;

    use super::*;

    fn status(status: u16, body: &str) -> Error {
        map(Failure::Status {
            status,
            body: body.as_bytes().to_vec(),
            location: None,
        })
    }

    fn problem(status: u16, detail: &str) -> Error {
        let body = serde_json::json!({
            "type": "https://folio.dev/problems/x",
            "title": "A title",
            "status": status,
            "detail": detail,
        });
        self::status(status, &body.to_string())
    }

    fn engine_kind(error: &Error) -> EngineErrorKind {
        match error {
            Error::Engine(engine) => engine.kind(),
            other => panic!("expected an engine error, got {other:?}"),
        }
    }

    #[test]
    fn client_errors_are_invalid_input_with_the_detail() {
        for code in [400, 413, 415, 428] {
            match problem(code, "the detail") {
                Error::InvalidInput(message) => assert_eq!(message, "the detail"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn auth_errors_are_unauthorized() {
        for code in [401, 403] {
            match problem(code, "key k1 may not write to shop") {
                Error::Unauthorized(message) => assert_eq!(message, "key k1 may not write to shop"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    /// A server at its limit of databases refuses the creation, not the key.
    #[test]
    fn the_database_limit_is_a_refused_request() {
        let body = serde_json::json!({
            "type": "https://folio.dev/problems/database-limit",
            "title": "Too many databases",
            "status": 403,
            "detail": "the server already holds its limit of 2 databases",
        });
        match status(403, &body.to_string()) {
            Error::InvalidInput(message) => assert!(message.contains("limit of 2"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_found_keeps_the_detail() {
        match problem(404, "no database \"shop\": create it with PUT /db/shop") {
            Error::NotFound(message) => assert!(message.contains("PUT /db/shop"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_failures_are_engine_errors() {
        let busy = problem(503, "the storage is unavailable (Busy); try again");
        assert_eq!(engine_kind(&busy), EngineErrorKind::Busy);
        assert!(busy.to_string().contains("try again"), "{busy}");
        assert_eq!(
            engine_kind(&problem(429, "slow down")),
            EngineErrorKind::Busy
        );
        let failed = problem(500, "the storage failed (Io)");
        assert_eq!(engine_kind(&failed), EngineErrorKind::Other);
        assert!(
            failed.to_string().contains("the storage failed (Io)"),
            "{failed}"
        );
        assert_eq!(engine_kind(&status(502, "")), EngineErrorKind::Network);
        assert_eq!(engine_kind(&status(504, "")), EngineErrorKind::Timeout);
        assert_eq!(engine_kind(&problem(405, "no")), EngineErrorKind::Other);
        assert_eq!(engine_kind(&problem(412, "no")), EngineErrorKind::Other);
    }

    #[test]
    fn conflicts_become_a_concurrency_error() {
        let body = serde_json::json!({
            "type": "https://folio.dev/problems/concurrency-conflict",
            "title": "Optimistic concurrency check failed",
            "status": 409,
            "detail": "Optimistic concurrency check failed for 2 documents: …",
            "conflicts": [
                { "collection": "people", "id": "p1", "expected": { "change_vector": "A:42-x" }, "actual": "A:57-x" },
                { "collection": "people", "id": "p2", "expected": "missing", "actual": null }
            ]
        });
        let Error::Concurrency(error) = status(409, &body.to_string()) else {
            panic!("expected a concurrency error");
        };
        let conflicts = error.conflicts();
        assert_eq!(conflicts.len(), 2);
        assert_eq!(conflicts[0].id(), "p1");
        assert_eq!(conflicts[0].expected(), &Expectation::version("A:42-x"));
        assert_eq!(conflicts[0].actual().map(|cv| cv.as_str()), Some("A:57-x"));
        assert_eq!(conflicts[1].expected(), &Expectation::Missing);
        assert_eq!(conflicts[1].actual(), None);
        // A 409 without conflicts is not a verdict Folio can act on.
        assert_eq!(engine_kind(&problem(409, "odd")), EngineErrorKind::Other);
    }

    #[test]
    fn bodies_that_are_not_problems_are_quoted_briefly() {
        match status(400, "<html>Bad gateway config</html>") {
            Error::InvalidInput(message) => {
                assert_eq!(message, "<html>Bad gateway config</html>");
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(10_000);
        match status(404, &long) {
            Error::NotFound(message) => assert!(message.chars().count() <= QUOTED_BODY + 1),
            other => panic!("{other:?}"),
        }
        match status(404, "") {
            Error::NotFound(message) => assert_eq!(message, "status 404 without a body"),
            other => panic!("{other:?}"),
        }
        let redirect = map(Failure::Status {
            status: 308,
            body: Vec::new(),
            location: Some("http://elsewhere/db/shop".into()),
        });
        assert_eq!(engine_kind(&redirect), EngineErrorKind::Other);
        assert!(
            redirect.to_string().contains("http://elsewhere/db/shop"),
            "{redirect}"
        );
    }

    #[test]
    fn malformed_answers_are_engine_errors() {
        let error = map(Failure::Protocol("expected 2 results, got 1".into()));
        assert_eq!(engine_kind(&error), EngineErrorKind::Other);
        assert!(error.to_string().contains("expected 2 results"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_connections_are_network_errors_with_their_source() {
        // A port that was free a moment ago: nothing listens there.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = crate::RemoteEngine::connect(
            &format!("http://127.0.0.1:{port}/db/x"),
            crate::RemoteOptions::default(),
        )
        .await
        .expect_err("nothing listens");
        assert_eq!(engine_kind(&error), EngineErrorKind::Network);
        let Error::Engine(engine) = &error else {
            unreachable!()
        };
        assert!(
            std::error::Error::source(engine)
                .is_some_and(|source| source.is::<hyper_util::client::legacy::Error>()),
            "the HTTP client's error is the source"
        );
        assert!(engine.message().contains(&port.to_string()), "{error}");
    }

    /// Connects, with `timeout`, to a server that holds every connection
    /// open and sends `head` (if any) after reading the request, but never
    /// more; the error the connect ends with.
    async fn connect_to_a_stalling_server(head: Option<&'static [u8]>, timeout: Duration) -> Error {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stalling = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                if let Some(head) = head {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(head).await;
                }
                held.push(socket);
            }
        });
        let options = crate::RemoteOptions {
            timeout,
            ..crate::RemoteOptions::default()
        };
        let error = crate::RemoteEngine::connect(&format!("http://{address}/db/x"), options)
            .await
            .expect_err("the server never answers in full");
        stalling.abort();
        error
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_that_does_not_answer_times_out() {
        let error = connect_to_a_stalling_server(None, Duration::from_millis(200)).await;
        assert_eq!(engine_kind(&error), EngineErrorKind::Timeout);
        assert!(error.to_string().contains("timed out"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_error_status_whose_body_never_comes_keeps_its_status() {
        // A 503 whose announced body never comes: the status is the answer.
        let head: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\n";
        let error = connect_to_a_stalling_server(Some(head), Duration::from_millis(300)).await;
        assert_eq!(engine_kind(&error), EngineErrorKind::Busy, "{error}");
    }
}
