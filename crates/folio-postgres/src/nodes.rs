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
//! * **`After(position)`**: in turn, the primary (the engine's pool) or a
//!   standby, when it has replayed that far (else the primary again). How
//!   far each standby replayed (`pg_last_wal_replay_lsn()`) is asked
//!   every [`ASK_EVERY`] by a task of the engine's, while such reads come;
//!   replay is monotonic, so a read on a standby whose last answer was at
//!   or beyond the position shows the write. (A standby that restarts may show less than it
//!   last said: its connections fail first, and what it said is
//!   forgotten.) While no primary answers either, the read waits for a
//!   standby to catch up, for at most [`crate::PgOptions::standby_wait`].
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

use crate::error::pool as pool_error;
use crate::passing;

/// How long a node that failed is passed over.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(1);

/// How often the standbys are asked how far they replayed, while reads
/// after a position come.
pub(crate) const ASK_EVERY: Duration = Duration::from_millis(10);

/// How long after the last read after a position the standbys are still
/// asked.
const ASK_FOR: Duration = Duration::from_secs(5);

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
    /// When a read after a position last came (milliseconds since
    /// `started`): the standbys are asked how far they replayed until
    /// [`ASK_FOR`] after it.
    wanted: AtomicU64,
    started: Instant,
    /// Wakes the asking task when reads after a position come again.
    wake: std::sync::Arc<tokio::sync::Notify>,
}

struct Node {
    /// `host:port`, for messages.
    name: String,
    pool: Pool,
    /// The log position this node last said it replayed, as a standby (0:
    /// not known, or not a standby). Reset when the node fails.
    replayed: AtomicU64,
    /// Passed over until then, after a failure.
    down_until: Mutex<Option<Instant>>,
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
            wanted: AtomicU64::new(0),
            started: Instant::now(),
            wake: std::sync::Arc::default(),
        }))
    }

    /// Asks each node how far it replayed, every [`ASK_EVERY`] while reads
    /// after a position come, until the engine is dropped.
    pub(crate) async fn ask(inner: std::sync::Weak<crate::Inner>) {
        loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let Some(nodes) = &strong.nodes else {
                return;
            };
            let idle = nodes.started.elapsed().as_millis()
                > u128::from(nodes.wanted.load(Ordering::Relaxed)) + ASK_FOR.as_millis();
            if idle {
                // Wait for the next read after a position (or look again
                // now and then, to notice the engine is gone).
                // (`notify_one` keeps a permit: a read that comes before
                // this waits is not missed.)
                let wake = nodes.wake.clone();
                drop(strong);
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                continue;
            }
            futures_util::future::join_all(nodes.nodes.iter().map(Node::ask)).await;
            drop(strong);
            tokio::time::sleep(ASK_EVERY).await;
        }
    }

    /// The node in turn when it is a standby that said it replayed at
    /// least `after`; `None`: the primary's turn (reads go round the
    /// primary and the standbys that are far enough).
    fn standby_at(&self, after: u64) -> Option<&Node> {
        let node = &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()];
        (node.replayed.load(Ordering::Relaxed) >= after && !node.is_down()).then_some(node)
    }

    /// Runs `run` after the log position `after`: on a standby that has
    /// replayed that far, else on the primary (`primary`, the engine's
    /// pool); waits for one while neither answers.
    pub(crate) async fn read_after<T>(
        &self,
        after: u64,
        primary: &Pool,
        run: Run<'_, T>,
    ) -> Result<T> {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if self.wanted.swap(millis, Ordering::Relaxed) + ASK_FOR.as_millis() as u64 <= millis {
            self.wake.notify_one();
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let failure = match self.standby_at(after) {
                Some(node) => match node.pool.get().await {
                    Ok(client) => match run(client).await {
                        Err(error) if passing(&error) => node.failed(error),
                        done => return done,
                    },
                    Err(error) => node.failed(pool_error(error)),
                },
                None => match primary.get().await {
                    Ok(client) => match run(client).await {
                        Err(error) if passing(&error) => error,
                        done => return done,
                    },
                    Err(error) => pool_error(error),
                },
            };
            if Instant::now() >= deadline {
                return Err(Error::Engine(
                    EngineError::new(
                        EngineErrorKind::Timeout,
                        format!(
                            "no PostgreSQL node showed the session's last write within {} ms \
                             (no primary answering, the standbys behind)",
                            self.wait.as_millis()
                        ),
                    )
                    .with_source(failure),
                ));
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
    }

    /// Runs `run` on the next node that answers; see the module
    /// documentation.
    pub(crate) async fn read_any<T>(&self, run: Run<'_, T>) -> Result<T> {
        let deadline = Instant::now() + self.wait;
        loop {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            // Nodes passed over for an earlier failure are tried last.
            let (up, down): (Vec<&Node>, Vec<&Node>) = (0..self.nodes.len())
                .map(|offset| &self.nodes[(start + offset) % self.nodes.len()])
                .partition(|node| !node.is_down());
            let mut last_failure = None;
            for node in up.into_iter().chain(down) {
                let client = match node.pool.get().await {
                    Ok(client) => client,
                    Err(error) => {
                        last_failure = Some(node.failed(pool_error(error)));
                        continue;
                    }
                };
                match run(client).await {
                    Err(error) if passing(&error) => last_failure = Some(node.failed(error)),
                    done => return done,
                }
            }
            // No node answered: try again, bounded.
            if Instant::now() >= deadline {
                return Err(last_failure.expect("every node failed"));
            }
            tokio::time::sleep(ASK_EVERY * 5).await;
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

    /// Asks the node how far it replayed, as a standby; forgets what it
    /// said before when it does not answer, or is no standby.
    async fn ask(&self) {
        let replayed = async {
            let client = self.pool.get().await.ok()?;
            let row = client
                .query_one(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN \
                     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint ELSE 0 END",
                    &[],
                )
                .await
                .ok()?;
            u64::try_from(row.get::<_, Option<i64>>(0).unwrap_or(0)).ok()
        };
        let replayed = tokio::time::timeout(ASK_EVERY * 10, replayed)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        self.replayed.store(replayed, Ordering::Relaxed);
    }
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
