//! `Engine::query_page`: the page and its total come from one snapshot.
//!
//! Each engine runs a test's hook before it counts a query's matches
//! (`before_count`, feature `fault-injection`). The hook pauses the count
//! while the test commits a new matching document; the total must still
//! count what the page was taken from. Without one snapshot the count
//! sees the new document: a page of every match would report one more
//! than it holds. Deterministic: the write happens exactly there.
//!
//! The embedded engine in memory is not here: its readers hold a lock that
//! keeps the writer out until the read ends (no write can land between the
//! two statements, so the hook would wait for a write that waits for it).
//! It runs the same code as on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use folio::{Batch, Command, EngineRef, Expectation, Query, SqliteEngine, SqliteOptions};
use folio_postgres::testing::TestCluster;
use folio_postgres::{PgEngine, PgOptions};
use folio_remote::{RemoteEngine, RemoteOptions};

use crate::harness::unique_database_name;

/// The hook's side: when armed, the next count tells the test it is
/// paused, then waits until the test resumes it.
struct Pause {
    armed: AtomicBool,
    paused: tokio::sync::mpsc::UnboundedSender<()>,
    resume: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// The test's side of a [`Pause`].
struct Control {
    pause: Arc<Pause>,
    paused: tokio::sync::mpsc::UnboundedReceiver<()>,
    resume: std::sync::mpsc::Sender<()>,
}

fn pause() -> Control {
    let (paused_sender, paused) = tokio::sync::mpsc::unbounded_channel();
    let (resume, resume_receiver) = std::sync::mpsc::channel();
    Control {
        pause: Arc::new(Pause {
            armed: AtomicBool::new(false),
            paused: paused_sender,
            resume: Mutex::new(resume_receiver),
        }),
        paused,
        resume,
    }
}

impl Control {
    /// The hook the engine runs before each count.
    fn hook(&self) -> Arc<dyn Fn() + Send + Sync> {
        let pause = self.pause.clone();
        Arc::new(move || {
            if pause.armed.swap(false, Ordering::SeqCst) {
                pause.paused.send(()).expect("the test waits");
                let resume = pause.resume.lock().expect("one count at a time");
                resume.recv().expect("the test resumes the count");
            }
        })
    }
}

fn note(id: &str) -> Command {
    Command::put("notes", id, r#"{"kind":"note"}"#, Expectation::Missing)
}

/// Three notes; a page of every note whose count is paused while a fourth
/// is committed; then the page must hold as many notes as its total says.
async fn page_and_total_share_one_snapshot(engine: EngineRef, control: &mut Control) {
    let verdict = engine
        .commit(Batch::from(vec![note("n1"), note("n2"), note("n3")]))
        .await
        .expect("the engine answers");
    assert!(verdict.is_ok(), "{verdict:?}");
    let query = Query::new("notes")
        .filter("kind", folio::Op::Eq, "note")
        .expect("a valid filter");

    control.pause.armed.store(true, Ordering::SeqCst);
    let reading = tokio::spawn({
        let engine = engine.clone();
        let query = query.clone();
        async move { engine.query_page(&query).await }
    });
    control
        .paused
        .recv()
        .await
        .expect("the count pauses before it runs");
    let verdict = engine
        .commit(Batch::from(vec![note("n4")]))
        .await
        .expect("the engine answers");
    assert!(verdict.is_ok(), "{verdict:?}");
    control.resume.send(()).expect("the count waits");
    let page = reading
        .await
        .expect("the read finishes")
        .expect("the page is read");
    assert_eq!(
        page.total,
        page.entries.len() as u64,
        "the total counts the page's snapshot"
    );
    assert_eq!(page.total, 3);

    let after = engine.query_page(&query).await.expect("the page is read");
    assert_eq!((after.entries.len(), after.total), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk() {
    let mut control = pause();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = SqliteEngine::open(
        dir.path().join("snapshot.sqlite"),
        SqliteOptions {
            before_count: Some(folio_sqlite::BeforeCount(control.hook())),
            ..SqliteOptions::default()
        },
    )
    .expect("the engine opens");
    page_and_total_share_one_snapshot(Arc::new(engine), &mut control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let mut control = pause();
    let engine = PgEngine::connect(
        TestCluster::shared().url(),
        &unique_database_name(),
        PgOptions {
            before_count: Some(folio_postgres::BeforeCount(control.hook())),
            ..PgOptions::default()
        },
    )
    .await
    .expect("the engine connects");
    page_and_total_share_one_snapshot(Arc::new(engine), &mut control).await;
}

/// The remote engine's page is the server's one request: the server's
/// embedded engine pauses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote() {
    use folio_server::{AppState, Backend, Databases, Limits};

    let mut control = pause();
    let data = tempfile::tempdir().expect("a temporary directory");
    let databases = Databases::new(Backend::Embedded {
        dir: data.path().to_path_buf(),
        options: SqliteOptions {
            before_count: Some(folio_sqlite::BeforeCount(control.hook())),
            ..SqliteOptions::default()
        },
    });
    databases.create("snapshot").await.expect("a database");
    let router = folio_server::router(AppState::new(
        databases,
        None,
        Limits::default(),
        Vec::<String>::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("the bound address");
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the test server serves");
    });
    let engine = RemoteEngine::connect(
        &format!("http://{address}/db/snapshot"),
        RemoteOptions::default(),
    )
    .await
    .expect("the remote engine connects");
    page_and_total_share_one_snapshot(Arc::new(engine), &mut control).await;
    server.abort();
}
