//! Folio's HTTP server: the protocol of `docs/protocol.md`, where optimistic
//! concurrency is plain HTTP — `ETag` is the change vector, `If-Match`
//! makes a write conditional, `412` refuses a stale one, `428` refuses an
//! update that forgot its precondition.
//!
//! [`router`] builds the whole application (tests drive it in-process);
//! [`serve`] runs it on a socket with graceful shutdown. The `folio` command
//! (`crates/folio-cli`) is the command line around both.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod batch;
pub mod changes;
pub mod databases;
pub mod deadline;
pub mod documents;
pub mod edge;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod responses;
pub mod revisions;
pub mod state;
pub mod studio;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

pub use crate::databases::{Backend, DatabaseLimits, Databases};
pub use crate::error::ApiError;
pub use crate::state::{AppState, Limits};

/// The application: every route of the protocol, over `state`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits().max_body_bytes;
    let routes = Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(admin::openapi))
        .route("/db", get(admin::list_databases))
        .route("/db/{db}", put(admin::create_database))
        .route("/db/{db}/batch", post(batch::batch))
        .route("/db/{db}/query", post(batch::query))
        .route("/db/{db}/changes", get(changes::changes))
        .route("/db/{db}/collections", get(documents::list_collections))
        .route(
            "/db/{db}/collections/{collection}/config",
            get(revisions::get_config).put(revisions::put_config),
        )
        .route(
            "/db/{db}/docs/{collection}/{id}/revisions",
            get(revisions::list_revisions),
        )
        .route(
            "/db/{db}/docs/{collection}/{id}/revisions/{change_vector}",
            get(revisions::get_revision),
        )
        .route("/db/{db}/backup", get(backup::backup))
        .route("/db/{db}/restore", post(backup::restore))
        .route("/db/{db}/export", get(backup::export))
        .route(
            "/db/{db}/docs/{collection}",
            get(documents::list_documents).post(documents::post_document),
        )
        .route(
            "/db/{db}/docs/{collection}/get",
            // The static route shadows the document whose id is "get": it
            // serves that document's methods too.
            post(documents::get_many)
                .get(documents::get_document)
                .put(documents::put_document)
                .delete(documents::delete_document)
                .patch(documents::patch_document),
        )
        .route(
            "/db/{db}/docs/{collection}/{id}",
            get(documents::get_document)
                .put(documents::put_document)
                .delete(documents::delete_document)
                .patch(documents::patch_document),
        )
        .merge(studio::routes())
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        // Counting by route needs the route, so this one wraps each route.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state.clone());
    // What needs no route wraps the router once. `Router::layer` wraps each
    // route in a boxed service of its own, and every request clones its
    // route's whole stack of them, a measurable share of the server's CPU
    // per request.
    Router::new().fallback_service(
        ServiceBuilder::new()
            // A failed answer is logged where its cause is known (the
            // handler's error, the engine), once: not again here.
            .layer(TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ))
            .layer(middleware::from_fn_with_state(state, edge::admit))
            .layer(DefaultBodyLimit::max(body_limit))
            .service(routes),
    )
}

/// Counts every request by method, route and status.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Both clones are cheap (a shared string, an enum): nothing is
    // allocated per request.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics().request(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
    );
    response
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Serve on a non-loopback address without API keys.
    pub insecure: bool,
}

/// Refuses to expose a server without keys beyond loopback, unless told.
pub fn check_exposure(listen: &SocketAddr, has_keys: bool, insecure: bool) -> Result<(), String> {
    if listen.ip().is_loopback() || has_keys || insecure {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {listen} without API keys: anyone who can reach it could read and \
             write every database. Give --keys FILE, listen on 127.0.0.1, or pass --insecure."
        ))
    }
}

/// How many refusals at the connection limit may be under way at once;
/// beyond, a connection is closed without an answer, so that refusing
/// holds a bounded number of descriptors too.
const REFUSALS_AT_ONCE: usize = 64;

/// How long a connection refused at the limit may take to send its request
/// head, to be answered `503`.
const REFUSAL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `state` on `listener` (HTTP/1.1) until SIGINT or SIGTERM;
/// requests in flight finish before it returns. A connection whose request
/// head takes longer than `Limits::header_timeout` is closed.
///
/// At most `Limits::max_connections` connections are served at once. One
/// more is answered `503` with a problem body (`connection-limit`) and
/// `Retry-After: 1` to its first request, then closed: a client learns why
/// instead of hanging in the listen queue, and the descriptors the
/// databases need are not all taken by idle connections.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let limits = state.limits();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut refuse = hyper::server::conn::http1::Builder::new();
    refuse
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REFUSAL_PATIENCE)
        .keep_alive(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
    let stopping = state.clone();
    let counters = state.clone();
    let service = hyper_util::service::TowerToHyperService::new(router(state));
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: keep serving the others.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out as soon as they are written, not held back for
        // the acknowledgment of an earlier segment (Nagle's algorithm): an
        // event of the changes feed is a small write of its own.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set on a connection");
        }
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.metrics().connection_refused();
            let Ok(refusal) = refusals.clone().try_acquire_owned() else {
                continue;
            };
            let limit = limits.max_connections;
            let answer = hyper::service::service_fn(move |_request| {
                std::future::ready(Ok::<_, std::convert::Infallible>(
                    ApiError::TooManyConnections(limit).into_response(),
                ))
            });
            let connection = refuse.serve_connection(io, answer);
            tokio::spawn(async move {
                let _ = connection.await;
                drop(refusal);
            });
            continue;
        };
        let connection = connections.watch(http.serve_connection(io, service.clone()));
        let counted = counters.clone();
        counted.metrics().connection(true);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection ended with an error");
            }
            counted.metrics().connection(false);
            drop(slot);
        });
    }
    drop(listener);
    // Event streams never end by themselves: end them, so that graceful
    // shutdown does not wait for them forever.
    stopping.shut_down();
    connections.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
