//! Reads across the nodes of a cluster: from standbys, and through a
//! failover.
//!
//! A URL with several hosts (`postgres://u@h1:5432,h2:5432/db?
//! target_session_attrs=read-write`) names a primary and its standbys.
//! Writes, the changes feed, and reads through an engine's own handle go
//! through the engine's pool, which libpq's `target_session_attrs` points
//! at the primary. A handle made with [`folio_core::Reads::Any`] or
//! [`folio_core::Reads::After`] reads from every node in turn, each through
//! a pool of its own ([`Nodes`]):
//!
//! * **`Any`**: the next node that answers. A node that fails (its
//!   connection lost or refused) is passed over for [`DOWN_FOR`], and the
//!   read goes to the next one, so reads go on while no primary answers.
//!   A standby shows only what it replayed, and it replays only what the
//!   primary wrote to its log: a version that was never committed is never
//!   shown. (In strict synchronous mode a commit is visible on the primary
//!   only once the synchronous standby has it, so a version shown by either
//!   survives a failover.)
//! * **`After(position)`**: a node that shows every write up to the
//!   position. Before the read, on the same connection, the node is asked
//!   whether it is in recovery and how far it replayed
//!   (`pg_last_wal_replay_lsn()`); replay is monotonic, so the read's
//!   snapshot, taken after that answer, shows at least as much. A primary
//!   shows every acknowledged write (in strict synchronous mode a new
//!   primary had every commit the old one acknowledged). A standby that is
//!   behind is passed over for a node that shows the position; when none
//!   does, the read waits, asking again, for at most
//!   [`crate::PgOptions::standby_wait`]. How far each standby replayed is
//!   remembered, so a read after an older position asks nothing.
//!
//! A position is the primary's log position read right after the commit,
//! in its flight (`commit::LOG_POSITION`): at or beyond the commit record.
//! Across a failover, log positions go on from where the new primary's
//! history left the old one's, which is at or beyond every acknowledged
//! commit; a position a little beyond that (it may count log the old
//! primary wrote and never replicated) is answered by the primary, which
//! shows every acknowledged write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use folio_core::{EngineError, EngineErrorKind, Error, Result};
use tokio_postgres::NoTls;
use tokio_postgres::config::{Config, Host, TargetSessionAttrs};

use crate::error::{pool as pool_error, storage};

/// How long a node that failed is passed over.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(1);

/// How often a read after a position asks again while no node shows it.
const ASK_EVERY: Duration = Duration::from_millis(5);

/// A read to run on a node's connection (it may run on several nodes, one
/// after the other, when one fails).
pub(crate) type Run<'a, T> =
    Box<dyn Fn(Object) -> Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>> + Send + Sync + 'a>;

/// The nodes a multi-host URL names, each with a pool of its own.
pub(crate) struct Nodes {
    nodes: Vec<Node>,
    /// The node the next read starts at (reads go round).
    next: AtomicUsize,
    wait: Duration,
}

struct Node {
    /// `host:port`, for messages.
    name: String,
    pool: Pool,
    /// The highest log position this node was seen to have replayed, as a
    /// standby (0: not known). Reset when the node fails.
    replayed: AtomicU64,
    /// Passed over until then, after a failure.
    down_until: Mutex<Option<Instant>>,
}

/// What a node said of a position.
enum Shows {
    Yes,
    /// A standby that replayed less.
    Behind,
}

impl Nodes {
    /// The nodes of `config` when it names more than one host, each
    /// reached on its own (any role), with pools of `size` connections;
    /// `None` for one host (every read goes to the engine's pool).
    pub(crate) fn of(config: &Config, size: usize, wait: Duration) -> Result<Option<Nodes>> {
        let hosts = config.get_hosts();
        if hosts.len() < 2 || !config.get_hostaddrs().is_empty() {
            return Ok(None);
        }
        let ports = config.get_ports();
        let mut nodes = Vec::with_capacity(hosts.len());
        for (index, host) in hosts.iter().enumerate() {
            let port = match ports {
                [] => 5432,
                [port] => *port,
                ports => ports.get(index).copied().unwrap_or(5432),
            };
            let node = single_host(config, host, port);
            let name = match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            };
            let manager = Manager::from_config(
                node,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|error| {
                    Error::InvalidInput(format!("PostgreSQL pool settings: {error}"))
                })?;
            nodes.push(Node {
                name,
                pool,
                replayed: AtomicU64::new(0),
                down_until: Mutex::new(None),
            });
        }
        Ok(Some(Nodes {
            nodes,
            next: AtomicUsize::new(0),
            wait,
        }))
    }

    /// Runs `run` on the next node that answers and, with `after`, shows
    /// every write up to that log position; see the module documentation.
    pub(crate) async fn read<T>(&self, after: Option<u64>, run: Run<'_, T>) -> Result<T> {
        let deadline = Instant::now() + self.wait;
        let mut last_failure: Option<Error> = None;
        loop {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut behind = false;
            // Nodes passed over for an earlier failure are tried last.
            let (up, down): (Vec<&Node>, Vec<&Node>) = (0..self.nodes.len())
                .map(|offset| &self.nodes[(start + offset) % self.nodes.len()])
                .partition(|node| !node.is_down());
            for node in up.into_iter().chain(down) {
                let client = match node.pool.get().await {
                    Ok(client) => client,
                    Err(error) => {
                        last_failure = Some(node.failed(pool_error(error)));
                        continue;
                    }
                };
                if let Some(after) = after {
                    match node.shows(&client, after).await {
                        Ok(Shows::Yes) => {}
                        Ok(Shows::Behind) => {
                            behind = true;
                            continue;
                        }
                        Err(error) => {
                            last_failure = Some(node.failed(error));
                            continue;
                        }
                    }
                }
                match run(client).await {
                    Err(error) if passing(&error) => last_failure = Some(node.failed(error)),
                    done => return done,
                }
            }
            // No node answered, or (after a position) none shows it yet:
            // wait for one, bounded.
            if Instant::now() >= deadline {
                return Err(match last_failure {
                    Some(failure) if !behind => failure,
                    _ => Error::Engine(EngineError::new(
                        EngineErrorKind::Timeout,
                        format!(
                            "no PostgreSQL node showed the session's last write within {} ms \
                             (standbys behind, no primary answering)",
                            self.wait.as_millis()
                        ),
                    )),
                });
            }
            tokio::time::sleep(if behind { ASK_EVERY } else { ASK_EVERY * 10 }).await;
        }
    }
}

impl Node {
    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        down_until.is_some_and(|until| Instant::now() < until)
    }

    /// Notes a failure of this node (it is passed over for a while) and
    /// returns it, naming the node.
    fn failed(&self, error: Error) -> Error {
        self.replayed.store(0, Ordering::Relaxed);
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + DOWN_FOR);
        tracing::debug!(node = %self.name, %error, "a read failed on a PostgreSQL node; the next node is asked");
        error
    }

    /// Whether this node shows every write up to the log position `after`.
    async fn shows(&self, client: &Object, after: u64) -> Result<Shows> {
        if self.replayed.load(Ordering::Relaxed) >= after {
            return Ok(Shows::Yes);
        }
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), \
                 (COALESCE(pg_last_wal_replay_lsn(), '0/0') - '0/0'::pg_lsn)::bigint",
                &[],
            )
            .await
            .map_err(|e| storage("asking a node how far it replayed", e))?;
        let (recovering, replayed): (bool, i64) = (row.get(0), row.get(1));
        if !recovering {
            return Ok(Shows::Yes);
        }
        let replayed = u64::try_from(replayed).unwrap_or(0);
        self.replayed.fetch_max(replayed, Ordering::Relaxed);
        Ok(if replayed >= after {
            Shows::Yes
        } else {
            Shows::Behind
        })
    }
}

/// Whether a read's failure is the node's (its connection lost or
/// refused, a timeout): then another node is asked.
fn passing(error: &Error) -> bool {
    matches!(error, Error::Engine(engine)
        if matches!(engine.kind(), EngineErrorKind::Network | EngineErrorKind::Timeout))
}

/// `config` with only `host` and `port`, reaching that node whatever its
/// role.
fn single_host(config: &Config, host: &Host, port: u16) -> Config {
    let mut node = Config::new();
    match host {
        Host::Tcp(name) => node.host(name),
        #[cfg(unix)]
        Host::Unix(path) => node.host_path(path),
    };
    node.port(port)
        .target_session_attrs(TargetSessionAttrs::Any)
        .ssl_mode(config.get_ssl_mode())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle());
    if let Some(user) = config.get_user() {
        node.user(user);
    }
    if let Some(password) = config.get_password() {
        node.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        node.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        node.options(options);
    }
    if let Some(name) = config.get_application_name() {
        node.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        node.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        node.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        node.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        node.keepalives_retries(retries);
    }
    node
}
