//! The engines the conformance suite runs against.
//!
//! A scenario is an `async fn(Harness)`; `conformance!(a, b, …)` makes one
//! `#[tokio::test]` per scenario and engine, in modules named after the
//! engines, so `cargo test disk::` runs one engine and `cargo test
//! two_sessions` one scenario everywhere. Every test gets its own database.

#![allow(dead_code)]

use std::sync::Arc;

use folio::{
    ChangeVector, Document, DocumentStore, DocumentStoreBuilder, EngineRef, SqliteEngine,
    SqliteOptions,
};
use serde::{Deserialize, Serialize};

/// Which engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The embedded engine in memory.
    Memory,
    /// The embedded engine on disk, in a temporary directory.
    Disk,
}

/// One test's database.
pub struct Harness {
    pub kind: EngineKind,
    dir: tempfile::TempDir,
    /// The in-memory engine: shared by every store of the test, since a
    /// second in-memory engine would be a different database.
    memory: Option<EngineRef>,
}

impl Harness {
    pub async fn new(kind: EngineKind) -> Self {
        let memory = match kind {
            EngineKind::Memory => Some(Arc::new(
                SqliteEngine::in_memory(SqliteOptions::default())
                    .expect("an in-memory engine opens"),
            ) as EngineRef),
            EngineKind::Disk => None,
        };
        Harness {
            kind,
            dir: tempfile::tempdir().expect("a temporary directory"),
            memory,
        }
    }

    /// A builder pointed at this test's database; add settings, then open.
    pub fn builder(&self) -> DocumentStoreBuilder {
        match &self.memory {
            Some(engine) => DocumentStore::builder().engine(engine.clone()),
            None => DocumentStore::builder().path(self.dir.path()),
        }
    }

    /// A store with default settings.
    pub async fn store(&self) -> DocumentStore {
        self.builder().open().await.expect("the store opens")
    }

    /// The embedded database file, for tests that open it directly (disk only).
    pub fn database_file(&self) -> Option<std::path::PathBuf> {
        (self.kind == EngineKind::Disk).then(|| {
            self.dir
                .path()
                .join(format!("{}.sqlite", folio::DEFAULT_DATABASE))
        })
    }

    /// Whether closing and opening the database again keeps its contents.
    pub fn persists(&self) -> bool {
        self.kind == EngineKind::Disk
    }
}

/// Instantiates scenarios (`async fn(Harness)` in the calling module) for
/// every engine.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Memory).await).await;
                }
            )*
        }
        mod disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Disk).await).await;
                }
            )*
        }
    };
}

// ---- the document types of the suite ----------------------------------------

/// Opted in to concurrency checks, with change-vector and revision fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(collection = "people", optimistic_concurrency)]
pub struct Person {
    #[folio(id)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub age: u32,
    #[folio(change_vector)]
    #[serde(skip)]
    pub change_vector: Option<ChangeVector>,
    #[folio(revision)]
    #[serde(skip)]
    pub revision: u64,
}

impl Person {
    pub fn new(id: &str, name: &str) -> Self {
        Person {
            id: id.into(),
            name: name.into(),
            age: 0,
            change_vector: None,
            revision: 0,
        }
    }
}

/// No opt-in and no change-vector field: last write wins unless a session
/// turns checks on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
pub struct Note {
    pub id: String,
    pub text: String,
}

impl Note {
    pub fn new(id: &str, text: &str) -> Self {
        Note {
            id: id.into(),
            text: text.into(),
        }
    }
}

/// Opted in, no change-vector field (versions come from the session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(optimistic_concurrency)]
pub struct Account {
    pub id: String,
    pub balance: i64,
}

/// A counter for read-modify-write tests; no opt-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
pub struct Counter {
    pub id: String,
    pub value: u64,
}

/// Asserts that `result` is a concurrency error and returns its conflicts.
pub fn conflicts<T: std::fmt::Debug>(result: folio::Result<T>) -> Vec<folio::Conflict> {
    match result {
        Err(folio::Error::Concurrency(error)) => error.into_conflicts(),
        other => panic!("expected a concurrency error, got {other:?}"),
    }
}

/// Stores `docs` in a fresh session with checks disabled (blind writes:
/// last write wins) and saves.
pub async fn seed<T: Document>(store: &DocumentStore, docs: Vec<T>) {
    let mut session = store.open_session_with(folio::SessionOptions {
        concurrency_checks: folio::ConcurrencyChecks::Disabled,
        ..folio::SessionOptions::default()
    });
    for doc in docs {
        session.store(doc).expect("a valid document");
    }
    session.save_changes().await.expect("seeding saves");
}
