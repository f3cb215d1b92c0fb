//! The changes feed on PostgreSQL, and its **horizon**.
//!
//! Etags come from a sequence, so they are taken before commit and can
//! commit out of order: a transaction holding etag 10 may commit after one
//! holding 11. A reader that saw 11 and resumed after it would skip 10
//! forever. So the feed only publishes up to a horizon `H` below which no
//! transaction is still in flight, found with a barrier:
//!
//! 1. read `L`, the last value the sequence handed out;
//! 2. take `LOCK TABLE changes IN SHARE MODE` and release it at once.
//!
//! Every statement that takes an etag also inserts into `changes` (see the
//! `schema` module), and PostgreSQL locks every table a statement names
//! (ROW EXCLUSIVE here) before executing it, so before its `nextval`. A
//! transaction that took an etag `<= L` took it before step 1, so it holds
//! that lock until it ends; SHARE conflicts with ROW EXCLUSIVE, so step 2
//! returns only once all of them committed or rolled back. Then `H = L`.
//! Writers that arrive during step 2 wait behind it for that moment; the
//! barrier runs at most once per [`MIN_INTERVAL`], only in processes where
//! someone reads the feed.
//!
//! **Across a failover** (a cluster with a synchronous standby in strict
//! mode, docs/ha.md) the feed keeps its promises because of what the
//! primary shows, not because of anything here:
//!
//! * It never publishes a change a failover can lose. A commit becomes
//!   visible to other transactions only after the standby confirmed it
//!   (PostgreSQL waits for the standby before it takes the transaction out
//!   of the running set), so the barrier's reads and the readers' see only
//!   replicated changes. The exception is a commit whose wait is cancelled
//!   (PostgreSQL: "committed locally, but might not have been
//!   replicated"): Folio sends no cancel requests and sets no statement
//!   timeout on its commits (a URL that sets `statement_timeout` would),
//!   and a closed connection does not end the wait.
//! * It never skips a change that survived. A horizon is published only
//!   after a barrier on the same server returned; a change the reader has
//!   not been shown has an etag above the horizon, or is still in flight,
//!   and after a failover the new primary's barrier covers it.
//! * No etag names two changes. The sequence's advances are in the WAL
//!   before any commit that used them, and a standby replays the sequence
//!   a step ahead of what was handed out: the new primary continues above
//!   every etag of a change the old one showed.
//!
//! `crates/folio/tests/it/ha.rs` reads the feed through failovers and
//! compares what it was shown with the surviving feed.
//!
//! Waking readers without polling: each process sends one `NOTIFY` on the
//! database's channel after its commits (coalesced to one per
//! [`MIN_INTERVAL`]); the keeper task of every process that reads the feed
//! `LISTEN`s on a connection of its own, runs the barrier when notified
//! (or when this process committed), and publishes the new horizon to the
//! in-process [`ChangeHorizon`], which wakes the waiting readers.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use folio_core::{ChangeHorizon, Result};
use futures_util::StreamExt;
use tokio::sync::{Notify, OnceCell, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::error::{pool as pool_error, storage};

/// The shortest time between two barriers, and between two notifications
/// sent by one process.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(25);

/// How long a barrier waits for the lock before giving up (a long
/// transaction must not hold up the writers queued behind the barrier),
/// and how long the keeper then waits before the next attempt.
const LOCK_TIMEOUT: &str = "100ms";
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The feed of one database, in one process.
pub(crate) struct Feed {
    pub(crate) horizon: ChangeHorizon,
    schema: String,
    config: tokio_postgres::Config,
    pool: Pool,
    /// This process committed a write: notify the other processes.
    committed: Notify,
    /// This process committed a write: move the horizon.
    refresh: Notify,
    keeper: OnceCell<()>,
    closed: watch::Sender<bool>,
}

impl Feed {
    /// The feed of the database in `schema`; starts the notifier task.
    pub(crate) fn start(schema: &str, config: tokio_postgres::Config, pool: Pool) -> Arc<Self> {
        let feed = Arc::new(Feed {
            horizon: ChangeHorizon::new(0),
            schema: schema.to_owned(),
            config,
            pool,
            committed: Notify::new(),
            refresh: Notify::new(),
            keeper: OnceCell::new(),
            closed: watch::Sender::new(false),
        });
        tokio::spawn(notify_others(feed.clone()));
        feed
    }

    /// Called after every commit that took etags.
    pub(crate) fn committed(&self) {
        self.committed.notify_one();
        self.refresh.notify_one();
    }

    /// Stops the tasks (the engine is closing).
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Makes sure the horizon is kept: the first call runs a barrier and
    /// starts the keeper task. (If that barrier cannot finish now, because
    /// a transaction is in flight for long, the horizon stays where it is
    /// and the keeper tries again.)
    pub(crate) async fn ensure_kept(self: &Arc<Self>) -> Result<()> {
        self.keeper
            .get_or_try_init(|| async {
                let client = self.pool.get().await.map_err(pool_error)?;
                if let Ok(horizon) = barrier(&client, &self.schema).await {
                    self.horizon.publish(horizon);
                }
                tokio::spawn(keep(self.clone()));
                Ok::<_, folio_core::Error>(())
            })
            .await
            .map(drop)
    }

    /// The channel of this database (its quoted schema name).
    fn channel(&self) -> &str {
        &self.schema
    }
}

/// The horizon now: see the module documentation.
pub(crate) async fn barrier(client: &Client, schema: &str) -> Result<u64> {
    let last: i64 = client
        .query_one(
            &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {schema}.etags"),
            &[],
        )
        .await
        .map_err(|e| storage("reading the last etag", e))?
        .get(0);
    let locked = client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
             LOCK TABLE {schema}.changes IN SHARE MODE; COMMIT"
        ))
        .await;
    if let Err(error) = locked {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(storage("waiting for the writes in flight", error));
    }
    Ok(u64::try_from(last).unwrap_or(0))
}

/// Sends one `NOTIFY` after this process's commits, at most one per
/// [`MIN_INTERVAL`].
async fn notify_others(feed: Arc<Feed>) {
    let mut closed = feed.closed.subscribe();
    let sql = format!("NOTIFY {}", feed.channel());
    loop {
        tokio::select! {
            () = feed.committed.notified() => {}
            _ = closed.changed() => return,
        }
        // A lost notification only delays other processes' readers until
        // the next one; nothing to retry.
        if let Ok(client) = feed.pool.get().await {
            let _ = client.batch_execute(&sql).await;
        }
        tokio::select! {
            () = tokio::time::sleep(MIN_INTERVAL) => {}
            _ = closed.changed() => return,
        }
    }
}

/// Keeps the horizon: listens for other processes' notifications, runs the
/// barrier when anything committed, publishes. Reconnects when its
/// connection fails.
async fn keep(feed: Arc<Feed>) {
    let mut closed = feed.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let _ = listen_and_refresh(&feed, &mut closed).await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = closed.changed() => return,
        }
    }
}

/// One connection's life of [`keep`]; returns when the connection fails or
/// the engine closes.
async fn listen_and_refresh(feed: &Feed, closed: &mut watch::Receiver<bool>) -> Result<()> {
    let (client, mut connection) = feed
        .config
        .connect(NoTls)
        .await
        .map_err(|e| storage("connecting the changes feed's listener", e))?;
    let notified = Arc::new(Notify::new());
    let driver = {
        let notified = notified.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(_) = message {
                    notified.notify_one();
                }
            }
            // The connection ended: wake the loop so it notices.
            notified.notify_one();
        })
    };
    let outcome = async {
        client
            .batch_execute(&format!("LISTEN {}", feed.channel()))
            .await
            .map_err(|e| storage("listening for changes", e))?;
        loop {
            // Anything committed before LISTEN took effect is covered here.
            let pause = match barrier(&client, &feed.schema).await {
                Ok(horizon) => {
                    feed.horizon.publish(horizon);
                    MIN_INTERVAL
                }
                Err(error) if client.is_closed() => return Err(error),
                // The lock timed out: a transaction is in flight for long.
                Err(_) => {
                    feed.refresh.notify_one();
                    RETRY_AFTER
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = closed.changed() => return Ok(()),
            }
            tokio::select! {
                () = notified.notified() => {}
                () = feed.refresh.notified() => {}
                _ = closed.changed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    outcome
}
