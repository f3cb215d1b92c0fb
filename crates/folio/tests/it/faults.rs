//! Failure rules (docs/design.md): a failed `save_changes` changes nothing, not
//! the database and not the session; a storage failure is an
//! `Error::Engine`, never mistaken for a conflict; a batch that fails in
//! storage rolls back alone.

use std::error::Error as _;
use std::sync::{Arc, Mutex};

use folio::testing::{FaultyEngine, Wrapper, wrap};
use folio::{
    Batch, CommandResult, ConcurrencyError, DocumentStore, Engine, EngineErrorKind, EngineRef,
    Entry, Error, Expectation,
};

use crate::harness::{
    Account, Harness, Note, Person, conflicts, embedded_engine, note_ids, outside_connection, seed,
};

conformance!(
    a_failed_save_changes_neither_the_database_nor_the_session,
    a_retry_after_a_fault_keeps_the_original_expectations,
    retry_on_conflict_does_not_retry_a_fault,
    a_storage_fault_rolls_back_its_batch_alone,
    a_postgres_fault_mid_batch_rolls_back_the_whole_batch,
);

// ---- a store whose commits fail on demand ---------------------------------------

/// Records every batch sent, then delegates.
struct Recorder {
    inner: EngineRef,
    batches: Mutex<Vec<Batch>>,
}

#[async_trait::async_trait]
impl Wrapper for Recorder {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(
        &self,
        batch: Batch,
    ) -> folio::Result<Result<folio::Committed, ConcurrencyError>> {
        self.batches.lock().unwrap().push(batch.clone());
        self.inner.commit(batch).await
    }
}

struct Faulty {
    /// Fails commits when told.
    faulty: Arc<FaultyEngine>,
    /// Sees every batch, failed or not (it sits in front of `faulty`).
    recorder: Arc<Recorder>,
    /// Sessions here go through both.
    store: DocumentStore,
    /// The same database without either: "someone else".
    others: DocumentStore,
}

async fn faulty(h: &Harness) -> Faulty {
    let inner = h.store().await.engine().clone();
    let faulty = Arc::new(FaultyEngine::new(inner.clone()));
    let recorder = Arc::new(Recorder {
        inner: wrap(faulty.clone()),
        batches: Mutex::new(Vec::new()),
    });
    Faulty {
        store: DocumentStore::from_engine(wrap(recorder.clone())),
        others: DocumentStore::from_engine(inner),
        faulty,
        recorder,
    }
}

/// Everything stored in the collections the scenarios use: documents and
/// their metadata (change vectors, revisions, etags, times).
async fn everything(store: &DocumentStore) -> Vec<Entry> {
    let mut all = Vec::new();
    for collection in ["people", "notes", "accounts"] {
        all.extend(store.engine().scan(collection, None, 1000).await.unwrap());
    }
    all
}

fn assert_engine_error<T: std::fmt::Debug>(result: folio::Result<T>) -> folio::EngineError {
    match result {
        Err(Error::Engine(error)) => error,
        other => panic!("expected an engine error (not a conflict), got {other:?}"),
    }
}

/// Asserts that one of `error`'s sources says `text`: the native error of
/// the failure is kept.
pub(crate) fn assert_caused_by(error: &folio::EngineError, text: &str) {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    assert!(
        causes.iter().any(|cause| cause.contains(text)),
        "the native error is kept as the source: {error} / {causes:?}"
    );
}

async fn person(store: &DocumentStore, id: &str) -> Option<Person> {
    store.open_session().load::<Person>(id).await.unwrap()
}

// ---- scenarios -------------------------------------------------------------------

async fn a_failed_save_changes_neither_the_database_nor_the_session(h: Harness) {
    let f = faulty(&h).await;
    seed(
        &f.others,
        vec![
            Person::new("people/1", "Ada"),
            Person::new("people/2", "Alan"),
            Person::new("people/3", "Grace"),
        ],
    )
    .await;
    seed(&f.others, vec![Note::new("notes/1", "keep me")]).await;
    let before = everything(&f.others).await;
    let ada_before = f
        .others
        .open_session()
        .metadata_for::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();

    // A unit of work of every kind: a change through load_mut, a stored
    // change, a checked delete, inserts, a store_new.
    let mut session = f.store.open_session();
    session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap()
        .name = "Ada Lovelace".into();
    let mut alan = session.load::<Person>("people/2").await.unwrap().unwrap();
    alan.age = 41;
    session.store(alan).unwrap();
    let _ = session.load::<Person>("people/3").await.unwrap().unwrap();
    session.delete::<Person>("people/3").unwrap();
    session.store(Person::new("people/4", "New")).unwrap();
    session.store(Note::new("notes/2", "new note")).unwrap();
    session
        .store_new(Note::new("notes/3", "brand new"))
        .unwrap();
    assert!(session.has_changes().unwrap());

    // Two saves fail in storage.
    f.faulty.fail_next_commits(2);
    for attempt in 1..=2 {
        let result = session.save_changes().await;
        assert!(result.as_ref().err().and_then(Error::conflicts).is_none());
        let error = assert_engine_error(result);
        assert_eq!(error.kind(), EngineErrorKind::Io);
        assert_eq!(f.faulty.failed_commits(), attempt);
    }

    // The database is unchanged: contents and versions.
    assert_eq!(everything(&f.others).await, before);

    // The session is unchanged: its pending work, its view, what it knows.
    assert!(session.has_changes().unwrap());
    assert_eq!(
        session
            .load::<Person>("people/1")
            .await
            .unwrap()
            .unwrap()
            .name,
        "Ada Lovelace"
    );
    assert_eq!(
        session
            .load::<Person>("people/2")
            .await
            .unwrap()
            .unwrap()
            .age,
        41
    );
    assert!(session.load::<Person>("people/3").await.unwrap().is_none());
    assert_eq!(
        session
            .load::<Person>("people/4")
            .await
            .unwrap()
            .unwrap()
            .name,
        "New"
    );
    assert_eq!(
        session.metadata_for::<Person>("people/1").await.unwrap(),
        Some(ada_before.clone()),
        "the session still knows the version it read"
    );
    let held = session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.change_vector.as_ref(), Some(&ada_before.change_vector));
    assert_eq!(held.revision, 1);

    // The next save sends exactly the batch that failed, and commits it.
    session.save_changes().await.unwrap();
    let batches = f.recorder.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0], batches[1]);
    assert_eq!(batches[0], batches[2], "the retry sends the same batch");
    assert_eq!(f.faulty.failed_commits(), 2);
    assert!(!session.has_changes().unwrap());

    let ada = person(&f.others, "people/1").await.unwrap();
    assert_eq!((ada.name.as_str(), ada.revision), ("Ada Lovelace", 2));
    let alan = person(&f.others, "people/2").await.unwrap();
    assert_eq!((alan.age, alan.revision), (41, 2));
    assert!(person(&f.others, "people/3").await.is_none());
    assert_eq!(person(&f.others, "people/4").await.unwrap().revision, 1);
    let notes = f
        .others
        .open_session()
        .load_many::<Note>(&["notes/1", "notes/2", "notes/3"])
        .await
        .unwrap();
    let texts: Vec<Option<&str>> = notes
        .iter()
        .map(|n| n.as_ref().map(|n| n.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [Some("keep me"), Some("new note"), Some("brand new")]
    );
    let untouched = before
        .iter()
        .find(|entry| entry.metadata.id == "notes/1")
        .unwrap();
    assert!(
        everything(&f.others).await.contains(untouched),
        "notes/1 was not part of the batch: same version"
    );
}

async fn a_retry_after_a_fault_keeps_the_original_expectations(h: Harness) {
    let f = faulty(&h).await;
    seed(&f.others, vec![Person::new("people/1", "Ada")]).await;
    seed(
        &f.others,
        vec![Account {
            id: "a1".into(),
            balance: 10,
        }],
    )
    .await;
    let read = |id: &'static str| {
        let others = f.others.clone();
        async move {
            others
                .open_session()
                .metadata_for::<Person>(id)
                .await
                .unwrap()
        }
    };
    let ada_read = read("people/1").await.unwrap();

    let mut session = f.store.open_session();
    // Account has no change-vector field: its expectation lives in the session.
    let mut account = session.load::<Account>("a1").await.unwrap().unwrap();
    let account_read = session
        .metadata_for::<Account>("a1")
        .await
        .unwrap()
        .unwrap();
    account.balance = 20;
    session.store(account).unwrap();
    let mut ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    ada.name = "Ada Lovelace".into();
    session.store(ada).unwrap();
    session.store(Person::new("people/9", "Mine")).unwrap();

    f.faulty.fail_next_commits(1);
    assert_engine_error(session.save_changes().await);

    // Meanwhile, someone else changes all three.
    let mut other = f.others.open_session();
    let mut their_account = other.load::<Account>("a1").await.unwrap().unwrap();
    their_account.balance = 99;
    other.store(their_account).unwrap();
    let mut theirs = other.load::<Person>("people/1").await.unwrap().unwrap();
    theirs.name = "Ada King".into();
    other.store(theirs).unwrap();
    other.store(Person::new("people/9", "Theirs")).unwrap();
    other.save_changes().await.unwrap();

    // The retry is judged against what the session read before the fault.
    let found = conflicts(session.save_changes().await);
    assert_eq!(found.len(), 3, "every conflict: {found:?}");
    let by_id = |id: &str| found.iter().find(|c| c.id() == id).unwrap();
    let now = everything(&f.others).await;
    let current = |id: &str| {
        now.iter()
            .find(|entry| entry.metadata.id == id)
            .map(|entry| entry.metadata.change_vector.clone())
    };
    assert_eq!(
        by_id("a1").expected(),
        &Expectation::version(account_read.change_vector)
    );
    assert_eq!(by_id("a1").actual(), current("a1").as_ref());
    assert_eq!(
        by_id("people/1").expected(),
        &Expectation::version(ada_read.change_vector)
    );
    assert_eq!(by_id("people/1").actual(), current("people/1").as_ref());
    assert_eq!(by_id("people/9").expected(), &Expectation::Missing);
    assert_eq!(by_id("people/9").actual(), current("people/9").as_ref());

    // Nothing of the session was written; the other writes stand.
    assert_eq!(
        person(&f.others, "people/1").await.unwrap().name,
        "Ada King"
    );
    assert_eq!(person(&f.others, "people/9").await.unwrap().name, "Theirs");
    let account = f
        .others
        .open_session()
        .load::<Account>("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.balance, 99);
    assert_eq!(f.faulty.failed_commits(), 1);
}

async fn retry_on_conflict_does_not_retry_a_fault(h: Harness) {
    let f = faulty(&h).await;
    seed(&f.others, vec![Note::new("notes/1", "v1")]).await;

    f.faulty.fail_next_commits(1);
    let mut attempts = 0;
    let result = f
        .store
        .retry_on_conflict(5, async |session| {
            attempts += 1;
            let mut note = session.load::<Note>("notes/1").await?.unwrap();
            note.text = "v2".into();
            session.store(note)?;
            Ok(())
        })
        .await;
    assert_engine_error(result);
    assert_eq!(attempts, 1, "a storage failure is not a conflict: no retry");
    let stored = f
        .others
        .open_session()
        .load::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.text, "v1");
}

/// Refuses, inside SQLite, any insert of a document with the id `boom`.
const TRIGGER: &str = "CREATE TRIGGER fail_boom BEFORE INSERT ON documents \
     WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ABORT, 'injected fault'); END;";

async fn a_storage_fault_rolls_back_its_batch_alone(h: Harness) {
    // A real fault inside the storage needs the database file.
    let Some(file) = h.database_file() else {
        return;
    };
    let store = h.store().await;
    seed(&store, vec![Note::new("n1", "a"), Note::new("n2", "b")]).await;
    let etag_of = async |id: &str| {
        store
            .open_session()
            .metadata_for::<Note>(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} exists"))
            .etag
    };
    let last_etag = etag_of("n1").await.max(etag_of("n2").await);

    let sql = |statement: &str| outside_connection(&file).execute_batch(statement).unwrap();
    sql(TRIGGER);

    // Several sessions save at the same time as the failing one: the
    // writer may group them with it, and they must not be harmed.
    const OTHERS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(OTHERS + 1));
    let mut tasks = Vec::new();
    for n in 0..OTHERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = store.open_session();
            session
                .store(Note::new(&format!("other{n}"), "saved alongside"))
                .unwrap();
            barrier.wait().await;
            session.save_changes().await
        }));
    }
    let mut failing = store.open_session();
    failing.store(Note::new("ok1", "fine on its own")).unwrap();
    failing
        .store(Note::new("boom", "refused by the trigger"))
        .unwrap();
    barrier.wait().await;
    let error = assert_engine_error(failing.save_changes().await);
    assert_caused_by(&error, "injected fault");
    for task in tasks {
        task.await
            .unwrap()
            .expect("batches grouped with the failing one commit");
    }

    // The failing batch rolled back entirely: not even its first put.
    let mut reader = store.open_session();
    let failed = reader.load_many::<Note>(&["ok1", "boom"]).await.unwrap();
    assert!(failed.iter().all(Option::is_none), "{failed:?}");
    assert!(failing.has_changes().unwrap(), "the session keeps its work");

    // The others took later etags; the failed batch's stay taken (a change
    // vector names one version forever, even one rolled back).
    let mut etags = Vec::new();
    for n in 0..OTHERS {
        let note = reader
            .load::<Note>(&format!("other{n}"))
            .await
            .unwrap()
            .expect("each other batch is stored");
        assert_eq!(note.text, "saved alongside");
        etags.push(etag_of(&format!("other{n}")).await);
    }
    etags.sort_unstable();
    etags.dedup();
    assert_eq!(etags.len(), OTHERS, "one etag each: {etags:?}");
    assert!(etags[0] > last_etag, "{etags:?} after {last_etag}");

    // The next write works and takes a later etag: the others took six,
    // and the failed batch the two of its puts, never given back.
    seed(&store, vec![Note::new("after", "still fine")]).await;
    assert_eq!(etag_of("after").await, last_etag + OTHERS as u64 + 3);

    // Without the trigger, the same session's retry commits its batch.
    sql("DROP TRIGGER fail_boom;");
    failing.save_changes().await.unwrap();
    let mut etags_in_order = Vec::new();
    for id in ["n1", "n2", "after", "ok1", "boom"] {
        etags_in_order.push(etag_of(id).await);
    }
    assert!(etags_in_order.windows(2).all(|pair| pair[0] < pair[1]));
}

/// The PostgreSQL counterpart of [`TRIGGER`]: inside the server, any insert
/// of a document with the id `boom` raises. (PL/pgSQL is fine in a test; the
/// engine itself uses none.)
pub(crate) fn postgres_trigger(schema: &str) -> String {
    format!(
        "CREATE FUNCTION {schema}.fail_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.id = 'boom' THEN
                 RAISE EXCEPTION 'injected fault';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_boom BEFORE INSERT ON {schema}.documents
             FOR EACH ROW EXECUTE FUNCTION {schema}.fail_boom();"
    )
}

async fn a_postgres_fault_mid_batch_rolls_back_the_whole_batch(h: Harness) {
    // A real fault inside the server needs SQL on the test's schema.
    let Some(postgres) = h.postgres() else {
        return;
    };
    let schema = postgres.quoted_schema();
    let client = crate::harness::sql_client(&postgres.url).await;
    let store = h.store().await;
    seed(&store, vec![Note::new("n1", "a"), Note::new("n2", "b")]).await;
    let etag_of = async |id: &str| {
        store
            .open_session()
            .metadata_for::<Note>(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} exists"))
            .etag
    };
    let last_etag = etag_of("n1").await.max(etag_of("n2").await);

    client
        .batch_execute(&postgres_trigger(&schema))
        .await
        .unwrap();

    // Several sessions save at the same time as the failing one, each in
    // its own transaction: they must not be harmed.
    const OTHERS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(OTHERS + 1));
    let mut tasks = Vec::new();
    for n in 0..OTHERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = store.open_session();
            session
                .store(Note::new(&format!("other{n}"), "saved alongside"))
                .unwrap();
            barrier.wait().await;
            session.save_changes().await
        }));
    }
    // The first put is fine, the second fails in the server, the third
    // comes after the failure: the whole batch must roll back.
    let mut failing = store.open_session();
    failing.store(Note::new("ok1", "fine on its own")).unwrap();
    failing
        .store(Note::new("boom", "refused by the trigger"))
        .unwrap();
    failing.store(Note::new("ok2", "after the fault")).unwrap();
    barrier.wait().await;
    let result = failing.save_changes().await;
    assert!(result.as_ref().err().and_then(Error::conflicts).is_none());
    let error = assert_engine_error(result);
    assert_caused_by(&error, "injected fault");
    for task in tasks {
        task.await
            .unwrap()
            .expect("batches saved alongside the failing one commit");
    }

    // The failing batch rolled back entirely: not even its first put.
    let mut reader = store.open_session();
    let failed = reader
        .load_many::<Note>(&["ok1", "boom", "ok2"])
        .await
        .unwrap();
    assert!(failed.iter().all(Option::is_none), "{failed:?}");
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.documents WHERE id IN ('ok1', 'boom', 'ok2')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no row of the failed batch is in the table");
    assert!(failing.has_changes().unwrap(), "the session keeps its work");

    // The others are stored, each with a new etag (a sequence may leave
    // gaps where the failed batch drew etags: they are never reused).
    let mut etags = Vec::new();
    for n in 0..OTHERS {
        let note = reader
            .load::<Note>(&format!("other{n}"))
            .await
            .unwrap()
            .expect("each other batch is stored");
        assert_eq!(note.text, "saved alongside");
        etags.push(etag_of(&format!("other{n}")).await);
    }
    etags.sort_unstable();
    etags.dedup();
    assert_eq!(etags.len(), OTHERS, "distinct etags: {etags:?}");
    assert!(etags[0] > last_etag, "{etags:?} after {last_etag}");

    // The next write works and takes a later etag.
    seed(&store, vec![Note::new("after", "still fine")]).await;
    let after = etag_of("after").await;
    assert!(after > etags[OTHERS - 1], "{after} after {etags:?}");

    // Without the trigger, the same session's retry commits its batch.
    client
        .batch_execute(&format!(
            "DROP TRIGGER fail_boom ON {schema}.documents; DROP FUNCTION {schema}.fail_boom();"
        ))
        .await
        .unwrap();
    failing.save_changes().await.unwrap();
    assert!(!failing.has_changes().unwrap());
    for id in ["ok1", "boom", "ok2"] {
        assert!(etag_of(id).await > after, "{id} is written after `after`");
    }
    let stored = store
        .open_session()
        .load_many::<Note>(&["n1", "n2", "ok1", "boom", "ok2"])
        .await
        .unwrap();
    assert!(stored.iter().all(Option::is_some), "{stored:?}");
}

// ---- faults inside the embedded engine's writer -------------------------------------
//
// Below `Engine::commit`: real SQLite errors in the writer thread, in the
// middle of a group of batches that share one transaction. Whatever fails,
// each caller hears the truth about its own batch: told committed, every
// write of it is stored with the version it was told; told an
// `Error::Engine`, nothing of it is stored.

/// A put of a new note `id` whose text is `text`.
fn new_note(id: &str, text: &str) -> folio::Command {
    Note::put(id, text, Expectation::Missing)
}

/// The note ids a batch puts.
fn put_ids(batch: &Batch) -> Vec<String> {
    batch
        .commands
        .iter()
        .map(|command| command.id.clone())
        .collect()
}

/// Checks what the caller of `batch` was told against what is stored.
/// Returns whether the batch committed.
async fn assert_told_the_truth(
    engine: &dyn Engine,
    batch: &Batch,
    outcome: &folio::Result<Result<folio::Committed, ConcurrencyError>>,
) -> bool {
    let ids = put_ids(batch);
    let stored = engine.get("notes", &ids).await.unwrap();
    match outcome {
        Ok(Ok(results)) => {
            for (result, entry) in results.iter().zip(&stored) {
                let CommandResult::Put(told) = result else {
                    panic!("a put answered {result:?}");
                };
                let entry = entry
                    .as_ref()
                    .unwrap_or_else(|| panic!("{} was acknowledged but is not stored", told.id));
                assert_eq!(&entry.metadata, told, "stored as acknowledged");
            }
            true
        }
        Err(Error::Engine(_)) => {
            let present: Vec<&String> = ids
                .iter()
                .zip(&stored)
                .filter(|(_, entry)| entry.is_some())
                .map(|(id, _)| id)
                .collect();
            assert!(
                present.is_empty(),
                "the batch {ids:?} was told it failed, yet {present:?} are stored"
            );
            false
        }
        other => panic!("a storage fault must be an Error::Engine, got {other:?}"),
    }
}

/// Commits `failing` and `others` at the same moment (so the writer groups
/// them into one transaction), returning every outcome.
async fn commit_together(
    engine: &Arc<folio::SqliteEngine>,
    failing: &Batch,
    others: &[Batch],
) -> (
    folio::Result<Result<folio::Committed, ConcurrencyError>>,
    Vec<folio::Result<Result<folio::Committed, ConcurrencyError>>>,
) {
    let barrier = Arc::new(tokio::sync::Barrier::new(others.len() + 1));
    let tasks: Vec<_> = others
        .iter()
        .map(|batch| {
            let (engine, barrier, batch) = (engine.clone(), barrier.clone(), batch.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                engine.commit(batch).await
            })
        })
        .collect();
    barrier.wait().await;
    let outcome = engine.commit(failing.clone()).await;
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    (outcome, outcomes)
}

/// `PRAGMA integrity_check` of the file, through a connection of its own.
fn integrity(file: &std::path::Path) -> String {
    outside_connection(file)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// A database limited to 1 MiB (`SqliteOptions::max_size_bytes`, SQLite's
/// `max_page_count`): a write past it fails with `SQLITE_FULL` inside the
/// writer's transaction, as on a full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_its_batch_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.sqlite");
    let engine = Arc::new(
        folio::SqliteEngine::open(
            &file,
            folio::SqliteOptions {
                max_size_bytes: Some(1 << 20),
                ..folio::SqliteOptions::default()
            },
        )
        .unwrap(),
    );

    // Fill the database until the disk is full.
    let filler = "f".repeat(8000);
    let mut stored = Vec::new();
    let full = loop {
        let id = format!("fill{}", stored.len());
        let batch = Batch::from(vec![new_note(&id, &filler)]);
        let outcome = engine.commit(batch.clone()).await;
        if !assert_told_the_truth(engine.as_ref(), &batch, &outcome).await {
            break outcome;
        }
        stored.push(id);
        assert!(
            stored.len() < 1000,
            "1 MiB holds fewer than 1000 notes of 8 kB"
        );
    };
    let error = assert_engine_error(full);
    assert_eq!(error.kind(), EngineErrorKind::Full, "{error}");
    assert!(
        format!("{error}").contains("free some space"),
        "the error says what to do: {error}"
    );
    assert!(stored.len() > 50, "{} notes fit in 1 MiB", stored.len());

    // Deleting makes room (a delete of a full database works).
    let freed: Vec<String> = stored.drain(..20).collect();
    let deletes = freed
        .iter()
        .map(|id| folio::Command::delete("notes", id.as_str(), Expectation::Any))
        .collect::<Vec<_>>();
    engine.commit(Batch::from(deletes)).await.unwrap().unwrap();

    // A batch too large for the room left fails in the middle of a group:
    // its first put fits, its second does not, its third comes after.
    let failing = Batch::from(vec![
        new_note("ok1", "fits"),
        new_note("huge", &"h".repeat(2 << 20)),
        new_note("ok2", "after the failure"),
    ]);
    for round in 0..5 {
        let others: Vec<Batch> = (0..6)
            .map(|n| {
                Batch::from(vec![
                    new_note(&format!("r{round}a{n}"), "saved alongside"),
                    new_note(&format!("r{round}b{n}"), "saved alongside"),
                ])
            })
            .collect();
        let (outcome, outcomes) = commit_together(&engine, &failing, &others).await;
        assert!(!assert_told_the_truth(engine.as_ref(), &failing, &outcome).await);
        assert_eq!(assert_engine_error(outcome).kind(), EngineErrorKind::Full);
        for (batch, outcome) in others.iter().zip(&outcomes) {
            assert!(
                assert_told_the_truth(engine.as_ref(), batch, outcome).await,
                "a batch that fits commits beside the one that does not: {outcome:?}"
            );
            stored.extend(put_ids(batch));
        }
    }

    // The writer goes on: once there is room, the large batch commits too.
    let deletes = stored
        .drain(..)
        .filter(|id| id.starts_with("fill"))
        .map(|id| folio::Command::delete("notes", id, Expectation::Any))
        .collect::<Vec<_>>();
    engine.commit(Batch::from(deletes)).await.unwrap().unwrap();
    let fits_now = Batch::from(vec![
        new_note("ok1", "fits"),
        new_note("big", &"b".repeat(300_000)),
        new_note("ok2", "after"),
    ]);
    let outcome = engine.commit(fits_now.clone()).await;
    assert!(assert_told_the_truth(engine.as_ref(), &fits_now, &outcome).await);

    let left = note_ids(engine.as_ref()).await;
    let mut expected: Vec<String> = (0..5)
        .flat_map(|round| {
            (0..6).flat_map(move |n| [format!("r{round}a{n}"), format!("r{round}b{n}")])
        })
        .chain(["big", "ok1", "ok2"].map(String::from))
        .collect();
    expected.sort();
    assert_eq!(left, expected, "exactly the acknowledged writes are stored");
    drop(engine);
    assert_eq!(integrity(&file), "ok");
}

/// Rolls the whole transaction back, inside SQLite, on any insert of a
/// document with the id `boom`: what SQLite may do on `SQLITE_FULL`,
/// `SQLITE_IOERR` or `SQLITE_NOMEM` ("it might be necessary for SQLite to
/// rollback and cancel the entire transaction"), made deterministic.
const ROLLBACK_TRIGGER: &str = "CREATE TRIGGER rollback_boom BEFORE INSERT ON documents \
     WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ROLLBACK, 'injected rollback'); END;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_lost_mid_group_is_reported_to_every_batch_it_took() {
    let (_dir, file, engine) = embedded_engine("rollback.sqlite");
    engine
        .commit(Batch::from(vec![new_note("before", "committed before")]))
        .await
        .unwrap()
        .unwrap();
    let sql = |statement: &str| outside_connection(&file).execute_batch(statement).unwrap();
    sql(ROLLBACK_TRIGGER);

    let failing = Batch::from(vec![
        new_note("ok1", "fine on its own"),
        new_note("boom", "rolls the transaction back"),
        new_note("ok2", "after the fault"),
    ]);
    // Single-command batches too: the writer runs them without a savepoint.
    let lone_failing = Batch::from(vec![new_note("boom", "alone")]);
    let mut committed = vec!["before".to_owned()];
    for round in 0..10 {
        let others = alongside(round);
        let failing = if round % 2 == 0 {
            &failing
        } else {
            &lone_failing
        };
        let (outcome, outcomes) = commit_together(&engine, failing, &others).await;
        assert!(!assert_told_the_truth(engine.as_ref(), failing, &outcome).await);
        let error = assert_engine_error(outcome);
        assert_caused_by(&error, "injected rollback");
        for (batch, outcome) in others.iter().zip(&outcomes) {
            if assert_told_the_truth(engine.as_ref(), batch, outcome).await {
                committed.extend(put_ids(batch));
            }
        }
        // The writer goes on, with a transaction of its own again.
        let next = Batch::from(vec![
            new_note(&format!("next{round}a"), "after the fault"),
            new_note(&format!("next{round}b"), "after the fault"),
        ]);
        let outcome = engine.commit(next.clone()).await;
        assert!(assert_told_the_truth(engine.as_ref(), &next, &outcome).await);
        committed.extend(put_ids(&next));
    }

    // Exactly what was acknowledged is stored.
    committed.sort();
    assert_eq!(note_ids(engine.as_ref()).await, committed);

    // Without the trigger, the failing batch commits.
    sql("DROP TRIGGER rollback_boom;");
    let outcome = engine.commit(failing.clone()).await;
    assert!(assert_told_the_truth(engine.as_ref(), &failing, &outcome).await);
    drop(engine);
    assert_eq!(integrity(&file), "ok");
}

/// A conditional update runs without a savepoint, and the writer records
/// it in the changes feed with a statement of its own. When that record
/// fails (here a trigger refuses it), the update must fail alone: its
/// caller hears the error, nothing of it is stored (not the document, not
/// the feed record), and the batches grouped with it commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_feed_record_fails_its_update_alone() {
    let (_dir, file, engine) = embedded_engine("feed.sqlite");
    let results = engine
        .commit(Batch::from(vec![new_note("poison", "version one")]))
        .await
        .unwrap()
        .unwrap();
    let [CommandResult::Put(stored)] = &results[..] else {
        panic!("one put: {results:?}");
    };
    let connection = outside_connection(&file);
    connection
        .execute_batch(
            "CREATE TRIGGER refuse_feed BEFORE INSERT ON changes WHEN new.id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'injected feed fault'); END;",
        )
        .unwrap();
    let update = Batch::from(vec![Note::put(
        "poison",
        "version two",
        Expectation::version(stored.change_vector.clone()),
    )]);
    let mut committed = Vec::new();
    for round in 0..5 {
        let others: Vec<Batch> = (0..4)
            .map(|n| Batch::from(vec![new_note(&format!("r{round}n{n}"), "alongside")]))
            .collect();
        let (outcome, outcomes) = commit_together(&engine, &update, &others).await;
        let error = assert_engine_error(outcome);
        assert!(
            format!("{error:?}").contains("injected feed fault"),
            "the update hears its own error: {error:?}"
        );
        for (batch, outcome) in others.iter().zip(&outcomes) {
            assert!(
                assert_told_the_truth(engine.as_ref(), batch, outcome).await,
                "round {round}: a batch grouped with the failed update commits: {outcome:?}"
            );
            committed.extend(put_ids(batch));
        }
        let now = engine.get("notes", &["poison".to_owned()]).await.unwrap();
        let now = now[0].as_ref().expect("still stored");
        assert_eq!(&now.metadata, stored, "round {round}");
        assert_eq!(now.document, r#"{"id":"poison","text":"version one"}"#);
    }
    let feed: Vec<String> = connection
        .prepare("SELECT id FROM changes ORDER BY etag")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(feed.len(), 1 + committed.len(), "{feed:?}");
    assert_eq!(feed.iter().filter(|id| *id == "poison").count(), 1);

    // Without the trigger the same update commits, as revision 2.
    connection
        .execute_batch("DROP TRIGGER refuse_feed;")
        .unwrap();
    let results = engine.commit(update).await.unwrap().unwrap();
    let [CommandResult::Put(updated)] = &results[..] else {
        panic!("one put: {results:?}");
    };
    assert_eq!(updated.revision, 2);
    drop(connection);
    drop(engine);
    assert_eq!(integrity(&file), "ok");
}

// ---- a failing disk below the embedded engine -----------------------------------------
//
// `folio_sqlite::IoFaults` makes the log's file layer answer SQLite's write
// with `SQLITE_IOERR_WRITE` (cleanly, or after half the bytes landed: a
// torn write) and the syncers' `fdatasync` return `EIO`, where the
// operating system's own error would surface.

/// An embedded database on a disk that fails when told: the directory, the
/// file, the engine (durable: every commit waits for a sync) and the switch.
fn failing_disk(
    name: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<folio::SqliteEngine>,
    Arc<folio_sqlite::IoFaults>,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    let faults = Arc::new(folio_sqlite::IoFaults::default());
    let engine = folio::SqliteEngine::open(
        &file,
        folio::SqliteOptions {
            io_faults: Some(faults.clone()),
            ..folio::SqliteOptions::default()
        },
    )
    .unwrap();
    (dir, file, Arc::new(engine), faults)
}

/// The metadata a put was acknowledged with.
fn told(result: &CommandResult) -> folio::Metadata {
    match result {
        CommandResult::Put(metadata) => metadata.clone(),
        other => panic!("a put answered {other:?}"),
    }
}

/// Six batches of one or two new notes, committed beside a failing one.
fn alongside(round: usize) -> Vec<Batch> {
    (0..6)
        .map(|n| {
            let mut commands = vec![new_note(&format!("r{round}a{n}"), "alongside")];
            if n % 2 == 0 {
                commands.push(new_note(&format!("r{round}b{n}"), "alongside"));
            }
            Batch::from(commands)
        })
        .collect()
}

/// A write to the log fails in the middle of a group's COMMIT, cleanly or
/// torn: every batch of that group is told `Error::Engine` (`Io`) and
/// nothing of it is stored, not in the engine's cache, not in the file,
/// not in what a crash would leave; the writer commits the next groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_fails_its_group_and_the_writer_goes_on() {
    let (_dir, file, engine, faults) = failing_disk("eio.sqlite");
    let first = engine
        .commit(Batch::from(vec![new_note("counter", "0")]))
        .await
        .unwrap()
        .unwrap();
    // Updated in every round against the version last acknowledged.
    let mut counter = told(&first[0]);
    let mut committed = vec!["counter".to_owned()];
    for round in 0..8 {
        let torn = round % 2 == 1;
        faults.fail_log_writes(1, torn);
        let update = Batch::from(vec![Note::put(
            "counter",
            &round.to_string(),
            Expectation::version(counter.change_vector.clone()),
        )]);
        let others = alongside(round);
        let (outcome, outcomes) = commit_together(&engine, &update, &others).await;
        assert_eq!(
            faults.injected_log_writes(),
            u64::try_from(round + 1).unwrap(),
            "round {round}: the armed failure was met"
        );

        let mut failed = 0;
        for (batch, outcome) in others.iter().zip(&outcomes) {
            if assert_told_the_truth(engine.as_ref(), batch, outcome).await {
                committed.extend(put_ids(batch));
            } else {
                failed += 1;
            }
        }
        let stored = engine
            .get("notes", &["counter".to_owned()])
            .await
            .unwrap()
            .remove(0)
            .expect("the counter is stored");
        match outcome {
            Ok(Ok(results)) => {
                counter = told(&results[0]);
                assert_eq!(stored.metadata, counter, "stored as acknowledged");
            }
            Err(Error::Engine(error)) => {
                failed += 1;
                assert_eq!(error.kind(), EngineErrorKind::Io, "{error}");
                assert_caused_by(&error, "disk I/O error");
                assert_eq!(
                    stored.metadata, counter,
                    "round {round}: a failed update leaves the version it expected"
                );
            }
            other => panic!("a failed write must be an Error::Engine, got {other:?}"),
        }
        assert!(
            failed >= 1,
            "round {round}: the failed write failed a group"
        );

        // What a `kill -9` would leave now recovers exactly what was
        // acknowledged: neither the torn half nor the refused frames.
        let copy_dir = tempfile::tempdir().unwrap();
        let copy = crate::log::crash_copy(&file, copy_dir.path());
        assert_eq!(integrity(&copy), "ok", "round {round}");
        let recovered = folio::SqliteEngine::open(&copy, folio::SqliteOptions::default()).unwrap();
        committed.sort();
        assert_eq!(note_ids(&recovered).await, committed, "round {round}");
        let recovered_counter = recovered
            .get("notes", &["counter".to_owned()])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(recovered_counter.metadata, counter, "round {round}");
    }

    // The writer goes on: an update against the version last acknowledged,
    // and new documents, commit; the failed ones can be written again.
    let next = Batch::from(vec![
        Note::put(
            "counter",
            "after",
            Expectation::version(counter.change_vector.clone()),
        ),
        new_note("after", "after the faults"),
    ]);
    let results = engine.commit(next).await.unwrap().unwrap();
    assert_eq!(told(&results[0]).revision, counter.revision + 1);
    committed.push("after".to_owned());
    let retried: Vec<Batch> = alongside(0)
        .into_iter()
        .filter(|batch| !committed.contains(&put_ids(batch)[0]))
        .collect();
    for batch in &retried {
        let outcome = engine.commit(batch.clone()).await;
        assert!(assert_told_the_truth(engine.as_ref(), batch, &outcome).await);
        committed.extend(put_ids(batch));
    }
    committed.sort();
    assert_eq!(note_ids(engine.as_ref()).await, committed);

    drop(engine);
    assert_eq!(integrity(&file), "ok");
    let reopened = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
    assert_eq!(note_ids(&reopened).await, committed, "after a reopen");
}

/// A sync of the log fails (`fdatasync` returns `EIO`): the batches it was
/// to make durable are told `Error::InDoubt`, whole or not at all; later writes are refused with nothing written
/// (after a failed sync the kernel may call the lost pages clean, so the
/// engine never retries one), reads go on, and a reopened database holds
/// every acknowledged batch and each batch in doubt whole or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_puts_its_batches_in_doubt_and_no_write_is_taken_until_reopened() {
    let (_dir, file, engine, faults) = failing_disk("fsync.sqlite");
    let before = Batch::from(vec![new_note("before", "durable")]);
    engine.commit(before).await.unwrap().unwrap();
    let mut acknowledged = vec!["before".to_owned()];

    faults.fail_syncs(1);
    let failing = Batch::from(vec![new_note("f1", "in doubt"), new_note("f2", "in doubt")]);
    let others = alongside(0);
    let (outcome, outcomes) = commit_together(&engine, &failing, &others).await;
    assert_eq!(faults.injected_syncs(), 1, "the armed failure was met");
    let mut in_doubt = Vec::new();
    let mut refused = Vec::new();
    for (batch, outcome) in
        std::iter::once((&failing, &outcome)).chain(others.iter().zip(&outcomes))
    {
        match outcome {
            Ok(Ok(results)) => {
                for (id, result) in put_ids(batch).into_iter().zip(results) {
                    let stored = engine
                        .get("notes", std::slice::from_ref(&id))
                        .await
                        .unwrap()
                        .remove(0);
                    assert_eq!(stored.map(|entry| entry.metadata), Some(told(result)));
                    acknowledged.push(id);
                }
            }
            Err(Error::InDoubt(error)) => {
                let message = error.to_string();
                assert!(message.contains("reopened"), "what to do: {message}");
                assert!(message.contains("may or may not be on disk"), "{message}");
                in_doubt.push(put_ids(batch));
            }
            Err(Error::Engine(error)) => {
                // A group that came to the writer after the failure.
                assert_eq!(error.kind(), EngineErrorKind::Io, "{error}");
                let message = error.to_string();
                assert!(message.contains("reopened"), "what to do: {message}");
                assert!(
                    message.contains("nothing of this batch was written"),
                    "{message}"
                );
                refused.extend(put_ids(batch));
            }
            other => panic!(
                "a failed sync puts its batches in doubt and refuses later ones, got {other:?}"
            ),
        }
    }
    assert!(!in_doubt.is_empty(), "the failed sync put a group in doubt");

    // No more writes, and the refusal says so; nothing of them is written.
    for n in 0..3 {
        let id = format!("later{n}");
        refused.push(id.clone());
        let later = Batch::from(vec![new_note(&id, "refused")]);
        let error = assert_engine_error(engine.commit(later).await);
        assert_eq!(error.kind(), EngineErrorKind::Io);
        let message = error.to_string();
        assert!(
            message.contains("nothing of this batch was written") && message.contains("reopened"),
            "{message}"
        );
    }
    // Reads go on.
    let read = engine.get("notes", &acknowledged).await.unwrap();
    assert!(read.iter().all(Option::is_some), "{read:?}");

    drop(engine);
    assert_eq!(integrity(&file), "ok");
    let reopened =
        Arc::new(folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap());
    let ids = note_ids(reopened.as_ref()).await;
    for id in &acknowledged {
        assert!(ids.contains(id), "{id} was acknowledged: {ids:?}");
    }
    for batch in &in_doubt {
        let present = batch.iter().filter(|id| ids.contains(id)).count();
        assert!(
            present == 0 || present == batch.len(),
            "a batch in doubt is whole or absent: {batch:?} in {ids:?}"
        );
    }
    assert!(
        refused.iter().all(|id| !ids.contains(id)),
        "nothing refused is stored: {refused:?} in {ids:?}"
    );
    // The reopened database takes writes again.
    let after = Batch::from(vec![new_note("after", "taken")]);
    let outcome = reopened.commit(after.clone()).await;
    assert!(assert_told_the_truth(reopened.as_ref(), &after, &outcome).await);
}

/// Commits batches of two new notes until `failed()` counts `enough`
/// failures (the checkpointer tries every 10 ms while commits come);
/// returns the ids committed.
async fn commit_until(
    engine: &folio::SqliteEngine,
    prefix: &str,
    enough: u64,
    failed: impl Fn() -> u64,
) -> Vec<String> {
    let text = "c".repeat(1000);
    let mut committed = Vec::new();
    for n in 0.. {
        if failed() >= enough {
            break;
        }
        assert!(n < 100_000, "the checkpointer never met the failure");
        let batch = Batch::from(vec![
            new_note(&format!("{prefix}{n}a"), &text),
            new_note(&format!("{prefix}{n}b"), &text),
        ]);
        let outcome = engine.commit(batch.clone()).await;
        assert!(
            assert_told_the_truth(engine, &batch, &outcome).await,
            "a commit does not depend on checkpoints: {outcome:?}"
        );
        committed.extend(put_ids(&batch));
    }
    committed
}

/// Checkpoints copy the log into the database file; here their writes fail
/// (torn: half of each write lands, so the file holds damaged pages), then
/// their syncs. Nothing is lost and nothing waits for them: commits go on
/// being acknowledged, what a crash would leave recovers every one of them
/// (the log still holds the pages), and once the disk works again a
/// checkpoint rewrites the pages, so that the database file alone holds
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checkpoints_lose_nothing_and_a_later_one_repairs_the_file() {
    let (_dir, file, engine, faults) = failing_disk("checkpoint.sqlite");
    let mut committed = Vec::new();

    faults.fail_database_writes(u32::MAX, true);
    committed.extend(commit_until(&engine, "w", 3, || faults.injected_database_writes()).await);
    faults.fail_database_writes(0, false);
    faults.fail_database_syncs(u32::MAX);
    committed.extend(commit_until(&engine, "s", 3, || faults.injected_database_syncs()).await);
    committed.sort();
    assert_eq!(note_ids(engine.as_ref()).await, committed);

    let copy_dir = tempfile::tempdir().unwrap();
    let copy = crate::log::crash_copy(&file, copy_dir.path());
    assert_eq!(
        integrity(&copy),
        "ok",
        "a crash copy reads its pages from the log"
    );
    let recovered = folio::SqliteEngine::open(&copy, folio::SqliteOptions::default()).unwrap();
    assert_eq!(
        note_ids(&recovered).await,
        committed,
        "recovered from a crash"
    );
    drop(recovered);

    // The disk works again: the next checkpoints copy the pages, the last
    // one when the engine closes, which also removes the log.
    faults.fail_database_syncs(0);
    let after = Batch::from(vec![new_note("after", "the disk works again")]);
    engine.commit(after).await.unwrap().unwrap();
    committed.push("after".to_owned());
    committed.sort();
    drop(engine);
    let wal = file.with_extension("sqlite-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |log| log.len() == 0),
        "everything is in the database file"
    );
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = alone_dir.path().join("alone.sqlite");
    std::fs::copy(&file, &alone).unwrap();
    assert_eq!(integrity(&alone), "ok", "the damaged pages were rewritten");
    let reopened = folio::SqliteEngine::open(&alone, folio::SqliteOptions::default()).unwrap();
    assert_eq!(note_ids(&reopened).await, committed);
}
