//! The clients of a torture run: the documents they write, the operations
//! they mix, and what they record of each.
//!
//! Every operation goes through `folio`'s sessions, as an application's
//! would. The mix, drawn per operation from a seeded generator:
//!
//! | share | operation |
//! | --- | --- |
//! | 25 % | a transfer between two accounts (`retry_on_conflict`, one batch) |
//! | 15 % | an increment of a counter (`retry_on_conflict`) |
//! | 15 % | a read-modify-write of a register (one attempt, `Writes` checks) |
//! | 10 % | a batch over 2–5 registers (creating the missing ones) |
//! | 10 % | a delete of a register, or its creation when it is missing |
//! | 10 % | a `WritesAndReads` session: one register written from another read |
//! | 10 % | a bank audit by query (one statement: one snapshot on every engine) |
//! | 5 % | a bank audit by `load_many`, validated by saving its read guards |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use folio::{
    ChangeVector, ConcurrencyChecks, ConcurrencyError, Document, DocumentStore, Error, Result,
    Session, SessionOptions,
};
use serde::{Deserialize, Serialize};

use super::Stop;
use super::history::{
    Attempt, DocKey, Effect, History, Invariant, Kind, Outcome, Reported, Tick, Token, Version,
    Violation, Write,
};

/// Attempts of one `retry_on_conflict` before it gives up (a conflict).
const MAX_ATTEMPTS: usize = 50;

/// The balance every account starts with.
pub(crate) const OPENING_BALANCE: i64 = 1_000;

/// How many error messages a run keeps for its report.
const ERROR_SAMPLES: usize = 20;

/// The documents of a run: every kind has the same shape.
pub(crate) trait Cell: Document + Clone {
    const KIND: Kind;

    fn new(id: String, run: String, token: Token, value: i64) -> Self;

    fn value(&self) -> i64;

    /// The version the session loaded (`None` before the first save).
    fn version(&self) -> Option<Version>;

    /// Makes the document the write of attempt `token`.
    fn set(&mut self, token: Token, value: i64);
}

/// One kind of cell: a document type of its own collection (the collection
/// is an attribute of the type), the same fields for every kind.
macro_rules! cell {
    ($(#[$doc:meta])* $type:ident, $collection:literal, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Serialize, Deserialize, Document)]
        #[folio(collection = $collection)]
        pub(crate) struct $type {
            id: String,
            run: String,
            token: Token,
            value: i64,
            #[folio(change_vector)]
            #[serde(skip)]
            change_vector: Option<ChangeVector>,
        }

        impl Cell for $type {
            const KIND: Kind = $kind;

            fn new(id: String, run: String, token: Token, value: i64) -> Self {
                $type {
                    id,
                    run,
                    token,
                    value,
                    change_vector: None,
                }
            }

            fn value(&self) -> i64 {
                self.value
            }

            fn version(&self) -> Option<Version> {
                self.change_vector.clone().map(|change_vector| Version {
                    change_vector,
                    token: self.token,
                    value: self.value,
                })
            }

            fn set(&mut self, token: Token, value: i64) {
                self.token = token;
                self.value = value;
            }
        }
    };
}

cell!(
    /// A bank account.
    Account,
    "torture_accounts",
    Kind::Account
);
cell!(
    /// A counter.
    Counter,
    "torture_counters",
    Kind::Counter
);
cell!(
    /// A register.
    Register,
    "torture_registers",
    Kind::Register
);

/// How many documents of each kind a run has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) accounts: u32,
    pub(crate) counters: u32,
    pub(crate) registers: u32,
}

impl Shape {
    pub(crate) fn count(self, kind: Kind) -> u32 {
        match kind {
            Kind::Account => self.accounts,
            Kind::Counter => self.counters,
            Kind::Register => self.registers,
        }
    }

    /// What the accounts hold together, always.
    pub(crate) fn bank_total(self) -> i64 {
        i64::from(self.accounts) * OPENING_BALANCE
    }
}

/// What a run counts, updated by every client as it goes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) operations: AtomicU64,
    pub(crate) acknowledged_writes: AtomicU64,
    pub(crate) acknowledged_batches: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) in_doubt: AtomicU64,
    pub(crate) transfers: AtomicU64,
    pub(crate) increments: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) audits: AtomicU64,
    pub(crate) torn_reads_caught: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What the clients of a run share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) run: String,
    pub(crate) shape: Shape,
    pub(crate) max_operations: Option<u64>,
    pub(crate) counters: Counters,
    next_token: AtomicU64,
    /// The run's clock (`history::Tick`).
    clock: AtomicU64,
    violations: Mutex<Vec<Violation>>,
    error_samples: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(run: String, shape: Shape, max_operations: Option<u64>) -> Self {
        Shared {
            run,
            shape,
            max_operations,
            counters: Counters::default(),
            next_token: AtomicU64::new(1),
            clock: AtomicU64::new(1),
            violations: Mutex::new(Vec::new()),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn next_token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// The next moment of the run's clock.
    pub(crate) fn tick(&self) -> Tick {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn violation(&self, violation: Violation) {
        lock(&self.violations).push(violation);
    }

    /// The violations found while the clients ran.
    pub(crate) fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    pub(crate) fn violation_count(&self) -> usize {
        lock(&self.violations).len()
    }

    fn error(&self, error: &Error) {
        add(&self.counters.errors, 1);
        let mut samples = lock(&self.error_samples);
        if samples.len() < ERROR_SAMPLES {
            samples.push(error.to_string());
        }
    }

    /// The first few errors the clients met.
    pub(crate) fn error_samples(&self) -> Vec<String> {
        lock(&self.error_samples).clone()
    }

    fn exhausted(&self) -> bool {
        self.max_operations
            .is_some_and(|max| self.counters.operations.load(Ordering::Relaxed) >= max)
    }

    fn id(&self, kind: Kind, index: u32) -> String {
        kind.id(&self.run, index)
    }

    fn name(&self, key: DocKey) -> String {
        key.name(&self.run)
    }
}

/// A small, fast, seeded generator (xorshift64*, seeded through
/// splitmix64): the same seed gives every client the same sequence of
/// choices. The interleaving of the clients is the scheduler's.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        u32::try_from(((self.next_u64() >> 32) * u64::from(n)) >> 32).unwrap_or(0)
    }

    /// `count` distinct numbers below `n` (`count <= n`).
    fn distinct(&mut self, count: u32, n: u32) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(count as usize);
        while chosen.len() < count as usize {
            let candidate = self.below(n);
            if !chosen.contains(&candidate) {
                chosen.push(candidate);
            }
        }
        chosen
    }
}

/// The operations of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Transfer,
    Increment,
    Update,
    Batch,
    DeleteOrCreate,
    GuardedWrite,
    AuditByQuery,
    AuditByLoad,
}

/// The mix: each operation with its weight (out of 100).
const MIX: [(Op, u32); 8] = [
    (Op::Transfer, 25),
    (Op::Increment, 15),
    (Op::Update, 15),
    (Op::Batch, 10),
    (Op::DeleteOrCreate, 10),
    (Op::GuardedWrite, 10),
    (Op::AuditByQuery, 10),
    (Op::AuditByLoad, 5),
];

/// What the attempts of one `retry_on_conflict` recorded.
#[derive(Default)]
struct Tries {
    /// How often the closure ran.
    invocations: usize,
    /// The attempts that reached `save_changes`, in order.
    attempts: Vec<Attempt>,
    reads: Vec<(DocKey, Version)>,
}

/// One client: a task that runs operations until told to stop.
pub(crate) struct Client {
    store: DocumentStore,
    shared: Arc<Shared>,
    rng: Rng,
    history: History,
}

impl Client {
    pub(crate) fn new(store: DocumentStore, shared: Arc<Shared>, seed: u64) -> Self {
        Client {
            store,
            shared,
            rng: Rng::new(seed),
            history: History::default(),
        }
    }

    /// Runs operations until `stop`, backing off while they fail (a server
    /// that is restarting); returns what the client recorded.
    pub(crate) async fn run(mut self, stop: Stop) -> History {
        let mut failures_in_a_row = 0u32;
        while !stop.is_stopped() && !self.shared.exhausted() {
            let op = self.pick();
            let outcome = self.step(op).await;
            add(&self.shared.counters.operations, 1);
            match outcome {
                Ok(()) => failures_in_a_row = 0,
                Err(error) => {
                    self.shared.error(&error);
                    failures_in_a_row = failures_in_a_row.saturating_add(1);
                    let pause = 5u64 << failures_in_a_row.min(7);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        self.history
    }

    fn pick(&mut self) -> Op {
        let total: u32 = MIX.iter().map(|(_, weight)| weight).sum();
        let mut roll = self.rng.below(total);
        for (op, weight) in MIX {
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        Op::AuditByQuery
    }

    async fn step(&mut self, op: Op) -> Result<()> {
        let shape = self.shared.shape;
        match op {
            Op::Transfer => {
                let accounts = self.rng.distinct(2, shape.accounts);
                let amount = i64::from(1 + self.rng.below(100));
                self.retried::<Account>(accounts, move |values| {
                    values[0] -= amount;
                    values[1] += amount;
                })
                .await?;
                add(&self.shared.counters.transfers, 1);
            }
            Op::Increment => {
                let counter = self.rng.below(shape.counters);
                self.retried::<Counter>(vec![counter], |values| values[0] += 1)
                    .await?;
                add(&self.shared.counters.increments, 1);
            }
            Op::Update => {
                let register = self.rng.below(shape.registers);
                self.update_registers(vec![register], None).await?;
            }
            Op::Batch => {
                let size = (2 + self.rng.below(4)).min(shape.registers);
                let registers = self.rng.distinct(size, shape.registers);
                self.update_registers(registers, None).await?;
            }
            Op::DeleteOrCreate => {
                let register = self.rng.below(shape.registers);
                self.delete_or_create(register).await?;
            }
            Op::GuardedWrite if shape.registers >= 2 => {
                let pair = self.rng.distinct(2, shape.registers);
                self.update_registers(vec![pair[0]], Some(pair[1])).await?;
            }
            Op::GuardedWrite => {
                let register = self.rng.below(shape.registers);
                self.update_registers(vec![register], None).await?;
            }
            Op::AuditByQuery => self.audit_by_query().await?,
            Op::AuditByLoad => self.audit_by_load().await?,
        }
        Ok(())
    }

    fn observe(&mut self, key: DocKey, version: Option<Version>) {
        if let Some(version) = version {
            let at = self.shared.tick();
            if let Some(violation) = self.history.observe(key, &version, at, &self.shared.run) {
                self.shared.violation(violation);
            }
        }
    }

    /// Records an attempt with the outcome of its `save_changes`, and
    /// counts it; errors other than conflicts are returned.
    fn settle(&mut self, attempt: Attempt, saved: Result<()>) -> Result<()> {
        let (outcome, returned) = match saved {
            Ok(()) => (Outcome::Acknowledged, Ok(())),
            Err(Error::Concurrency(error)) => {
                self.reported(&error);
                (Outcome::Refused, Ok(()))
            }
            Err(error) => (Outcome::InDoubt, Err(error)),
        };
        self.record(attempt, outcome);
        returned
    }

    /// Records the versions a conflict reported as stored.
    fn reported(&mut self, error: &ConcurrencyError) {
        let at = self.shared.tick();
        for conflict in error.conflicts() {
            let (Some(change_vector), Some(key)) = (
                conflict.actual(),
                DocKey::parse(conflict.collection(), conflict.id(), &self.shared.run),
            ) else {
                continue;
            };
            self.history.reported.push(Reported {
                key,
                change_vector: change_vector.clone(),
                at,
            });
        }
    }

    fn record(&mut self, mut attempt: Attempt, outcome: Outcome) {
        let counters = &self.shared.counters;
        match outcome {
            Outcome::Acknowledged => {
                add(&counters.acknowledged_batches, 1);
                add(&counters.acknowledged_writes, attempt.writes.len() as u64);
                let deletes = attempt
                    .writes
                    .iter()
                    .filter(|write| write.effect == Effect::Delete)
                    .count();
                add(&counters.deletes, deletes as u64);
            }
            Outcome::Refused => add(&counters.conflicts, 1),
            Outcome::InDoubt => add(&counters.in_doubt, 1),
        }
        attempt.outcome = outcome;
        attempt.settled = self.shared.tick();
        self.history.attempts.push(attempt);
    }

    /// A read-modify-write of documents `indexes` of kind `T` with
    /// `retry_on_conflict`: `change` turns the values read into the values
    /// written, all in one batch.
    async fn retried<T: Cell>(
        &mut self,
        indexes: Vec<u32>,
        change: impl Fn(&mut [i64]) + Send + Sync + 'static,
    ) -> Result<()> {
        let tries = Arc::new(Mutex::new(Tries::default()));
        let ids: Vec<String> = indexes
            .iter()
            .map(|&i| self.shared.id(T::KIND, i))
            .collect();
        let saved = self
            .store
            .retry_on_conflict(MAX_ATTEMPTS, {
                let tries = tries.clone();
                let shared = self.shared.clone();
                async move |session: &mut Session| {
                    lock(&tries).invocations += 1;
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let loaded = session.load_many::<T>(&refs).await?;
                    let mut documents = Vec::with_capacity(loaded.len());
                    for (&index, document) in indexes.iter().zip(loaded) {
                        let key = DocKey::new(T::KIND, index);
                        match document {
                            Some(document) => documents.push((key, document)),
                            None => {
                                // Accounts and counters are never deleted.
                                shared.violation(Violation {
                                    invariant: Invariant::LostWrite,
                                    document: Some(shared.name(key)),
                                    detail: "the document is missing: it was created and \
                                             never deleted"
                                        .into(),
                                });
                                return Ok(());
                            }
                        }
                    }
                    let token = shared.next_token();
                    let mut values: Vec<i64> = documents.iter().map(|(_, d)| d.value()).collect();
                    change(&mut values);
                    let mut writes = Vec::with_capacity(documents.len());
                    let mut reads = Vec::with_capacity(documents.len());
                    for ((key, mut document), value) in documents.into_iter().zip(values) {
                        let expected = document.version();
                        reads.extend(expected.clone().map(|version| (key, version)));
                        document.set(token, value);
                        session.store(document)?;
                        writes.push(Write {
                            key,
                            expected,
                            effect: Effect::Put { value },
                            written: None,
                        });
                    }
                    let mut tries = lock(&tries);
                    tries.reads.extend(reads);
                    tries.attempts.push(Attempt {
                        token,
                        writes,
                        outcome: Outcome::InDoubt,
                        // Saved as soon as this returns.
                        started: shared.tick(),
                        settled: Tick::MAX,
                    });
                    Ok(())
                }
            })
            .await;
        let tries = std::mem::take(&mut *lock(&tries));
        for (key, version) in tries.reads {
            self.observe(key, Some(version));
        }
        // Every attempt but the last that reached its save was refused:
        // `retry_on_conflict` tries again only after a conflict.
        let last_saved = tries.attempts.len() == tries.invocations;
        let mut attempts = tries.attempts;
        let last = if last_saved { attempts.pop() } else { None };
        for attempt in attempts {
            self.record(attempt, Outcome::Refused);
        }
        match last {
            Some(attempt) => self.settle(attempt, saved),
            // The last run of the closure failed before its save.
            None => match saved {
                Err(error) if !matches!(error, Error::Concurrency(_)) => Err(error),
                _ => Ok(()),
            },
        }
    }

    /// One session (one attempt): each register of `written` is updated
    /// (or created when missing); with `guarded`, the session checks
    /// `WritesAndReads` and adds the guarded register's value, so the write
    /// depends on a document it only read.
    async fn update_registers(&mut self, written: Vec<u32>, guarded: Option<u32>) -> Result<()> {
        let checks = match guarded {
            Some(_) => ConcurrencyChecks::WritesAndReads,
            None => ConcurrencyChecks::Writes,
        };
        let mut session = self.store.open_session_with(SessionOptions {
            concurrency_checks: checks,
            ..SessionOptions::default()
        });
        let indexes: Vec<u32> = written.iter().copied().chain(guarded).collect();
        let ids: Vec<String> = indexes
            .iter()
            .map(|&i| self.shared.id(Kind::Register, i))
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let loaded = session.load_many::<Register>(&refs).await?;
        for (&index, document) in indexes.iter().zip(&loaded) {
            let version = document.as_ref().and_then(Register::version);
            self.observe(DocKey::new(Kind::Register, index), version);
        }
        let bonus = match guarded {
            Some(_) => loaded
                .last()
                .and_then(Option::as_ref)
                .map_or(0, Cell::value),
            None => 0,
        };
        let token = self.shared.next_token();
        let mut writes = Vec::with_capacity(written.len());
        for ((&index, id), document) in written.iter().zip(&ids).zip(loaded) {
            let (expected, document) = match document {
                Some(document) => (document.version(), document),
                None => (
                    None,
                    Register::new(id.clone(), self.shared.run.clone(), token, 0),
                ),
            };
            let value = expected.as_ref().map_or(0, |version| version.value + 1) + bonus;
            let mut document = document;
            document.set(token, value);
            session.store(document)?;
            writes.push(Write {
                key: DocKey::new(Kind::Register, index),
                expected,
                effect: Effect::Put { value },
                written: None,
            });
        }
        let started = self.shared.tick();
        let saved = session.save_changes().await;
        if saved.is_ok() {
            for (write, id) in writes.iter_mut().zip(&ids) {
                write.written = session
                    .change_vector_for::<Register>(id)
                    .await
                    .ok()
                    .flatten();
            }
        }
        self.settle(
            Attempt {
                token,
                writes,
                outcome: Outcome::InDoubt,
                started,
                settled: Tick::MAX,
            },
            saved,
        )
    }

    /// Deletes register `index` (checked against the version read), or
    /// creates it when it is missing.
    async fn delete_or_create(&mut self, index: u32) -> Result<()> {
        let mut session = self.store.open_session_with(SessionOptions {
            concurrency_checks: ConcurrencyChecks::Writes,
            ..SessionOptions::default()
        });
        let key = DocKey::new(Kind::Register, index);
        let id = self.shared.id(Kind::Register, index);
        let loaded = session.load::<Register>(&id).await?;
        let token = self.shared.next_token();
        let write = match loaded {
            Some(document) => {
                let expected = document.version();
                self.observe(key, expected.clone());
                session.delete::<Register>(&id)?;
                Write {
                    key,
                    expected,
                    effect: Effect::Delete,
                    written: None,
                }
            }
            None => {
                session.store(Register::new(id.clone(), self.shared.run.clone(), token, 0))?;
                Write {
                    key,
                    expected: None,
                    effect: Effect::Put { value: 0 },
                    written: None,
                }
            }
        };
        let started = self.shared.tick();
        let saved = session.save_changes().await;
        let mut write = write;
        if saved.is_ok() && write.effect != Effect::Delete {
            write.written = session
                .change_vector_for::<Register>(&id)
                .await
                .ok()
                .flatten();
        }
        self.settle(
            Attempt {
                token,
                writes: vec![write],
                outcome: Outcome::InDoubt,
                started,
                settled: Tick::MAX,
            },
            saved,
        )
    }

    /// Reads every account with one query and checks the total.
    async fn audit_by_query(&mut self) -> Result<()> {
        let mut session = self.store.query_session();
        let accounts: Vec<Account> = session
            .query::<Account>()
            .where_eq("run", self.shared.run.as_str())
            .to_list()
            .await?;
        add(&self.shared.counters.audits, 1);
        let mut found = vec![None; self.shared.shape.accounts as usize];
        for account in accounts {
            let index = (0..self.shared.shape.accounts)
                .find(|&i| self.shared.id(Kind::Account, i) == account.id);
            match index {
                Some(index) => found[index as usize] = Some(account),
                None => self.shared.violation(Violation {
                    invariant: Invariant::Bank,
                    document: Some(format!("{}/{}", Account::COLLECTION, account.id)),
                    detail: "a query for the run's accounts returned an account the run never \
                             created"
                        .into(),
                }),
            }
        }
        for (index, account) in found.iter().enumerate() {
            let key = DocKey::new(Kind::Account, index as u32);
            self.observe(key, account.as_ref().and_then(Account::version));
        }
        if let Err(detail) = bank_total(&balances(&found), self.shared.shape) {
            self.shared.violation(Violation {
                invariant: Invariant::Bank,
                document: None,
                detail: format!("a query of all accounts (one snapshot) {detail}"),
            });
        }
        Ok(())
    }

    /// Reads every account with `load_many` in a `WritesAndReads` session,
    /// then saves it: the save sends a read guard per account, so it
    /// succeeds only if every account still has the version read. A read
    /// that is not one snapshot may see a wrong total; its save must fail.
    async fn audit_by_load(&mut self) -> Result<()> {
        let mut session = self.store.open_session_with(SessionOptions {
            concurrency_checks: ConcurrencyChecks::WritesAndReads,
            ..SessionOptions::default()
        });
        let ids: Vec<String> = (0..self.shared.shape.accounts)
            .map(|i| self.shared.id(Kind::Account, i))
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let accounts = session.load_many::<Account>(&refs).await?;
        add(&self.shared.counters.audits, 1);
        for (index, account) in accounts.iter().enumerate() {
            let key = DocKey::new(Kind::Account, index as u32);
            self.observe(key, account.as_ref().and_then(Account::version));
        }
        let total = bank_total(&balances(&accounts), self.shared.shape);
        match (session.save_changes().await, total) {
            (Ok(()), Ok(())) => Ok(()),
            (Ok(()), Err(detail)) => {
                self.shared.violation(Violation {
                    invariant: Invariant::Bank,
                    document: None,
                    detail: format!(
                        "a load_many of all accounts {detail}, and its read guards were \
                         accepted: the engine validated a read that was never the state"
                    ),
                });
                Ok(())
            }
            (Err(Error::Concurrency(error)), Err(_)) => {
                self.reported(&error);
                add(&self.shared.counters.torn_reads_caught, 1);
                Ok(())
            }
            (Err(Error::Concurrency(error)), Ok(())) => {
                self.reported(&error);
                add(&self.shared.counters.conflicts, 1);
                Ok(())
            }
            (Err(error), _) => Err(error),
        }
    }
}

/// `Ok` when the accounts' `balances` are all there and hold the bank's total; else what
/// is wrong, as the end of a sentence.
pub(crate) fn bank_total(balances: &[Option<i64>], shape: Shape) -> Result<(), String> {
    let missing = balances.iter().filter(|balance| balance.is_none()).count();
    if missing > 0 {
        return Err(format!(
            "found {missing} of {} accounts missing",
            shape.accounts
        ));
    }
    let total: i64 = balances.iter().flatten().sum();
    if total == shape.bank_total() {
        Ok(())
    } else {
        Err(format!(
            "saw a total of {total}, but the accounts always hold {}",
            shape.bank_total()
        ))
    }
}

fn balances(accounts: &[Option<Account>]) -> Vec<Option<i64>> {
    accounts
        .iter()
        .map(|account| account.as_ref().map(Cell::value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collections_are_the_kinds_collections() {
        assert_eq!(Account::COLLECTION, Kind::Account.collection());
        assert_eq!(Counter::COLLECTION, Kind::Counter.collection());
        assert_eq!(Register::COLLECTION, Kind::Register.collection());
    }

    #[test]
    fn the_generator_is_seeded_and_spreads() {
        let mut first = Rng::new(7);
        let mut second = Rng::new(7);
        let drawn: Vec<u32> = (0..1000).map(|_| first.below(10)).collect();
        assert_eq!(
            drawn,
            (0..1000).map(|_| second.below(10)).collect::<Vec<_>>()
        );
        for value in 0..10 {
            let count = drawn.iter().filter(|&&d| d == value).count();
            assert!(
                (50..150).contains(&count),
                "{value} drawn {count} times in 1000"
            );
        }
        let mut other = Rng::new(8);
        assert_ne!(
            drawn,
            (0..1000).map(|_| other.below(10)).collect::<Vec<_>>()
        );
        assert_eq!(Rng::new(1).distinct(5, 5).len(), 5);
    }

    #[test]
    fn the_mix_adds_up_to_one_hundred() {
        assert_eq!(MIX.iter().map(|(_, weight)| weight).sum::<u32>(), 100);
    }
}
