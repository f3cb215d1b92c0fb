//! Time limits on what a client sends, against slow-loris clients that hold
//! a connection (and its memory) by trickling a request a byte at a time.
//!
//! * The request head: hyper's `header_read_timeout` (set in
//!   [`crate::serve`]) closes a connection whose headers do not arrive in
//!   time, and an idle keep-alive connection once its next request is
//!   that late.
//! * The body: [`limit_body_time`] (applied to every request by
//!   [`crate::edge`]) gives the whole body one deadline from the moment the
//!   head arrived (not a timeout between chunks, which a
//!   byte every few seconds would reset); a late body is answered 408 and
//!   the connection closed.
//! * The body of a restore (`POST /db/{db}/restore`) is a whole database,
//!   as long as it is: it has `body_timeout` between two chunks instead
//!   (and only a key with the admin role gets it read).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};

/// Gives `request`'s body `timeout` to arrive, in all, from now on.
pub(crate) fn limit_body_time(request: Request, timeout: Duration) -> Request {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        // No body (a GET, a DELETE): nothing to wait for.
        return request;
    }
    // A restore's body is a whole database: a deadline between chunks.
    let between_chunks = request.method() == axum::http::Method::POST
        && crate::backup::is_restore_path(request.uri().path());
    request.map(|body| Body::new(DeadlineBody::new(body, timeout, between_chunks)))
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// The deadline that passed, when `error` or one of its sources is a
/// [`BodyTimedOut`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(BodyTimedOut(timeout)) = error.downcast_ref() {
            return Some(*timeout);
        }
        next = error.source();
    }
    None
}

/// A body that fails with [`BodyTimedOut`] once its deadline has passed.
struct DeadlineBody {
    body: Body,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The deadline moves with each chunk: `timeout` between two chunks
    /// rather than for the whole body.
    between_chunks: bool,
}

impl DeadlineBody {
    fn new(body: Body, timeout: Duration, between_chunks: bool) -> Self {
        DeadlineBody {
            body,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            between_chunks,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if self.between_chunks {
                let next = tokio::time::Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
            }
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
