//! The remote engine against a real Folio server in process: what the
//! conformance suite (`crates/folio/tests/it`, `remote::`) does not reach —
//! results larger than the server's pages, API keys, missing databases.

use folio_core::{Batch, Command, Engine, Error, Expectation, Op, Query};
use folio_remote::{RemoteEngine, RemoteOptions};
use folio_server::auth::Keys;
use folio_server::{AppState, Backend, Databases, Limits};

/// Each request's method and path, with the Folio-After it sent.
type Afters = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A server on a loopback port with database `shop`, optionally with keys.
struct Server {
    base: String,
    _data: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    afters: Afters,
}

impl Server {
    async fn start(keys: Option<Keys>) -> Self {
        let data = tempfile::tempdir().unwrap();
        let databases = Databases::new(Backend::Embedded {
            dir: data.path().to_path_buf(),
            options: Default::default(),
        });
        databases.create("shop").await.unwrap();
        let afters = Afters::default();
        let router = folio_server::router(AppState::new(
            databases,
            keys,
            Limits::default(),
            Vec::<String>::new(),
        ))
        .layer(axum::middleware::from_fn({
            let afters = afters.clone();
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let afters = afters.clone();
                async move {
                    let after = request
                        .headers()
                        .get("folio-after")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let line = format!("{} {}", request.method(), request.uri().path());
                    afters.lock().unwrap().push((line, after));
                    next.run(request).await
                }
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Server {
            base,
            _data: data,
            task,
            afters,
        }
    }

    async fn connect(
        &self,
        database: &str,
        api_key: Option<&str>,
    ) -> folio_core::Result<RemoteEngine> {
        let options = RemoteOptions {
            api_key: api_key.map(str::to_owned),
            ..RemoteOptions::default()
        };
        RemoteEngine::connect(&format!("{}/db/{database}", self.base), options).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn item_id(n: usize) -> String {
    format!("item{n:05}")
}

/// `items` 0..count, with `n` and `even` fields, in one batch.
async fn seed(engine: &RemoteEngine, count: usize) {
    let commands = (0..count)
        .map(|n| {
            Command::put(
                "items",
                item_id(n),
                format!(r#"{{"n":{n},"even":{}}}"#, n % 2 == 0),
                Expectation::Missing,
            )
        })
        .collect::<Vec<_>>();
    let results = engine.commit(Batch::from(commands)).await.unwrap().unwrap();
    assert_eq!(results.len(), count);
}

fn ids(entries: &[folio_core::Entry]) -> Vec<String> {
    entries.iter().map(|e| e.metadata.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_larger_than_a_page_are_read_in_pages() {
    const COUNT: usize = 2_500;
    let server = Server::start(None).await;
    let engine = server.connect("shop", None).await.unwrap();
    seed(&engine, COUNT).await;
    let all_ids: Vec<String> = (0..COUNT).map(item_id).collect();

    // Scans follow `next` past the server's page of 1000.
    let first = engine.scan("items", None, 2_100).await.unwrap();
    assert_eq!(ids(&first), all_ids[..2_100]);
    let rest = engine
        .scan("items", Some(&all_ids[2_099]), 10_000)
        .await
        .unwrap();
    assert_eq!(ids(&rest), all_ids[2_100..]);
    assert!(engine.scan("items", None, 0).await.unwrap().is_empty());
    let exact = engine
        .scan("items", Some(&all_ids[999]), 1_000)
        .await
        .unwrap();
    assert_eq!(ids(&exact), all_ids[1_000..2_000]);
    let document: serde_json::Value = serde_json::from_str(&first[7].document).unwrap();
    assert_eq!(document["n"], 7);

    // A query without take returns every match, in pages of 1000.
    let everything = engine.query(&Query::new("items")).await.unwrap();
    assert_eq!(ids(&everything), all_ids);
    let page = engine
        .query_page(&Query::new("items").skip(10).take(1_500))
        .await
        .unwrap();
    assert_eq!(page.total, COUNT as u64);
    assert_eq!(ids(&page.entries), all_ids[10..1_510]);
    let descending = Query::new("items")
        .filter("even", Op::Eq, true)
        .unwrap()
        .order_by("n", true)
        .unwrap();
    let evens = engine.query(&descending).await.unwrap();
    assert_eq!(evens.len(), COUNT / 2);
    assert_eq!(evens[0].metadata.id, item_id(COUNT - 2));
    assert_eq!(evens[COUNT / 2 - 1].metadata.id, item_id(0));
    assert_eq!(engine.count(&descending).await.unwrap(), (COUNT / 2) as u64);
    assert_eq!(
        engine
            .count(&descending.clone().skip(5).take(1))
            .await
            .unwrap(),
        (COUNT / 2) as u64,
        "count ignores paging"
    );
    let past_the_end = engine
        .query_page(&Query::new("items").skip(COUNT as u64))
        .await
        .unwrap();
    assert!(past_the_end.entries.is_empty());
    assert_eq!(past_the_end.total, COUNT as u64);

    // Reads of many ids go in requests of 1000, in order, None for missing.
    let mut wanted: Vec<String> = (0..COUNT).rev().step_by(2).map(item_id).collect();
    wanted.insert(700, "missing".into());
    wanted.push("also-missing".into());
    let got = engine.get("items", &wanted).await.unwrap();
    assert_eq!(got.len(), wanted.len());
    for (id, entry) in wanted.iter().zip(&got) {
        match entry {
            Some(entry) => assert_eq!(&entry.metadata.id, id),
            None => assert!(id.contains("missing"), "{id} exists"),
        }
    }
    let metadata = engine.metadata("items", &wanted).await.unwrap();
    assert_eq!(
        metadata,
        got.iter()
            .map(|entry| entry.as_ref().map(|e| e.metadata.clone()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_a_missing_database() {
    let server = Server::start(None).await;
    match server.connect("nothing-here", None).await {
        Err(Error::NotFound(message)) => {
            assert!(message.contains("PUT /db/nothing-here"), "{message}");
        }
        other => panic!("expected not found, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_sent_and_refusals_are_unauthorized() {
    let keys = Keys::parse(
        r#"{ "keys": [
            { "key": "reader-key-0123456789", "roles": { "shop": "read" } },
            { "key": "writer-key-0123456789", "roles": { "shop": "write" } }
        ] }"#,
    )
    .unwrap();
    let server = Server::start(Some(keys)).await;
    let put = || {
        Batch::from(vec![Command::put(
            "people",
            "p1",
            r#"{"name":"Ada"}"#,
            Expectation::Any,
        )])
    };

    for key in [None, Some("unknown-key-0123456789")] {
        match server.connect("shop", key).await {
            Err(Error::Unauthorized(message)) => assert!(!message.is_empty()),
            other => panic!("{key:?}: expected unauthorized, got {other:?}"),
        }
    }

    let reader = server
        .connect("shop", Some("reader-key-0123456789"))
        .await
        .unwrap();
    assert!(matches!(
        reader.commit(put()).await,
        Err(Error::Unauthorized(_))
    ));
    assert_eq!(reader.get("people", &["p1".into()]).await.unwrap(), [None]);

    let writer = server
        .connect("shop", Some("writer-key-0123456789"))
        .await
        .unwrap();
    writer.commit(put()).await.unwrap().unwrap();
    let entry = reader.get("people", &["p1".into()]).await.unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(entry.document, r#"{"name":"Ada"}"#);
    assert!(format!("{writer:?}").contains("/db/shop"));
    assert!(!format!("{writer:?}").contains("writer-key"));
}

/// A wait longer than one long poll may last (half the request timeout)
/// goes on polling: a write that comes after the first poll ended is
/// still returned, and a quiet feed is answered with an empty page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_one_poll_keeps_polling() {
    let server = Server::start(None).await;
    let options = RemoteOptions {
        timeout: std::time::Duration::from_millis(400),
        ..RemoteOptions::default()
    };
    let remote = RemoteEngine::connect(&format!("{}/db/shop", server.base), options)
        .await
        .unwrap();
    let writer = server.connect("shop", None).await.unwrap();

    // Each poll lasts at most 200 ms; the write comes after a few of them.
    let write = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let batch = Batch::from(vec![Command::put(
            "items",
            "late",
            "{}",
            Expectation::Missing,
        )]);
        writer.commit(batch).await.unwrap().unwrap();
    });
    let page = remote
        .changes_wait(0, Some("items"), 10, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    write.await.unwrap();
    let ids: Vec<&str> = page.changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["late"]);
    let etag = remote
        .wait_for_changes(0, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(etag, page.last_etag, "a change after 0 is there at once");

    let quiet = remote
        .changes_wait(
            page.last_etag,
            None,
            10,
            std::time::Duration::from_millis(500),
        )
        .await
        .unwrap();
    assert!(quiet.changes.is_empty(), "{quiet:?}");
    assert_eq!(quiet.last_etag, page.last_etag);
}

/// A loopback proxy to `upstream` that, once armed, cuts the connection
/// that carries a batch (`POST …/batch`) when the server's answer comes:
/// the server committed it, the client never hears so.
struct AnswerCutter {
    base: String,
    /// Cut the next batch's answer.
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Cut every batch's answer.
    always: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AnswerCutter {
    async fn start(upstream: &str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let armed = Arc::new(AtomicBool::new(false));
        let always = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (armed, always, cut) = (armed.clone(), always.clone(), cut.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let batch_sent = Arc::new(AtomicBool::new(false));
                    let seen = batch_sent.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0; 64 << 10];
                        while let Ok(read) = client_read.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            let bytes = &buffer[..read];
                            if bytes.windows(6).any(|window| window == b"/batch") {
                                seen.store(true, Ordering::SeqCst);
                            }
                            if server_write.write_all(bytes).await.is_err() {
                                break;
                            }
                        }
                    });
                    let (armed, always, cut) = (armed.clone(), always.clone(), cut.clone());
                    tokio::spawn(async move {
                        let mut buffer = vec![0; 64 << 10];
                        while let Ok(read) = server_read.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            if batch_sent.load(Ordering::SeqCst)
                                && (always.load(Ordering::SeqCst)
                                    || armed.swap(false, Ordering::SeqCst))
                            {
                                // The answer is dropped, and the connection with it.
                                cut.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            if client_write.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        AnswerCutter {
            base,
            armed,
            always,
            cut,
            task,
        }
    }
}

impl Drop for AnswerCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A commit whose answer is lost after the server committed it is sent
/// again with its id, and answered with the recorded results: written once,
/// and the caller learns it (no error, no conflict with its own write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_sent_again_and_answered() {
    use std::sync::atomic::Ordering;

    let server = Server::start(None).await;
    let cutter = AnswerCutter::start(&server.base).await;
    let engine = RemoteEngine::connect(
        &format!("{}/db/shop", cutter.base),
        RemoteOptions::default(),
    )
    .await
    .unwrap();
    cutter.armed.store(true, Ordering::SeqCst);
    let batch = Batch::from(vec![Command::put(
        "orders",
        "o1",
        r#"{"total":3}"#,
        Expectation::Missing,
    )]);
    let committed = engine
        .commit(batch)
        .await
        .expect("answered after the cut")
        .expect("not a conflict with its own write");
    assert_eq!(
        cutter.cut.load(Ordering::SeqCst),
        1,
        "the first answer was cut"
    );
    assert!(
        committed.replayed,
        "the second sending was answered from the record"
    );
    let direct = server.connect("shop", None).await.unwrap();
    let stored = direct.metadata("orders", &["o1".into()]).await.unwrap();
    let folio_core::CommandResult::Put(told) = &committed[0] else {
        panic!("{committed:?}")
    };
    assert_eq!(stored[0].as_ref(), Some(told), "written once, as told");
    assert_eq!(told.revision, 1);
}

/// When no answer comes for longer than the engine sends a batch again,
/// the commit is in doubt, and says with which id to learn the outcome;
/// sent again with it once answers come, it is answered from the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_stays_unanswered_is_in_doubt_until_sent_again() {
    use std::sync::atomic::Ordering;

    let server = Server::start(None).await;
    let cutter = AnswerCutter::start(&server.base).await;
    let engine = RemoteEngine::connect(
        &format!("{}/db/shop", cutter.base),
        RemoteOptions {
            resend_for: std::time::Duration::from_millis(400),
            ..RemoteOptions::default()
        },
    )
    .await
    .unwrap();
    cutter.always.store(true, Ordering::SeqCst);
    let id = folio_core::BatchId::new();
    let batch = Batch::from(vec![Command::put(
        "orders",
        "o1",
        "{}",
        Expectation::Missing,
    )])
    .with_id(id.clone());
    match engine.commit(batch.clone()).await {
        Err(Error::InDoubt(in_doubt)) => {
            assert_eq!(in_doubt.batch_id, Some(id.clone()));
            assert!(in_doubt.to_string().contains(id.as_str()), "{in_doubt}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        cutter.cut.load(Ordering::SeqCst) >= 2,
        "sent again before giving up"
    );
    cutter.always.store(false, Ordering::SeqCst);
    let committed = engine
        .commit(batch)
        .await
        .expect("answered")
        .expect("the recorded results");
    assert!(committed.replayed);
}

/// The Folio-After the last request sent.
fn last_after(server: &Server) -> Option<String> {
    server
        .afters
        .lock()
        .unwrap()
        .last()
        .expect("a request")
        .1
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_send_the_position_of_the_engines_last_commit() {
    use folio_core::{Position, Reads};
    let server = Server::start(None).await;
    let engine = std::sync::Arc::new(server.connect("shop", None).await.unwrap());
    let ids = ["p1".to_owned()];
    engine.get("people", &ids).await.unwrap();
    assert_eq!(last_after(&server), None, "no commit yet: no position");
    let committed = engine
        .commit(Batch::from(vec![Command::put(
            "people",
            "p1",
            r#"{"name":"Ann"}"#,
            Expectation::Missing,
        )]))
        .await
        .unwrap()
        .unwrap();
    let position = committed.position.expect("the server's Folio-Position");
    assert!(position.as_str().starts_with("etag:"), "{position}");
    // Its own reads see its writes: they send the commit's position.
    assert!(engine.get("people", &ids).await.unwrap()[0].is_some());
    assert_eq!(last_after(&server).as_deref(), Some(position.as_str()));
    engine.query(&Query::new("people")).await.unwrap();
    assert_eq!(last_after(&server).as_deref(), Some(position.as_str()));
    // A handle on any node sends none; one after a position sends it.
    let any = engine.clone().reads(Reads::Any).unwrap();
    any.get("people", &ids).await.unwrap();
    assert_eq!(last_after(&server), None);
    let given = Position::new("etag:1").unwrap();
    let after = engine.clone().reads(Reads::After(given.clone())).unwrap();
    after.get("people", &ids).await.unwrap();
    assert_eq!(last_after(&server).as_deref(), Some(given.as_str()));
}
