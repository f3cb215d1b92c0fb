//! PostgreSQL only: several engines, each with its own connection pool, and
//! several OS processes on one database — the deployment the PostgreSQL
//! engine exists for (many application servers, one database). The checks
//! hold only because the version check is in the same SQL statement as the
//! write; nothing in one process can serialize another.
//!
//! Every test gets its own database (`Harness::new(Postgres)`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use folio::{Batch, CommandResult, ConcurrencyError, DocumentStore, Engine, Error, Expectation};
use folio_postgres::{PgEngine, PgOptions};

use crate::concurrency::{MAX_ATTEMPTS, XorShift, account};
use crate::harness::{Account, Counter, EngineKind, Harness, seed};

/// Two stores of the test's database, each on its own engine (own pool).
async fn two_stores(h: &Harness) -> [DocumentStore; 2] {
    let second = DocumentStore::builder()
        .engine(h.fresh_engine().await)
        .open()
        .await
        .expect("the second store opens");
    [h.store().await, second]
}

/// Adds one to counter `id` with `retry_on_conflict`; returns the value
/// written and how many attempts it took. (Owned arguments and captures:
/// with borrowed ones, rustc cannot yet prove the future `Send` for
/// `tokio::spawn`.)
async fn increment(store: DocumentStore, id: String) -> (u64, usize) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let value = store
        .retry_on_conflict(MAX_ATTEMPTS, {
            let attempts = attempts.clone();
            let id = id.clone();
            async move |session| {
                attempts.fetch_add(1, Ordering::Relaxed);
                let mut counter = session
                    .load::<Counter>(&id)
                    .await?
                    .expect("the counter is seeded");
                counter.value += 1;
                let value = counter.value;
                session.store(counter)?;
                Ok(value)
            }
        })
        .await
        .unwrap_or_else(|error| panic!("an increment of {id} failed: {error:?}"));
    (value, attempts.load(Ordering::Relaxed))
}

async fn counter(store: &DocumentStore, id: &str) -> (u64, u64) {
    let mut session = store.open_session();
    let value = session.load::<Counter>(id).await.unwrap().unwrap().value;
    let revision = session
        .metadata_for::<Counter>(id)
        .await
        .unwrap()
        .unwrap()
        .revision;
    (value, revision)
}

// ---- two pools, one database -------------------------------------------------------

/// Two engines (separate pools) increment the same few counters at once,
/// each increment a read-modify-write retried on conflict: every counter
/// ends at the number of increments applied to it, and each applied
/// increment wrote a value nobody else wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_increment_the_same_counters_without_losing_an_update() {
    const COUNTERS: usize = 3;
    const TASKS: usize = 16;
    const INCREMENTS: usize = 20;
    let h = Harness::new(EngineKind::Postgres).await;
    let stores = two_stores(&h).await;
    let ids: Vec<String> = (0..COUNTERS).map(|c| format!("counters/{c}")).collect();
    seed(
        &stores[0],
        ids.iter()
            .map(|id| Counter {
                id: id.clone(),
                value: 0,
            })
            .collect(),
    )
    .await;

    let attempts = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = stores[task % 2].clone();
            let ids = ids.clone();
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let mut rng = XorShift::new(0xC0FF_EE00 + task as u64);
                let mut written = vec![Vec::new(); COUNTERS];
                for _ in 0..INCREMENTS {
                    let c = usize::try_from(rng.below(COUNTERS as u64)).unwrap();
                    let (value, tries) = increment(store.clone(), ids[c].clone()).await;
                    attempts.fetch_add(tries as u64, Ordering::Relaxed);
                    written[c].push(value);
                }
                written
            })
        })
        .collect();

    let mut written = vec![Vec::new(); COUNTERS];
    for task in tasks {
        for (all, mine) in written.iter_mut().zip(task.await.unwrap()) {
            all.extend(mine);
        }
    }
    assert_eq!(
        written.iter().map(Vec::len).sum::<usize>(),
        TASKS * INCREMENTS
    );
    for (id, mut values) in ids.iter().zip(written) {
        let applied = u64::try_from(values.len()).unwrap();
        values.sort_unstable();
        assert_eq!(
            values,
            (1..=applied).collect::<Vec<_>>(),
            "{id}: each increment wrote a value of its own"
        );
        for store in &stores {
            let (value, revision) = counter(store, id).await;
            assert_eq!(value, applied, "{id}: no increment was lost");
            assert_eq!(revision, applied + 1, "{id}: one write per increment");
        }
    }
    eprintln!(
        "{} increments took {} attempts",
        TASKS * INCREMENTS,
        attempts.load(Ordering::Relaxed)
    );
}

/// Random atomic transfers between accounts, from 16 tasks split over two
/// engines: every balance ends at the sum of the transfers applied to it,
/// and the total never changes — neither at the end nor in any read made
/// during the run (one `load_many` is one statement: a consistent snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_across_two_engines_never_change_the_total() {
    const ACCOUNTS: usize = 6;
    const TASKS: usize = 16;
    const TRANSFERS: usize = 25;
    const OPENING: i64 = 1000;
    const TOTAL: i64 = OPENING * ACCOUNTS as i64;
    let h = Harness::new(EngineKind::Postgres).await;
    let stores = two_stores(&h).await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|a| format!("accounts/{a}")).collect();
    seed(
        &stores[0],
        ids.iter().map(|id| account(id, OPENING)).collect(),
    )
    .await;

    // The auditor: sums every balance, again and again, through both
    // engines, while the transfers run.
    let done = Arc::new(AtomicBool::new(false));
    let auditor = {
        let stores = stores.clone();
        let ids = ids.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut audits = 0u64;
            while !done.load(Ordering::Acquire) || audits < 2 {
                let store = &stores[usize::try_from(audits % 2).unwrap()];
                let balances = store
                    .query_session()
                    .load_many::<Account>(&keys)
                    .await
                    .expect("an audit reads");
                let total: i64 = balances
                    .iter()
                    .map(|account| account.as_ref().expect("every account exists").balance)
                    .sum();
                assert_eq!(
                    total, TOTAL,
                    "audit {audits}: one read saw money made or lost: {balances:?}"
                );
                audits += 1;
                // Often, but leaving the two cores to the transfers.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            audits
        })
    };

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = stores[task % 2].clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = XorShift::new(0xBA4C_0000 ^ (task as u64 + 1));
                let mut net = [0i64; ACCOUNTS];
                let mut touches = [0u64; ACCOUNTS];
                for _ in 0..TRANSFERS {
                    let from = usize::try_from(rng.below(ACCOUNTS as u64)).unwrap();
                    let offset = usize::try_from(rng.below(ACCOUNTS as u64 - 1)).unwrap();
                    let to = (from + 1 + offset) % ACCOUNTS;
                    let amount = i64::try_from(1 + rng.below(100)).unwrap();
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts <= MAX_ATTEMPTS, "no progress on a transfer");
                        // Account opts in: a default session checks both writes.
                        let mut session = store.open_session();
                        let loaded = session
                            .load_many::<Account>(&[&ids[from], &ids[to]])
                            .await
                            .unwrap();
                        let [Some(mut source), Some(mut target)] =
                            <[Option<Account>; 2]>::try_from(loaded).unwrap()
                        else {
                            panic!("both accounts exist");
                        };
                        source.balance -= amount;
                        target.balance += amount;
                        session.store(source).unwrap();
                        session.store(target).unwrap();
                        match session.save_changes().await {
                            Ok(()) => break,
                            Err(Error::Concurrency(_)) => {}
                            Err(other) => panic!("a transfer failed: {other:?}"),
                        }
                    }
                    net[from] -= amount;
                    net[to] += amount;
                    touches[from] += 1;
                    touches[to] += 1;
                }
                (net, touches)
            })
        })
        .collect();

    let mut net = [0i64; ACCOUNTS];
    let mut touches = [0u64; ACCOUNTS];
    for task in tasks {
        let (task_net, task_touches) = task.await.unwrap();
        for a in 0..ACCOUNTS {
            net[a] += task_net[a];
            touches[a] += task_touches[a];
        }
    }
    done.store(true, Ordering::Release);
    let audits = auditor.await.expect("every audit saw the same total");
    eprintln!("{audits} audits during {} transfers", TASKS * TRANSFERS);

    for store in &stores {
        let mut total = 0;
        let mut session = store.open_session();
        for (a, id) in ids.iter().enumerate() {
            let stored = session.load::<Account>(id).await.unwrap().unwrap();
            assert_eq!(
                stored.balance,
                OPENING + net[a],
                "{id}: the balance is the sum of the transfers applied"
            );
            let metadata = session.metadata_for::<Account>(id).await.unwrap().unwrap();
            assert_eq!(
                metadata.revision,
                1 + touches[a],
                "{id}: one write per committed transfer that touched it"
            );
            total += stored.balance;
        }
        assert_eq!(total, TOTAL, "no money made or lost");
    }
}

// ---- two OS processes --------------------------------------------------------------

/// What the parent tells [`child_worker`], through its environment.
const CHILD_URL: &str = "FOLIO_CHILD_URL";
const CHILD_DATABASE: &str = "FOLIO_CHILD_DATABASE";
const CHILD_COUNTER: &str = "FOLIO_CHILD_COUNTER";
const CHILD_INCREMENTS: &str = "FOLIO_CHILD_INCREMENTS";
/// How the child reports the values it wrote, on a line of its stderr.
const CHILD_REPORT: &str = "FOLIO_CHILD_WROTE";

/// Increments per task; each process runs two tasks.
const PROCESS_INCREMENTS: usize = 40;

/// This test binary runs itself again as a second OS process (the ignored
/// test [`child_worker`]); both processes increment one counter at once,
/// each through its own engine. The child must exit successfully, having
/// run that one test, and no increment of either process may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_increment_one_counter_without_losing_an_update() {
    const ID: &str = "counters/shared";
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().expect("a PostgreSQL harness").clone();
    let store = h.store().await;
    seed(
        &store,
        vec![Counter {
            id: ID.into(),
            value: 0,
        }],
    )
    .await;

    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            "postgres::child_worker",
            "--nocapture",
            "--ignored",
        ])
        .env(CHILD_URL, &postgres.url)
        .env(CHILD_DATABASE, &postgres.database)
        .env(CHILD_COUNTER, ID)
        .env(CHILD_INCREMENTS, PROCESS_INCREMENTS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child process starts");

    // Start once the child writes, so that both processes race.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if counter(&store, ID).await.0 > 0 || child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child wrote nothing in two minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for _ in 0..PROCESS_INCREMENTS {
                    written.push(increment(store.clone(), ID.to_owned()).await.0);
                }
                written
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }

    // The child, with a deadline (its pipes hold little: no deadlock).
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not finish in two minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("test postgres::child_worker ... ok") && stdout.contains("1 passed"),
        "the child ran the worker test:\n{stdout}\n{stderr}"
    );
    let report = stderr
        .lines()
        .find_map(|line| line.strip_prefix(CHILD_REPORT))
        .unwrap_or_else(|| panic!("the child reports its writes:\n{stderr}"));
    let from_child: Vec<u64> = report
        .split_whitespace()
        .map(|value| value.parse().expect("a number"))
        .collect();
    assert_eq!(from_child.len(), 2 * PROCESS_INCREMENTS, "{report}");
    let interleaved = written
        .iter()
        .filter(|&&value| value < from_child.iter().copied().max().unwrap_or(0))
        .count();
    eprintln!(
        "{interleaved} of the parent's {} increments landed before the child's last",
        written.len()
    );
    written.extend(from_child);

    let total = u64::try_from(4 * PROCESS_INCREMENTS).unwrap();
    written.sort_unstable();
    assert_eq!(
        written,
        (1..=total).collect::<Vec<_>>(),
        "each increment of either process wrote a value of its own"
    );
    assert_eq!(counter(&store, ID).await, (total, total + 1));
}

/// The second process of
/// [`two_processes_increment_one_counter_without_losing_an_update`]: runs
/// only when that test starts it (its environment names the database), and
/// then increments the counter from two tasks through its own engine and
/// prints the values it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of two_processes_increment_one_counter_without_losing_an_update"]
async fn child_worker() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let variable = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let database = variable(CHILD_DATABASE);
    let id = variable(CHILD_COUNTER);
    let increments: usize = variable(CHILD_INCREMENTS).parse().unwrap();
    let engine = PgEngine::connect(&url, &database, PgOptions::default())
        .await
        .expect("the child's engine connects");
    let store = DocumentStore::builder()
        .engine(Arc::new(engine))
        .open()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for _ in 0..increments {
                    written.push(increment(store.clone(), id.clone()).await.0);
                }
                written
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    let values: Vec<String> = written.iter().map(u64::to_string).collect();
    eprintln!("{CHILD_REPORT} {}", values.join(" "));
}

// ---- group commit -----------------------------------------------------------------

/// What `Engine::commit` returns.
type CommitResult = folio::Result<Result<folio::Committed, ConcurrencyError>>;

/// A batch of one put of `id` in collection `notes`.
fn put_note(id: &str, json: &str, expect: Expectation) -> Batch {
    Batch::from(vec![folio::Command::put("notes", id, json, expect)])
}

/// An engine on the test's database that runs one group at a time, and an
/// outside connection holding a row lock on document `gate` (in
/// collection `notes`), with a write of `gate` waiting behind it: the
/// engine's only group slot is taken, so every batch committed next queues
/// until [`Gate::open`], and then they all go in one group.
struct Gate {
    engine: Arc<PgEngine>,
    outside: tokio_postgres::Client,
    waiting: tokio::task::JoinHandle<CommitResult>,
}

impl Gate {
    async fn close(h: &Harness) -> Gate {
        let postgres = h.postgres().expect("a PostgreSQL harness");
        let options = PgOptions {
            commit_groups: 1,
            ..PgOptions::default()
        };
        let engine = Arc::new(
            PgEngine::connect(&postgres.url, &postgres.database, options)
                .await
                .unwrap(),
        );
        let put = |expect| put_note("gate", r#"{"text":"g"}"#, expect);
        engine
            .commit(put(Expectation::Missing))
            .await
            .unwrap()
            .unwrap();
        let outside = crate::harness::sql_client(&postgres.url).await;
        outside
            .batch_execute(&format!(
                "BEGIN; SELECT 1 FROM {}.documents WHERE collection = 'notes' AND id = 'gate' FOR UPDATE",
                postgres.quoted_schema()
            ))
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let engine = engine.clone();
            async move { engine.commit(put(Expectation::Any)).await }
        });
        // The gate's write is in the server, waiting for the row lock. (Seen
        // from a connection of its own: inside `outside`'s transaction,
        // pg_stat_activity would stay as it was at its first read.)
        let watcher = crate::harness::sql_client(&postgres.url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let blocked: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND strpos(query, $1) > 0",
                    &[&format!("{}.documents", postgres.quoted_schema())],
                )
                .await
                .unwrap()
                .get(0);
            if blocked > 0 {
                break;
            }
            if waiting.is_finished() {
                panic!("the gate's write did not wait: {:?}", waiting.await);
            }
            assert!(Instant::now() < deadline, "the gate's write never blocked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Gate {
            engine,
            outside,
            waiting,
        }
    }

    /// Commits `batches`, all queued before the gate opens, and returns
    /// their results in order.
    async fn commit_behind(self, batches: Vec<Batch>) -> Vec<CommitResult> {
        let engine = self.engine.clone();
        // `join_all` polls every commit once, in order, before the second
        // future opens the gate: all of them are queued by then.
        let (results, ()) = futures_util::future::join(
            futures_util::future::join_all(batches.into_iter().map(|batch| engine.commit(batch))),
            async {
                self.outside.batch_execute("COMMIT").await.unwrap();
            },
        )
        .await;
        self.waiting.await.unwrap().unwrap().unwrap();
        results
    }
}

/// The transaction ids that wrote documents `ids` (collection `notes`).
async fn writers(h: &Harness, ids: &[String]) -> Vec<String> {
    let postgres = h.postgres().unwrap();
    let client = crate::harness::sql_client(&postgres.url).await;
    let mut writers = Vec::new();
    for id in ids {
        let row = client
            .query_one(
                &format!(
                    "SELECT xmin::text FROM {}.documents WHERE collection = 'notes' AND id = $1",
                    postgres.quoted_schema()
                ),
                &[id],
            )
            .await
            .unwrap();
        writers.push(row.get(0));
    }
    writers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_document_batches_commit_as_one_group_and_each_keeps_its_check() {
    let h = Harness::new(EngineKind::Postgres).await;
    let seeded = h
        .fresh_engine()
        .await
        .commit(put_note("hot", r#"{"text":"v1"}"#, Expectation::Missing))
        .await
        .unwrap()
        .unwrap();
    let CommandResult::Put(v1) = &seeded[0] else {
        panic!("a put: {seeded:?}")
    };
    let since = v1.etag;
    let gate = Gate::close(&h).await;
    let engine = gate.engine.clone();

    // Ten writers of `hot`, all expecting v1, and ten new documents.
    const HOT: usize = 10;
    let mut batches: Vec<Batch> = (0..HOT)
        .map(|n| {
            put_note(
                "hot",
                &format!(r#"{{"text":"writer {n}"}}"#),
                Expectation::version(v1.change_vector.clone()),
            )
        })
        .collect();
    let fresh: Vec<String> = (0..10).map(|n| format!("fresh{n}")).collect();
    for id in &fresh {
        batches.push(put_note(id, r#"{"text":"new"}"#, Expectation::Missing));
    }
    let results = gate.commit_behind(batches).await;

    // The first to arrive wins, as one after the other; every other writer
    // of `hot` gets a conflict naming the winner's version.
    let winner = match &results[0] {
        Ok(Ok(results)) => match &results[..] {
            [CommandResult::Put(metadata)] => metadata.clone(),
            other => panic!("one put: {other:?}"),
        },
        other => panic!("the first writer of hot wins: {other:?}"),
    };
    for result in &results[1..HOT] {
        let conflict = match result {
            Ok(Err(error)) => &error.conflicts()[0],
            other => panic!("a conflict: {other:?}"),
        };
        assert_eq!(conflict.id(), "hot");
        assert_eq!(conflict.actual(), Some(&winner.change_vector));
    }
    for result in &results[HOT..] {
        assert!(matches!(result, Ok(Ok(_))), "{result:?}");
    }

    // They were one transaction: the winner and the ten new documents share
    // their writer.
    let mut written = fresh.clone();
    written.push("hot".to_owned());
    let mut ids = writers(&h, &written).await;
    ids.dedup();
    assert_eq!(ids.len(), 1, "one transaction wrote them all: {ids:?}");

    // The feed has each write once, in etag order: the gate's two (its
    // insert and the write that held the slot), the winner's, the ten new
    // documents'.
    let page = engine.changes(since, None, 100).await.unwrap();
    let mut fed: Vec<&str> = page
        .changes
        .iter()
        .map(|change| change.id.as_str())
        .collect();
    assert!(
        page.changes
            .windows(2)
            .all(|pair| pair[0].etag < pair[1].etag)
    );
    fed.sort_unstable();
    let mut expected: Vec<&str> = written.iter().map(String::as_str).collect();
    expected.extend(["gate", "gate"]);
    expected.sort_unstable();
    assert_eq!(fed, expected);
    let stored = engine.get("notes", &["hot".to_owned()]).await.unwrap();
    assert_eq!(
        stored[0].as_ref().unwrap().document,
        r#"{"text": "writer 0"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_in_a_group_fails_only_its_own_batch() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().unwrap();
    let client = crate::harness::sql_client(&postgres.url).await;
    client
        .batch_execute(&crate::faults::postgres_trigger(&postgres.quoted_schema()))
        .await
        .unwrap();
    let gate = Gate::close(&h).await;

    let ids: Vec<String> = ["a", "b", "boom", "c", "d"].map(String::from).to_vec();
    let batches = ids
        .iter()
        .map(|id| put_note(id, r#"{"text":"new"}"#, Expectation::Missing))
        .collect();
    let results = gate.commit_behind(batches).await;
    for (id, result) in ids.iter().zip(&results) {
        if id == "boom" {
            let Err(Error::Engine(error)) = result else {
                panic!("boom fails in the server: {result:?}")
            };
            crate::faults::assert_caused_by(error, "injected fault");
        } else {
            assert!(matches!(result, Ok(Ok(_))), "{id}: {result:?}");
        }
    }
    let engine = h.fresh_engine().await;
    let stored = engine.get("notes", &ids).await.unwrap();
    for (id, entry) in ids.iter().zip(stored) {
        assert_eq!(entry.is_some(), id != "boom", "{id}");
    }
}

/// A server that takes no writes (a standby, as while a failover runs) is
/// reported as such, a passing unavailability with what to do, not as a
/// storage failure with a hint about reachability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_is_named_as_such() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().expect("a PostgreSQL harness").clone();
    h.store().await;
    let separator = if postgres.url.contains('?') { '&' } else { '?' };
    let read_only = format!(
        "{}{separator}options=-c%20default_transaction_read_only%3Don",
        postgres.url
    );
    let refused =
        match PgEngine::connect(&read_only, &postgres.database, PgOptions::default()).await {
            Err(error) => error,
            Ok(engine) => engine
                .commit(put_note("n1", r#"{"text":"x"}"#, Expectation::Any))
                .await
                .expect_err("a read-only server takes no write"),
        };
    match refused {
        Error::Engine(engine) => {
            assert_eq!(engine.kind(), folio::EngineErrorKind::Network, "{engine}");
            let message = engine.to_string();
            assert!(
                message.contains("read-only PostgreSQL server")
                    && message.contains("target_session_attrs=read-write"),
                "{message}"
            );
        }
        other => panic!("refused, but as {other:?}"),
    }
}

/// Connecting with `target_session_attrs=read-write` to nodes that all
/// answer as standbys (here: read-only) says that no primary answered, as
/// during a failover, not that the server is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_primary_among_the_nodes_is_named_as_such() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().expect("a PostgreSQL harness").clone();
    let separator = if postgres.url.contains('?') { '&' } else { '?' };
    let standbys_only = format!(
        "{}{separator}options=-c%20default_transaction_read_only%3Don&target_session_attrs=read-write",
        postgres.url
    );
    let Err(refused) =
        PgEngine::connect(&standbys_only, &postgres.database, PgOptions::default()).await
    else {
        panic!("no node takes writes, yet the engine connected");
    };
    match refused {
        Error::Engine(engine) => {
            assert_eq!(engine.kind(), folio::EngineErrorKind::Network, "{engine}");
            let message = engine.to_string();
            assert!(
                message.contains("no node of the URL answered as a primary")
                    && !message.contains("reachable"),
                "{message}"
            );
        }
        other => panic!("refused, but as {other:?}"),
    }
}

/// A database whose layout a newer Folio wrote is refused as such
/// (`Unsupported`: a `500 unsupported-layout` over HTTP, listed by
/// `/healthz`), with what to do; not as bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_layout_is_refused_with_what_to_do() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().expect("a PostgreSQL harness").clone();
    h.store().await;
    crate::harness::sql_client(&postgres.url)
        .await
        .batch_execute(&format!(
            "INSERT INTO {}.folio_migrations (version) VALUES (99)",
            postgres.quoted_schema()
        ))
        .await
        .unwrap();
    let opened = PgEngine::connect(&postgres.url, &postgres.database, PgOptions::default()).await;
    match opened {
        Err(Error::Engine(engine)) => {
            assert_eq!(
                engine.kind(),
                folio::EngineErrorKind::Unsupported,
                "{engine}"
            );
            let message = engine.to_string();
            assert!(
                message.contains("layout 99") && message.contains("newer Folio"),
                "{message}"
            );
        }
        Err(other) => panic!("refused, but as {other:?}"),
        Ok(_) => panic!("a database of layout 99 was opened"),
    }
}

/// A batch with an id whose commit is held up past `commit_timeout` (here
/// behind a row lock; on a cluster, a primary cut off from its standby) is
/// sent again on a new connection, and applied once: the first attempt's
/// backend is left to finish (never cancelled), and the id keeps the two
/// from both committing. The lock is let go only once the second attempt
/// waits too, so without the timeout the batch would never be sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_up_past_its_timeout_is_sent_again_and_applied_once() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().expect("a PostgreSQL harness").clone();
    let application = format!("folio_held_{}", std::process::id());
    let separator = if postgres.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}application_name={application}", postgres.url);
    let engine = PgEngine::connect(
        &url,
        &postgres.database,
        PgOptions {
            commit_timeout: Duration::from_millis(300),
            ..PgOptions::default()
        },
    )
    .await
    .expect("connects");
    let first = engine
        .commit(put_note("n1", r#"{"text":"a"}"#, Expectation::Any))
        .await
        .expect("committed")
        .expect("no conflict");
    let CommandResult::Put(written) = &first[0] else {
        panic!("{first:?}")
    };
    let blocker = crate::harness::sql_client(&postgres.url).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {}.documents WHERE collection = 'notes' AND id = 'n1' FOR UPDATE",
            postgres.quoted_schema()
        ))
        .await
        .expect("the row is locked");
    let watcher = crate::harness::sql_client(&postgres.url).await;
    let release = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    &[&application],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if waiting >= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the held-up batch was not sent again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        blocker
            .batch_execute("COMMIT")
            .await
            .expect("the lock is let go");
    });
    let batch = Batch::from(vec![
        put_note(
            "n1",
            r#"{"text":"b"}"#,
            Expectation::version(written.change_vector.clone()),
        )
        .commands
        .remove(0),
    ])
    .with_id(folio::BatchId::new());
    let committed = engine
        .commit(batch)
        .await
        .expect("answered")
        .expect("not a conflict with its own write");
    release.await.expect("the second attempt waited");
    let CommandResult::Put(updated) = &committed[0] else {
        panic!("{committed:?}")
    };
    assert_eq!(updated.revision, 2);
    let stored = engine
        .metadata("notes", &["n1".to_owned()])
        .await
        .expect("read");
    assert_eq!(stored[0].as_ref(), Some(updated), "written once, as told");
    let changes = engine.changes(0, None, 10).await.expect("the feed");
    assert_eq!(changes.changes.len(), 2, "one write each: {changes:?}");
}

// ---- what a conflict carries --------------------------------------------------------

/// A conditional write that waits for a concurrent one (a row lock) is
/// refused by a version its statement's snapshot cannot show: the
/// conflict still carries that version, not the one the write expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_after_waiting_carries_the_version_that_refused_it() {
    let h = Harness::new(EngineKind::Postgres).await;
    let postgres = h.postgres().unwrap();
    let engine = Arc::new(
        PgEngine::connect(&postgres.url, &postgres.database, PgOptions::default())
            .await
            .unwrap(),
    );
    let first = engine
        .commit(put_note("n1", r#"{"text":"first"}"#, Expectation::Missing))
        .await
        .unwrap()
        .unwrap();
    let CommandResult::Put(first) = &first[0] else {
        panic!("a put")
    };
    let first = first.change_vector.clone();
    let schema = postgres.quoted_schema();
    let outside = crate::harness::sql_client(&postgres.url).await;
    outside
        .batch_execute(&format!(
            "BEGIN; UPDATE {schema}.documents SET data = '{{\"text\":\"outside\"}}', \
             etag = nextval('{schema}.etags'), revision = revision + 1 \
             WHERE collection = 'notes' AND id = 'n1'"
        ))
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .commit(put_note(
                    "n1",
                    r#"{"text":"mine"}"#,
                    Expectation::version(first),
                ))
                .await
        }
    });
    // The write waits for the row lock; then the outside commits.
    let watcher = crate::harness::sql_client(&postgres.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocked: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND strpos(query, $1) > 0",
                &[&format!("{schema}.documents")],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            break;
        }
        assert!(!waiting.is_finished(), "the write did not wait");
        assert!(Instant::now() < deadline, "the write never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outside.batch_execute("COMMIT").await.unwrap();
    let refused = waiting.await.unwrap().unwrap().expect_err("refused");
    let conflict = &refused.conflicts()[0];
    let current = conflict.current().expect("n1 exists");
    assert_eq!(current.document, r#"{"text": "outside"}"#);
    assert_eq!(current.revision, 2);
    assert_eq!(Some(&current.change_vector), conflict.actual());
}
