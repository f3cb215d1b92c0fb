//! Session throughput on the embedded engine, durable commits.
//!
//! * `update/folio_32_sessions`: 32 concurrent tasks, each doing
//!   read-modify-write in its own session with version checks on (load by
//!   id, change a field, `save_changes`: one conditional update), on
//!   uniformly random ids of a 100,000-document database of ~300-byte
//!   documents.
//! * `update/sqlite_txn_per_update` (reference): the same conditional
//!   update in raw SQLite, one durable transaction per update, from one
//!   thread (SQLite has one writer).
//! * `update/postgres_32_sessions`: the same read-modify-write on the
//!   PostgreSQL engine (32 pooled connections), against the server named by
//!   `FOLIO_BENCH_POSTGRES` (a URL) or else a throwaway cluster.
//!   `benches/reference/pgbench_update.sh --folio` runs it beside pgbench on
//!   one server.
//! * `load/folio_single_task`: one task loading random documents by id.
//!
//! Run: `cargo bench -p folio-benches`. Results go into BENCHMARKS.md.

#![allow(missing_docs)]

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use folio::{ConcurrencyChecks, Document, DocumentStore, SessionOptions};
use serde::{Deserialize, Serialize};

/// Allocates with mimalloc, as the `folio` binary does (an application
/// embedding Folio chooses its own allocator; BENCHMARKS.md gives the
/// figures with glibc's too). `main` gives SQLite mimalloc too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOCUMENTS: u64 = 100_000;
const CLIENTS: u64 = 32;

#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[folio(collection = "accounts")]
struct BenchDoc {
    id: String,
    owner: String,
    email: String,
    address: Address,
    tags: Vec<String>,
    balance: i64,
    visits: u64,
    note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    postcode: String,
}

fn document(n: u64) -> BenchDoc {
    BenchDoc {
        id: document_id(n),
        owner: format!("Owner Number {n}"),
        email: format!("owner{n}@example.com"),
        address: Address {
            street: format!("{} Long Street Name", n % 997),
            city: ["Oslo", "Lyon", "Porto", "Turku"][(n % 4) as usize].into(),
            postcode: format!("{:05}", n % 99_991),
        },
        tags: vec![
            "customer".into(),
            format!("segment-{}", n % 17),
            "active".into(),
        ],
        balance: (n as i64 * 7919) % 100_000,
        visits: 0,
        note: "x".repeat(80),
    }
}

fn document_id(n: u64) -> String {
    format!("accounts/{n:07}")
}

/// A tiny xorshift generator: uniform ids without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn document(&mut self) -> u64 {
        self.next() % DOCUMENTS
    }
}

async fn populated_store(dir: &std::path::Path) -> DocumentStore {
    populate(DocumentStore::open(dir).await.expect("store opens")).await
}

async fn populated_postgres_store() -> DocumentStore {
    let url = std::env::var("FOLIO_BENCH_POSTGRES").unwrap_or_else(|_| {
        folio_postgres::testing::TestCluster::shared()
            .url()
            .to_owned()
    });
    let database = format!("bench_{}", std::process::id());
    let options = folio::PgOptions {
        max_connections: CLIENTS as usize,
        ..folio::PgOptions::default()
    };
    let engine = folio::PgEngine::connect(&url, &database, options)
        .await
        .expect("PostgreSQL engine connects");
    populate(DocumentStore::from_engine(std::sync::Arc::new(engine))).await
}

async fn populate(store: DocumentStore) -> DocumentStore {
    let json_size = serde_json::to_string(&document(12_345))
        .expect("json")
        .len();
    eprintln!("populating {DOCUMENTS} documents of ~{json_size} bytes");
    let started = Instant::now();
    for chunk in 0..DOCUMENTS / 1000 {
        let mut session = store.open_session();
        for n in chunk * 1000..(chunk + 1) * 1000 {
            session.store(document(n)).expect("valid");
        }
        session.save_changes().await.expect("populate");
    }
    eprintln!("populated in {:.1?}", started.elapsed());
    store
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    // Setup happens on the first call of each closure (criterion calls a
    // closure many times, and only for the benchmarks a filter selects).
    let setup = OnceCell::new();
    group.bench_function("folio_32_sessions", |b| {
        let (runtime, _dir, store) = setup.get_or_init(|| {
            let runtime = runtime();
            let dir = tempfile::tempdir().expect("temp dir");
            let store = runtime.block_on(populated_store(dir.path()));
            (runtime, dir, store)
        });
        b.to_async(runtime).iter_custom(|iterations| {
            let store = store.clone();
            async move { concurrent_updates(&store, iterations).await }
        });
    });

    let setup = OnceCell::new();
    group.bench_function("postgres_32_sessions", |b| {
        let (runtime, store) = setup.get_or_init(|| {
            let runtime = runtime();
            let store = runtime.block_on(populated_postgres_store());
            (runtime, store)
        });
        b.to_async(runtime).iter_custom(|iterations| {
            let store = store.clone();
            async move { concurrent_updates(&store, iterations).await }
        });
    });

    // Reference: raw SQLite, one durable transaction per conditional update.
    let setup = OnceCell::new();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    group.bench_function("sqlite_txn_per_update", |b| {
        let (_dir, connection) = setup.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let connection = reference_database(&dir.path().join("reference.sqlite"));
            (dir, connection)
        });
        b.iter(|| {
            let n = random.document();
            let id = document_id(n);
            let body = serde_json::to_string(&document(n)).expect("json");
            let transaction = connection.unchecked_transaction().expect("begin");
            let version: i64 = transaction
                .prepare_cached("SELECT version FROM docs WHERE id = ?1")
                .and_then(|mut s| s.query_row([&id], |row| row.get(0)))
                .expect("select");
            let changed = transaction
                .prepare_cached("UPDATE docs SET body = ?3, version = version + 1 WHERE id = ?1 AND version = ?2")
                .and_then(|mut s| s.execute(rusqlite::params![id, version, body]))
                .expect("update");
            assert_eq!(changed, 1);
            transaction.commit().expect("commit");
        });
    });
    group.finish();
}

/// Runs `iterations` read-modify-write saves spread over 32 concurrent
/// sessions and returns the elapsed time, scaled to exactly `iterations`.
async fn concurrent_updates(store: &DocumentStore, iterations: u64) -> Duration {
    let per_client = iterations.div_ceil(CLIENTS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut random =
                    Random(0x2545_f491_4f6c_dd1d ^ (client + 1).wrapping_mul(0x9e37_79b9));
                let mut conflicts = 0u64;
                for _ in 0..per_client {
                    let id = document_id(random.document());
                    loop {
                        let mut session = store.open_session_with(SessionOptions {
                            concurrency_checks: ConcurrencyChecks::Writes,
                            ..SessionOptions::default()
                        });
                        let mut doc: BenchDoc =
                            session.load(&id).await.expect("load").expect("exists");
                        doc.visits += 1;
                        session.store(doc).expect("valid");
                        match session.save_changes().await {
                            Ok(()) => break,
                            Err(folio::Error::Concurrency(_)) => conflicts += 1,
                            Err(error) => panic!("save failed: {error}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = start.elapsed();
    elapsed.mul_f64(iterations as f64 / (per_client * CLIENTS) as f64)
}

fn reference_database(path: &std::path::Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE docs (id TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL);",
        )
        .expect("schema");
    let transaction = connection.unchecked_transaction().expect("begin");
    for n in 0..DOCUMENTS {
        transaction
            .execute(
                "INSERT INTO docs (id, version, body) VALUES (?1, 1, ?2)",
                rusqlite::params![
                    document_id(n),
                    serde_json::to_string(&document(n)).expect("json")
                ],
            )
            .expect("insert");
    }
    transaction.commit().expect("commit");
    connection
}

fn loads(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group.throughput(Throughput::Elements(1));
    let setup = OnceCell::new();
    let ids: Vec<String> = (0..DOCUMENTS).map(document_id).collect();
    let mut random = Random(0x1234_5678_9abc_def1);
    group.bench_function("folio_single_task", |b| {
        let (runtime, _dir, store) = setup.get_or_init(|| {
            let runtime = runtime();
            let dir = tempfile::tempdir().expect("temp dir");
            let store = runtime.block_on(populated_store(dir.path()));
            (runtime, dir, store)
        });
        b.to_async(runtime).iter(|| {
            let id = &ids[random.document() as usize];
            async move {
                let mut session = store.query_session();
                let doc: BenchDoc = session.load(id).await.expect("load").expect("exists");
                doc
            }
        });
    });
    group.finish();
}

criterion_group!(benches, updates, loads);

/// `criterion_main!`, after handing SQLite's allocations to mimalloc as the
/// `folio` binary does (before any thread opens a database).
fn main() {
    folio_sqlite::allocate_with_mimalloc();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
