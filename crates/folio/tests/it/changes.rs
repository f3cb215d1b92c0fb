//! The changes feed (docs/protocol.md "Changes feed", `DocumentStore::changes`):
//! every committed write once, in etag order, resumable, waiting without
//! polling; on PostgreSQL, never past a transaction still in flight.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use folio::{Batch, ChangeKind, Command, CommandResult, DocumentStore, EngineRef, Expectation};
use tokio::sync::Mutex;

use crate::concurrency::XorShift;
use crate::harness::{EngineKind, Harness, Note, Person, seed, sql_client};

conformance!(
    feed_reports_puts_and_deletes_in_etag_order,
    feed_filters_by_collection_and_moves_past_the_rest,
    feed_resumes_after_its_position_without_repeats,
    feed_waits_for_the_next_commit,
    feed_skips_nothing_with_concurrent_writers,
    feed_keeps_its_history_when_reopened,
    feed_of_one_engine_sees_writes_of_another,
    feed_refuses_bad_collection_names,
);

/// A guard against hangs only: every wait in these tests ends long before.
const PATIENCE: Duration = Duration::from_secs(60);

/// Commits `commands` on `engine` and returns the etags it took.
async fn commit(engine: &EngineRef, commands: Vec<Command>) -> Option<Vec<u64>> {
    let results = engine
        .commit(Batch::from(commands))
        .await
        .expect("the commit reaches the engine")
        .ok()?;
    Some(
        results
            .iter()
            .filter_map(|result| match result {
                CommandResult::Put(metadata) => Some(metadata.etag),
                CommandResult::Deleted { etag, .. } => *etag,
                CommandResult::Checked { .. } => None,
            })
            .collect(),
    )
}

fn put(collection: &str, id: &str, document: &str) -> Command {
    Command::put(collection, id, document, Expectation::Any)
}

/// Reads the feed of `store` after `since` until it reached `last`.
async fn read_until(store: &DocumentStore, since: u64, last: u64) -> Vec<folio::Change> {
    let mut feed = store.changes(since);
    let mut changes = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while feed.position() < last {
            changes.push(feed.next().await.expect("the feed reads"));
        }
    })
    .await
    .expect("the feed reaches the last etag");
    changes
}

async fn feed_reports_puts_and_deletes_in_etag_order(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let first = commit(
        &engine,
        vec![
            put("people", "p1", r#"{"name":"Ada"}"#),
            put("people", "p2", r#"{"name":"Bob"}"#),
        ],
    )
    .await
    .expect("no conflict");
    let update = commit(&engine, vec![put("people", "p1", r#"{"name":"Ada L."}"#)])
        .await
        .expect("no conflict");
    let delete = commit(
        &engine,
        vec![Command::delete("people", "p2", Expectation::Any)],
    )
    .await
    .expect("no conflict");
    // A delete of nothing takes no etag, so it is no change.
    let nothing = commit(
        &engine,
        vec![Command::delete("people", "p9", Expectation::Any)],
    )
    .await
    .expect("no conflict");
    assert!(nothing.is_empty());
    let etags: Vec<u64> = [first, update, delete].concat();
    let last = *etags.last().expect("etags");

    let changes = read_until(&store, 0, last).await;
    let seen: Vec<(u64, ChangeKind, &str, u64)> = changes
        .iter()
        .map(|change| {
            (
                change.etag,
                change.kind,
                change.id.as_str(),
                change.revision,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (etags[0], ChangeKind::Put, "p1", 1),
            (etags[1], ChangeKind::Put, "p2", 1),
            (etags[2], ChangeKind::Put, "p1", 2),
            (etags[3], ChangeKind::Delete, "p2", 1),
        ]
    );
    // Change vectors are the ones the writes returned.
    let stored = engine
        .metadata("people", &["p1".to_owned()])
        .await
        .expect("metadata reads")
        .remove(0)
        .expect("p1 exists");
    assert_eq!(changes[2].change_vector, stored.change_vector);
    assert!(changes.iter().all(|change| change.collection == "people"));
}

async fn feed_filters_by_collection_and_moves_past_the_rest(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Person::new("p1", "Ada"), Person::new("p2", "Bob")],
    )
    .await;
    seed(&store, vec![Note::new("n1", "first")]).await;
    seed(&store, vec![Person::new("p3", "Cy")]).await;
    let last = store
        .engine()
        .changes(0, None, 100)
        .await
        .expect("the feed reads")
        .last_etag;

    let mut notes = store.changes(0).collection("notes");
    let note = tokio::time::timeout(PATIENCE, notes.next())
        .await
        .expect("a note change comes")
        .expect("the feed reads");
    assert_eq!(
        (note.collection.as_str(), note.id.as_str()),
        ("notes", "n1")
    );
    // Nothing else matches, and the feed has looked at everything.
    assert_eq!(notes.next_now().await.expect("the feed reads"), None);
    assert_eq!(notes.position(), last);

    let page = store
        .engine()
        .changes(0, Some("people"), 2)
        .await
        .expect("the feed reads");
    assert_eq!(page.changes.len(), 2, "a full page");
    assert_eq!(
        page.last_etag, page.changes[1].etag,
        "a full page ends at its last change"
    );
}

async fn feed_resumes_after_its_position_without_repeats(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let mut etags = Vec::new();
    for n in 0..10 {
        etags.extend(
            commit(
                &engine,
                vec![put("notes", &format!("n{n}"), r#"{"text":"x"}"#)],
            )
            .await
            .expect("no conflict"),
        );
    }
    let mut feed = store.changes(0);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(feed.next().await.expect("the feed reads").etag);
    }
    // "Restart": a new feed from the position of the old one.
    let position = feed.position();
    drop(feed);
    let rest = read_until(&store, position, etags[9]).await;
    seen.extend(rest.iter().map(|change| change.etag));
    assert_eq!(seen, etags);
}

async fn feed_waits_for_the_next_commit(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let since = engine
        .changes(0, None, 1)
        .await
        .expect("the feed reads")
        .last_etag;
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut feed = store.changes(since);
            tokio::time::timeout(PATIENCE, feed.next()).await
        })
    };
    // Let the reader start waiting (the result is the same if it has not).
    tokio::task::yield_now().await;
    let etags = commit(&engine, vec![put("notes", "late", r#"{"text":"hello"}"#)])
        .await
        .expect("no conflict");
    let change = waiting
        .await
        .expect("the reader finishes")
        .expect("the reader was woken")
        .expect("the feed reads");
    assert_eq!((change.id.as_str(), change.etag), ("late", etags[0]));

    // A long poll that times out returns nothing and says where it looked.
    let page = engine
        .changes_wait(etags[0], None, 10, Duration::from_millis(50))
        .await
        .expect("the long poll answers");
    assert!(page.changes.is_empty());
    assert_eq!(page.last_etag, etags[0]);
}

/// Many writers (single puts, multi-document batches, deletes, stale
/// versions that conflict and roll back, leaving gaps in the etags), one
/// reader reading all along: it sees every acknowledged etag exactly once,
/// in increasing order, and nothing else.
async fn feed_skips_nothing_with_concurrent_writers(h: Harness) {
    const WRITERS: u64 = 8;
    const ROUNDS: usize = 40;
    let store = h.store().await;
    let engine = store.engine().clone();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let since = engine
        .changes(0, None, 1)
        .await
        .expect("the feed reads")
        .last_etag;

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut feed = store.changes(since);
            let mut seen = Vec::new();
            // Stops when told the last etag, below.
            loop {
                let change = feed.next().await.expect("the feed reads");
                seen.push(change.etag);
                if change.collection == "done" {
                    return seen;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let engine = engine.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let mut random = XorShift::new(writer + 1);
                for round in 0..ROUNDS {
                    let id = |n: u64| format!("d{}", n % 12);
                    let commands = match random.next() % 4 {
                        0 => vec![put("docs", &id(random.next()), r#"{"v":1}"#)],
                        // Three documents in a row (a batch names each once).
                        1 => {
                            let first = random.next();
                            (0..3)
                                .map(|n| put("docs", &id(first + n), r#"{"v":2}"#))
                                .collect()
                        }
                        2 => vec![Command::delete("docs", id(random.next()), Expectation::Any)],
                        // A version no engine issued, after a write: the whole batch
                        // conflicts and rolls back its etags.
                        _ => vec![
                            put("docs", &format!("w{writer}-{round}"), r#"{"v":3}"#),
                            Command::put(
                                "docs",
                                id(random.next()),
                                r#"{"v":4}"#,
                                Expectation::version(folio::ChangeVector::from(
                                    "A:1-Zz-zzzzzzzzzzzzzzzzzzz",
                                )),
                            ),
                        ],
                    };
                    if let Some(etags) = commit(&engine, commands).await {
                        acknowledged.lock().await.extend(etags);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer finishes");
    }
    let done = commit(&engine, vec![put("done", "done", "{}")])
        .await
        .expect("no conflict");
    acknowledged.lock().await.extend(done);
    let seen = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the reader reaches the end")
        .expect("the reader finishes");
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "etags in increasing order, none repeated"
    );
    let expected: Vec<u64> = acknowledged.lock().await.iter().copied().collect();
    assert_eq!(seen, expected, "exactly the acknowledged writes");
}

async fn feed_keeps_its_history_when_reopened(h: Harness) {
    if !h.persists() {
        return;
    }
    let last = {
        let store = h.store().await;
        let engine = store.engine().clone();
        commit(&engine, vec![put("notes", "a", r#"{"text":"a"}"#)])
            .await
            .expect("no conflict");
        commit(&engine, vec![put("notes", "a", r#"{"text":"b"}"#)])
            .await
            .expect("no conflict");
        commit(
            &engine,
            vec![Command::delete("notes", "a", Expectation::Any)],
        )
        .await
        .expect("no conflict")[0]
    };
    let store = h
        .reopened()
        .await
        .open()
        .await
        .expect("the store opens again");
    let changes = read_until(&store, 0, last).await;
    let kinds: Vec<(ChangeKind, u64)> = changes.iter().map(|c| (c.kind, c.revision)).collect();
    assert_eq!(
        kinds,
        vec![
            (ChangeKind::Put, 1),
            (ChangeKind::Put, 2),
            (ChangeKind::Delete, 2)
        ]
    );
}

/// On PostgreSQL, a second engine is another application server: its feed
/// is woken by the first one's commits through LISTEN/NOTIFY. (Remote: a
/// second client of the server.)
async fn feed_of_one_engine_sees_writes_of_another(h: Harness) {
    if !matches!(h.kind, EngineKind::Postgres | EngineKind::Remote) {
        return;
    }
    let writer = h.store().await;
    let reader = DocumentStore::from_engine(h.fresh_engine().await);
    let since = reader
        .engine()
        .changes(0, None, 1)
        .await
        .expect("the feed reads")
        .last_etag;
    let waiting = tokio::spawn(async move {
        let mut feed = reader.changes(since);
        tokio::time::timeout(PATIENCE, feed.next()).await
    });
    tokio::task::yield_now().await;
    let etags = commit(writer.engine(), vec![put("notes", "elsewhere", "{}")])
        .await
        .expect("no conflict");
    let change = waiting
        .await
        .expect("the reader finishes")
        .expect("the reader was woken by the other engine's commit")
        .expect("the feed reads");
    assert_eq!((change.id.as_str(), change.etag), ("elsewhere", etags[0]));
}

async fn feed_refuses_bad_collection_names(h: Harness) {
    let store = h.store().await;
    for bad in ["", "no spaces", "semi;colon", "x'--"] {
        let outcome = store.changes(0).collection(bad).next_now().await;
        assert!(
            matches!(outcome, Err(folio::Error::InvalidInput(_))),
            "{bad:?}: {outcome:?}"
        );
    }
}

/// PostgreSQL only: a transaction that took an etag and has not committed
/// holds the feed's horizon below its etag, so a later etag that committed
/// first is not published before it; once it commits, both come, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_waits_for_an_older_transaction_in_flight() {
    let h = Harness::new(EngineKind::Postgres).await;
    let store = h.store().await;
    let engine = store.engine().clone();
    let postgres = h.postgres().expect("postgres");
    let schema = postgres.quoted_schema();
    let since = engine
        .changes(0, None, 1)
        .await
        .expect("the feed reads")
        .last_etag;

    // A slow writer, written as the engine writes: the etag and the change
    // row in one statement, in a transaction left open.
    let slow = sql_client(&postgres.url).await;
    slow.batch_execute("BEGIN").await.expect("begin");
    let held: i64 = slow
        .query_one(
            &format!(
                "WITH w AS (INSERT INTO {schema}.documents (collection, id, data, etag, revision, last_modified) \
                 VALUES ('notes', 'slow', '{{}}', nextval('{schema}.etags'), 1, 0) RETURNING etag, revision), \
                 c AS (INSERT INTO {schema}.changes (etag, kind, collection, id, revision) \
                 SELECT etag, 0, 'notes', 'slow', revision FROM w) SELECT etag FROM w"
            ),
            &[],
        )
        .await
        .expect("the slow write runs")
        .get(0);
    let fast = commit(&engine, vec![put("notes", "fast", "{}")])
        .await
        .expect("no conflict")[0];
    assert!(u64::try_from(held).unwrap() < fast);

    // While the older transaction is open, the newer change is not
    // published, however long a reader waits.
    let page = engine
        .changes_wait(since, None, 100, Duration::from_millis(600))
        .await
        .expect("the feed reads");
    assert!(
        page.changes
            .iter()
            .all(|change| change.etag < u64::try_from(held).unwrap()),
        "nothing at or after the etag in flight: {:?}",
        page.changes
    );
    assert!(page.last_etag < u64::try_from(held).unwrap());

    slow.batch_execute("COMMIT").await.expect("commit");
    let changes = read_until(&store, since, fast).await;
    let etags: Vec<u64> = changes.iter().map(|change| change.etag).collect();
    assert_eq!(etags, vec![u64::try_from(held).unwrap(), fast]);
}
