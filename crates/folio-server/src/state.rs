//! What every handler shares.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;

use crate::auth::{Keys, Role};
use crate::databases::Databases;
use crate::error::ApiResult;
use crate::metrics::Metrics;

/// Limits on what a request may carry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest body, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// The deepest nesting of arrays and objects (default 128).
    pub max_nesting: usize,
    /// How long a client may take to send a request's head (default 30 s);
    /// also how long an idle keep-alive connection stays open. Only
    /// [`crate::serve`] applies it.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, in all
    /// (default 60 s): later, 408 and the connection is closed.
    pub body_timeout: Duration,
    /// The most connections open at once (default 1,024): one more is
    /// answered `503` and closed. Only [`crate::serve`] applies it.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_nesting: folio_core::validate::MAX_NESTING,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// The server's shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    databases: Databases,
    keys: Option<Keys>,
    limits: Limits,
    /// `db/collection` or `collection` (every database): updates and deletes
    /// there need `If-Match`.
    require_precondition: HashSet<String>,
    /// Host names served besides the loopback ones when there are no keys
    /// (lowercase, without a trailing dot).
    allowed_hosts: Vec<String>,
    metrics: Metrics,
    /// Set when the server begins shutting down.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// State over `databases`; `keys: None` serves without authentication.
    pub fn new(
        databases: Databases,
        keys: Option<Keys>,
        limits: Limits,
        require_precondition: impl IntoIterator<Item = String>,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                databases,
                keys: keys.filter(|keys| !keys.is_empty()),
                limits,
                require_precondition: require_precondition.into_iter().collect(),
                allowed_hosts: Vec::new(),
                metrics: Metrics::default(),
                shutdown: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Also serves requests for these host names (`Host`, without a port)
    /// when no keys are configured; see [`crate::edge`]. With keys, every
    /// host name is served anyway.
    ///
    /// # Panics
    ///
    /// When the state was cloned already: configure it before it is shared.
    #[must_use]
    pub fn with_allowed_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        let inner = Arc::get_mut(&mut self.inner)
            .expect("allowed hosts are configured before the state is shared");
        inner.allowed_hosts = hosts
            .into_iter()
            .map(|host| crate::edge::normalize_name(&host).to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether API keys are configured.
    pub fn has_keys(&self) -> bool {
        self.inner.keys.is_some()
    }

    /// Whether `name` (a host name without a port) was allowed with
    /// [`AppState::with_allowed_hosts`].
    pub(crate) fn allows_host(&self, name: &str) -> bool {
        let name = crate::edge::normalize_name(name);
        self.inner
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }

    /// The databases.
    pub fn databases(&self) -> &Databases {
        &self.inner.databases
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Tells long-lived responses (event streams) to end: the server is
    /// shutting down.
    pub fn shut_down(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::shut_down`] was called.
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut receiver = self.inner.shutdown.subscribe();
        async move {
            let _ = receiver.wait_for(|stopping| *stopping).await;
        }
    }

    /// Checks the request's key for `needed` in `database` (no keys: allowed).
    pub fn authorize(&self, headers: &HeaderMap, database: &str, needed: Role) -> ApiResult<()> {
        match &self.inner.keys {
            Some(keys) => keys.require(headers, database, needed),
            None => Ok(()),
        }
    }

    /// Checks that the request carries a known key (when keys are
    /// configured): for requests about no database in particular.
    pub fn authenticate(&self, headers: &HeaderMap) -> ApiResult<()> {
        match &self.inner.keys {
            Some(keys) => keys.authenticate(headers),
            None => Ok(()),
        }
    }

    /// Whether `database` may be listed to this request.
    pub fn may_read(&self, headers: &HeaderMap, database: &str) -> ApiResult<bool> {
        match &self.inner.keys {
            Some(keys) => Ok(keys.role(headers, database)?.is_some()),
            None => Ok(true),
        }
    }

    /// Whether changes in `database`/`collection` require `If-Match`.
    pub fn requires_precondition(&self, database: &str, collection: &str) -> bool {
        let required = &self.inner.require_precondition;
        required.contains(collection) || required.contains(&format!("{database}/{collection}"))
    }
}
