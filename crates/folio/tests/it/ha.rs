//! PostgreSQL on a cluster that survives a machine
//! (`folio_postgres::testing::HaCluster`: etcd, two nodes under Patroni,
//! strict synchronous replication). The torture harness's clients write
//! through the multi-host URL while the leader's machine is lost (`kill
//! -9` of its Patroni and postmaster) and the other node takes over; then:
//!
//! * no acknowledged write is lost, no batch is half applied, none twice,
//!   and no change vector names two versions (the torture's checks);
//! * no save is left in doubt: a save cut by the failover is sent again
//!   with its id once the new primary answers, and gets its real outcome;
//! * writes resume after each failover, when plain SQL's do;
//! * reads that need no newer position are served throughout: from the
//!   standby while no primary answers, from the other node while one
//!   restarts;
//! * the changes feed, read throughout, never published a change that the
//!   failover lost, never skipped one that survived, and never named two
//!   changes with one etag.
//!
//! `FOLIO_FAILOVERS` sets how many (2 by default: the leader's machine
//! lost twice; rounds of five add a planned switchover, an etcd outage and
//! a frozen Patroni; `scripts/torture-ha.sh` runs more).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use folio::DocumentStore;
use folio_cli::tools::torture::{Config, Stop, Torture};
use folio_postgres::testing::HaCluster;

fn failovers() -> usize {
    std::env::var("FOLIO_FAILOVERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(2)
}

/// The longest time between two successes of `succeeded` (polled every
/// 20 ms) since the last reset: how long writes were held up.
#[derive(Default)]
struct Gap {
    last: Option<Instant>,
    longest: Duration,
}

impl Gap {
    fn note(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.longest = self.longest.max(now - last);
        }
        self.last = Some(now);
    }

    fn take(&mut self) -> Duration {
        std::mem::take(&mut self.longest)
    }
}

/// Plain SQL beside Folio, through the same URL: an insert every 20 ms on
/// a connection made again whenever it fails. Its longest gap is what the
/// cluster itself held writes up for.
async fn probe_writes(url: String, gap: std::sync::Arc<std::sync::Mutex<Gap>>, stop: Stop) {
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.is_stopped() {
        if client.is_none()
            && let Ok((connected, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            if connected
                .batch_execute("CREATE TABLE IF NOT EXISTS probe (at timestamptz)")
                .await
                .is_ok()
            {
                client = Some(connected);
            }
        }
        if let Some(connected) = &client {
            match connected
                .execute("INSERT INTO probe VALUES (now())", &[])
                .await
            {
                Ok(_) => gap.lock().unwrap().note(Instant::now()),
                Err(_) => client = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the changes feed until `stop`, as a reader that resumes where it
/// stopped would, through failures: every change it was shown, in order.
async fn read_feed(engine: folio::EngineRef, stop: Stop) -> Vec<folio::Change> {
    let mut seen = Vec::new();
    let mut since = 0;
    while !stop.is_stopped() {
        match engine
            .changes_wait(since, None, 1000, Duration::from_millis(200))
            .await
        {
            Ok(page) => {
                since = since.max(page.last_etag);
                seen.extend(page.changes);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    seen
}

/// What a reader of any node saw: how many reads failed, and the longest
/// time between two answers since the last reset.
#[derive(Default)]
struct Reader {
    reads: u64,
    failed: u64,
    gap: Gap,
}

/// Counts the documents of the torture's accounts through `engine`'s
/// handle on any node, every 10 ms, until `stop`.
async fn read_any(engine: folio::EngineRef, reader: Arc<Mutex<Reader>>, stop: Stop) {
    let any = engine
        .reads(folio::Reads::Any)
        .expect("a handle on any node");
    let query = folio::Query::new("accounts");
    while !stop.is_stopped() {
        let answered = any.count(&query).await;
        {
            let mut reader = reader.lock().unwrap();
            reader.reads += 1;
            match answered {
                Ok(_) => reader.gap.note(Instant::now()),
                Err(error) => {
                    reader.failed += 1;
                    eprintln!("a read of any node failed: {error}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the clients acknowledged `more` writes since `since`.
async fn progress(torture: &Torture, since: u64, more: u64, what: &str) -> Duration {
    let started = Instant::now();
    while torture.totals().acknowledged_writes < since + more {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress {what}: {:?}",
            torture.totals()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The torture's clients (4, `seed`) writing to Folio database `database`
/// on `cluster` through its multi-host URL, running until the returned
/// `Stop`; with the engine they write through.
async fn torture_on(
    cluster: &HaCluster,
    database: &str,
    seed: u64,
) -> (folio::EngineRef, Torture, Stop, tokio::task::JoinHandle<()>) {
    // Two nodes in strict mode: the new leader takes writes once the old
    // node is back in sync (TTL, then its rejoin: about 26 s here), so the
    // engine sends a cut save again for longer than its default 30 s.
    let engine: folio::EngineRef = Arc::new(
        folio::PgEngine::connect(
            cluster.url(),
            database,
            folio::PgOptions {
                resend_for: Duration::from_secs(90),
                ..folio::PgOptions::default()
            },
        )
        .await
        .expect("connects through the multi-host URL"),
    );
    let store = DocumentStore::from_engine(engine.clone());
    let config = Config {
        clients: 4,
        seed,
        ..Config::default()
    };
    let torture = Torture::setup(vec![("postgres".to_owned(), store)], config)
        .await
        .expect("setup");
    let stop = Stop::new();
    let load = tokio::spawn({
        let torture = torture.clone();
        let stop = stop.clone();
        async move { torture.run(stop).await }
    });
    (engine, torture, stop, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_lose_nothing_and_leave_no_save_in_doubt() {
    let cluster = tokio::task::spawn_blocking(HaCluster::start)
        .await
        .expect("the start runs")
        .expect("the cluster starts");
    let (engine, torture, stop, load) = torture_on(&cluster, "ha", 18).await;
    let cluster = std::sync::Arc::new(cluster);
    let folio_gap = std::sync::Arc::new(std::sync::Mutex::new(Gap::default()));
    let sql_gap = std::sync::Arc::new(std::sync::Mutex::new(Gap::default()));
    let sampler = tokio::spawn({
        let (torture, gap, stop) = (torture.clone(), folio_gap.clone(), stop.clone());
        async move {
            let mut seen = 0;
            while !stop.is_stopped() {
                let now = torture.totals().acknowledged_writes;
                if now > seen {
                    seen = now;
                    gap.lock().unwrap().note(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let probe = tokio::spawn(probe_writes(
        cluster.url().to_owned(),
        sql_gap.clone(),
        stop.clone(),
    ));
    let feed = tokio::spawn(read_feed(engine.clone(), stop.clone()));
    let reader = Arc::new(Mutex::new(Reader::default()));
    let reads = tokio::spawn(read_any(engine.clone(), reader.clone(), stop.clone()));
    let mut report = Vec::new();
    for round in 0..failovers() {
        let before = torture.totals().acknowledged_writes;
        progress(&torture, before, 50, "before the failover").await;
        // Rounds of five: the leader's machine lost twice, a planned
        // switchover, etcd lost for 15 s (the leader demotes itself), the
        // leader's Patroni frozen for 30 s (its primary runs on, unfenced;
        // the other node takes over only if it provably has everything).
        let fault = ["kill -9", "kill -9", "switchover", "etcd outage", "freeze"][round % 5];
        let failover = tokio::task::spawn_blocking({
            let cluster = cluster.clone();
            move || match fault {
                "switchover" => cluster.switchover(),
                "etcd outage" => cluster.etcd_outage(15),
                "freeze" => cluster.freeze(30),
                _ => cluster.failover(),
            }
        })
        .await
        .expect("the failover runs")
        .unwrap_or_else(|error| panic!("failover {round}: {error}"));
        let after = torture.totals().acknowledged_writes;
        progress(&torture, after, 20, "after the failover").await;
        report.push(format!(
            "{fault} {} -> {}{}: Folio's writes held up {:.1} s, plain SQL's {:.1} s, reads \
             {:.2} s",
            failover.old,
            failover.new,
            failover
                .seconds
                .map(|seconds| format!(" (leading after {seconds:.1} s)"))
                .unwrap_or_default(),
            folio_gap.lock().unwrap().take().as_secs_f64(),
            sql_gap.lock().unwrap().take().as_secs_f64(),
            reader.lock().unwrap().gap.take().as_secs_f64(),
        ));
    }
    stop.stop();
    load.await.expect("the clients finish");
    sampler.await.expect("the sampler ends");
    probe.await.expect("the probe ends");
    let shown = feed.await.expect("the feed reader ends");
    reads.await.expect("the reader ends");
    let (read, failed_reads) = {
        let reader = reader.lock().unwrap();
        (reader.reads, reader.failed)
    };

    // The feed as the surviving database holds it, read after the load.
    let mut surviving = Vec::new();
    let mut since = 0;
    loop {
        let page = engine
            .changes(since, None, 1000)
            .await
            .expect("the feed is read");
        let done = page.changes.is_empty();
        surviving.extend(page.changes);
        if done || page.last_etag <= since {
            break;
        }
        since = page.last_etag;
    }
    let last_shown = shown.last().map_or(0, |change| change.etag);
    assert!(
        shown.windows(2).all(|pair| pair[0].etag < pair[1].etag),
        "the reader was shown each etag once, in order"
    );
    let survived_until: Vec<&folio::Change> = surviving
        .iter()
        .filter(|change| change.etag <= last_shown)
        .collect();
    assert_eq!(
        shown.iter().collect::<Vec<_>>(),
        survived_until,
        "the reader was shown exactly the surviving changes up to its last: none lost, none \
         skipped, none renamed"
    );
    let result = torture.finish().await.expect("the final state is readable");
    eprintln!(
        "{} failovers ({}); the feed showed {} changes, all surviving; {} operations, {} \
         acknowledged writes, {} saves in doubt, {} errors, {} violations; {read} reads of any \
         node, {failed_reads} failed",
        report.len(),
        report.join("; "),
        shown.len(),
        result.totals.operations,
        result.totals.acknowledged_writes,
        result.totals.in_doubt,
        result.totals.errors,
        result.violations
    );
    assert_eq!(result.violations, 0, "{result:#?}");
    assert_eq!(
        result.totals.in_doubt, 0,
        "every save cut by a failover was sent again and answered: {result:#?}"
    );
    assert_eq!(
        failed_reads, 0,
        "reads that need no newer position are served throughout the failovers"
    );
}

/// The node of `cluster` that is a standby now (its place in the URL).
async fn standby(cluster: &HaCluster) -> (usize, tokio_postgres::Client) {
    for index in 0..2 {
        let url = cluster.node_url(index).expect("two nodes");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the node answers");
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .expect("asked");
        if row.get::<_, bool>(0) {
            return (index, client);
        }
    }
    panic!("no standby: {:?}", cluster.status());
}

/// Reads from standbys: a handle on any node reads from both (the standby
/// too, behind as it may be); a read after a position never shows less
/// than that write, even from a standby whose replay is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_serve_reads_and_reads_after_a_position_see_it() {
    let cluster = tokio::task::spawn_blocking(HaCluster::start)
        .await
        .expect("the start runs")
        .expect("the cluster starts");
    let engine: folio::EngineRef = Arc::new(
        folio::PgEngine::connect(cluster.url(), "standbys", folio::PgOptions::default())
            .await
            .expect("connects through the multi-host URL"),
    );
    let put = |revision: &str, expect| {
        folio::Batch::from(vec![folio::Command::put(
            "notes",
            "n1",
            format!(r#"{{"text":"{revision}"}}"#),
            expect,
        )])
    };
    let first = engine
        .commit(put("one", folio::Expectation::Missing))
        .await
        .expect("committed")
        .expect("no conflict");
    let after_first = engine
        .clone()
        .reads(folio::Reads::After(
            first.position.clone().expect("a position"),
        ))
        .expect("accepted");
    let ids = ["n1".to_owned()];
    // Until the standby replayed the first write, reads after it may go to
    // the primary; once it has, both nodes show it.
    let (_, standby) = standby(&cluster).await;
    let started = Instant::now();
    loop {
        let row = standby
            .query_one(
                "SELECT count(*) FROM folio_standbys.documents WHERE id = 'n1'",
                &[],
            )
            .await;
        if row.is_ok_and(|row| row.get::<_, i64>(0) == 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the standby replays"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(after_first.get("notes", &ids).await.expect("read")[0].is_some());

    // The standby stops replaying: it still confirms the log it receives
    // (commits go on), but shows nothing newer.
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("replay pause requested");
    // Recovery pauses at the next record it would replay: write until it
    // has.
    let started = Instant::now();
    for filler in 0.. {
        let state = standby
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .expect("asked")
            .get::<_, String>(0);
        if state == "paused" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replay pauses: {state}"
        );
        engine
            .commit(folio::Batch::from(vec![folio::Command::put(
                "fillers",
                format!("f{filler}"),
                "{}",
                folio::Expectation::Any,
            )]))
            .await
            .expect("committed")
            .expect("no conflict");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = engine
        .commit(put(
            "two",
            folio::Expectation::version(match &first.results[0] {
                folio::CommandResult::Put(metadata) => metadata.change_vector.clone(),
                other => panic!("a put: {other:?}"),
            }),
        ))
        .await
        .expect("committed while the standby does not replay")
        .expect("no conflict");
    let position = second.position.clone().expect("a position");
    let revision = |entries: Vec<Option<folio::Entry>>| {
        entries[0].as_ref().expect("n1 exists").metadata.revision
    };
    // Any node: both answer in turn, the standby with the older version.
    let any = engine.clone().reads(folio::Reads::Any).expect("a handle");
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20 {
        *seen
            .entry(revision(any.get("notes", &ids).await.expect("read")))
            .or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "reads of any node went to the standby (revision 1) and the primary (revision 2): {seen:?}"
    );
    // After the second write's position: never the older version.
    let after = engine
        .clone()
        .reads(folio::Reads::After(position.clone()))
        .expect("accepted");
    for _ in 0..20 {
        assert_eq!(revision(after.get("notes", &ids).await.expect("read")), 2);
        let query = folio::Query::new("notes");
        let page = after.query_page(&query).await.expect("queried");
        assert_eq!(page.entries[0].metadata.revision, 2);
    }
    // The engine's own handle reads the primary.
    assert_eq!(revision(engine.get("notes", &ids).await.expect("read")), 2);
    // Replay resumes: the standby shows the second write, and reads after
    // its position are served by both nodes again.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("replay resumed");
    let started = Instant::now();
    loop {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.insert(revision(any.get("notes", &ids).await.expect("read")));
        }
        if seen == std::collections::BTreeSet::from([2]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the standby catches up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The control: on a cluster with asynchronous replication, a failover
/// after the leader acknowledged writes its standby never received loses
/// them, and the torture's checker says so. (What the failover test
/// checks would fail here: its passing means something.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_loses_writes_and_the_checker_catches_it() {
    let cluster = tokio::task::spawn_blocking(HaCluster::start_asynchronous)
        .await
        .expect("the start runs")
        .expect("the cluster starts");
    let (_, torture, stop, load) = torture_on(&cluster, "control", 19).await;
    let cluster = Arc::new(cluster);
    progress(&torture, 0, 50, "before the failover").await;
    // The leader's WAL sender stopped for 3 s: what it acknowledged
    // meanwhile never reaches the standby, which then leads.
    let failover = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.failover_unreplicated(3)
    })
    .await
    .expect("the failover runs")
    .expect("the failover succeeds");
    let after = torture.totals().acknowledged_writes;
    progress(&torture, after, 20, "after the failover").await;
    stop.stop();
    load.await.expect("the clients finish");
    let result = torture.finish().await.expect("the final state is readable");
    eprintln!(
        "control: {} -> {} with 3 s unreplicated; {} acknowledged writes, {} violations",
        failover.old, failover.new, result.totals.acknowledged_writes, result.violations
    );
    assert!(
        result.violations > 0,
        "acknowledged writes were lost, and the checker must say so: {result:#?}"
    );
}

/// `scripts/ha-cluster` makes Patroni's virtual environment where
/// `FOLIO_HA_VENV` says, clearing what was there: it never clears a
/// directory that holds something else, and an empty variable counts as
/// unset (not as the working directory).
#[test]
fn the_cluster_script_clears_only_its_own_virtual_environment() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ha-cluster");
    let kept = tempfile::tempdir().expect("a directory");
    std::fs::write(kept.path().join("precious"), "data").expect("written");
    let cluster = tempfile::tempdir().expect("a directory");
    let output = std::process::Command::new("python3")
        .arg(script)
        .args(["start", "--dir"])
        .arg(cluster.path())
        .env("FOLIO_HA_VENV", kept.path())
        .output()
        .expect("the script runs");
    assert!(!output.status.success(), "refused: {output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not a virtual environment"),
        "{output:?}"
    );
    assert_eq!(
        std::fs::read_to_string(kept.path().join("precious")).expect("still there"),
        "data"
    );
}
