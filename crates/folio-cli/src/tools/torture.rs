//! `folio torture`: many clients mixing random reads and writes through
//! `folio`'s sessions, against one database, while invariants are checked
//! as they go and against the final state.
//!
//! # The invariants
//!
//! * **bank**: transfers move money between accounts in one batch; the total
//!   never changes, in any read, at any time, nor in the final state;
//! * **version chain**: for every document, the successful writes form one
//!   chain — each expected change vector is the one the previous success
//!   produced, and no two successes start from the same version;
//! * **no lost write**: every acknowledged write is in the final state, or
//!   was superseded by a later committed one (deletes included).
//!
//! How the history is recorded and judged is in `history.rs`; the mix of
//! operations in `workload.rs`.
//!
//! # Which reads are one snapshot
//!
//! The bank invariant holds "in any read" only for a read of all accounts
//! that sees one state. A query is one SQL statement on every engine, so one
//! snapshot (on a server, one request while the result fits a page of
//! 1000); the clients audit the total with a query and any other total is a
//! violation. `load_many` is one snapshot on PostgreSQL (one statement) but
//! not on the embedded engine: each id is a cache lookup or its own read
//! transaction, so a transfer can commit between two of them. So the
//! clients also audit with `load_many` in a `WritesAndReads` session and then
//! save it: the save sends a read guard per account, checked in one
//! transaction, so it succeeds only if every account still has the version
//! read — which makes that read a state that existed. A wrong total whose
//! save succeeds is a violation; a wrong total whose save is refused is a
//! torn read caught, counted (`torn_reads_caught`), not a violation.
//!
//! # Targets
//!
//! A run drives one database through one or more targets (each a
//! [`folio::Location`]); the clients are dealt to the targets in turn. Three
//! `folio serve --postgres` processes on one PostgreSQL are three `http://`
//! targets naming the same database. Only local targets are accepted
//! (loopback addresses, Unix sockets, files), and a run is bounded in time
//! (and optionally in operations). Each run writes its own documents (ids
//! carry a run id), so runs can share a database.

mod history;
mod workload;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use folio::{ConcurrencyChecks, Document, DocumentStore, FieldPath, Location, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use self::history::{Attempt, DocKey, Effect, FinalState, History, Kind, Outcome, Write};
pub use self::history::{Invariant, Violation};
use self::workload::{
    Account, Cell, Client, Counter, OPENING_BALANCE, Register, Shape, Shared, bank_total,
};
use crate::tools::target;

/// The most documents of one kind (one request of a remote read).
const MAX_DOCUMENTS: u32 = 1000;

/// How long reading the final state may keep failing (a server that is
/// coming back) before the run gives up.
const FINAL_READ_PATIENCE: Duration = Duration::from_secs(30);

/// The most violations of one invariant a report details (all are counted).
const DETAILED_VIOLATIONS: usize = 20;

/// The size and seed of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many clients run at once.
    pub clients: usize,
    /// The seed of the clients' choices.
    pub seed: u64,
    /// How many bank accounts (at least 2).
    pub accounts: u32,
    /// How many counters.
    pub counters: u32,
    /// How many registers (updated, batched, deleted, created again).
    pub registers: u32,
    /// Stop after this many operations in all (`None`: only time bounds the run).
    pub max_operations: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clients: 8,
            seed: 1,
            accounts: 8,
            counters: 4,
            registers: 32,
            max_operations: None,
        }
    }
}

impl Config {
    fn shape(&self) -> Result<Shape, String> {
        let within = |name: &str, value: u32, least: u32| {
            if (least..=MAX_DOCUMENTS).contains(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "{name} must be between {least} and {MAX_DOCUMENTS}, not {value}"
                ))
            }
        };
        if !(1..=1024).contains(&self.clients) {
            return Err(format!(
                "clients must be between 1 and 1024, not {}",
                self.clients
            ));
        }
        Ok(Shape {
            accounts: within("accounts", self.accounts, 2)?,
            counters: within("counters", self.counters, 1)?,
            registers: within("registers", self.registers, 1)?,
        })
    }
}

/// Tells the clients of a run to stop: when [`Stop::stop`] is called, or at
/// a deadline. Clients finish the operation they are in.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    stopped: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Stop {
    /// Stops only when told.
    pub fn new() -> Self {
        Stop::default()
    }

    /// Stops after `duration`, or when told.
    pub fn after(duration: Duration) -> Self {
        Stop {
            stopped: Arc::default(),
            deadline: Some(Instant::now() + duration),
        }
    }

    /// Stops now.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether the clients should stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// What the clients of a run did, so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Operations run (each one session, retries included, or one audit).
    pub operations: u64,
    /// Writes (puts and deletes) in acknowledged batches.
    pub acknowledged_writes: u64,
    /// Acknowledged batches (`save_changes` that returned `Ok`).
    pub acknowledged_batches: u64,
    /// Saves refused with a conflict (each attempt of a retry counts).
    pub conflicts: u64,
    /// Operations that failed otherwise (the engine or the network).
    pub errors: u64,
    /// Saves whose fate is unknown (they failed without a verdict).
    pub in_doubt: u64,
    /// Transfers done (each after its retries).
    pub transfers: u64,
    /// Counter increments done.
    pub increments: u64,
    /// Deletes acknowledged.
    pub deletes: u64,
    /// Reads of every account whose total was checked.
    pub audits: u64,
    /// `load_many` audits that saw a wrong total and whose read guards the
    /// engine then refused, as it must (not snapshot reads; not violations).
    pub torn_reads_caught: u64,
}

/// The outcome of a run: what was done, and every violation found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The targets, as given.
    pub targets: Vec<String>,
    /// How many clients ran.
    pub clients: usize,
    /// The seed of the clients' choices.
    pub seed: u64,
    /// The run id in the documents' ids.
    pub run: String,
    /// How long the clients ran, in seconds.
    pub seconds: f64,
    /// What the clients did.
    #[serde(flatten)]
    pub totals: Totals,
    /// How many violations were found (0 for a clean run).
    pub violations: usize,
    /// How many of each invariant.
    pub violations_by_invariant: BTreeMap<Invariant, usize>,
    /// The first violations of each invariant, in detail.
    pub violation_details: Vec<Violation>,
    /// The first errors the clients met.
    pub error_samples: Vec<String>,
}

/// One database under torture: its targets, the clients' shared state and
/// the history they recorded. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Torture {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<(String, DocumentStore)>,
    config: Config,
    shared: Arc<Shared>,
    history: Mutex<History>,
    rounds: AtomicU64,
    running: Mutex<Duration>,
}

impl std::fmt::Debug for Torture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torture")
            .field("run", &self.inner.shared.run)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Torture {
    /// Prepares a run on `targets` (label, store), which must all be one
    /// database: writes the accounts and counters through the first target
    /// and checks that every target sees them.
    pub async fn setup(
        targets: Vec<(String, DocumentStore)>,
        config: Config,
    ) -> Result<Torture, String> {
        let shape = config.shape()?;
        let Some((first_label, first)) = targets.first() else {
            return Err("a torture run needs at least one target".into());
        };
        let shared = Arc::new(Shared::new(
            run_id(config.seed),
            shape,
            config.max_operations,
        ));
        let run = shared.run.clone();
        let path = FieldPath::parse("run").map_err(|error| error.to_string())?;
        first
            .engine()
            .ensure_index(Account::COLLECTION, &path)
            .await
            .map_err(|error| format!("{first_label}: creating an index failed: {error}"))?;

        let mut session = first.open_session_with(SessionOptions {
            concurrency_checks: ConcurrencyChecks::Writes,
            ..SessionOptions::default()
        });
        let token = shared.next_token();
        let mut created = Vec::new();
        for (kind, value) in [(Kind::Account, OPENING_BALANCE), (Kind::Counter, 0)] {
            for index in 0..shape.count(kind) {
                let id = kind.id(&run, index);
                let stored = match kind {
                    Kind::Account => {
                        session.store(Account::new(id.clone(), run.clone(), token, value))
                    }
                    _ => session.store(Counter::new(id.clone(), run.clone(), token, value)),
                };
                stored.map_err(|error| error.to_string())?;
                created.push((DocKey::new(kind, index), id, value));
            }
        }
        session
            .save_changes()
            .await
            .map_err(|error| format!("{first_label}: writing the accounts failed: {error}"))?;
        let mut writes = Vec::with_capacity(created.len());
        for (key, id, value) in created {
            let written = match key.kind {
                Kind::Account => session.change_vector_for::<Account>(&id).await,
                _ => session.change_vector_for::<Counter>(&id).await,
            };
            writes.push(Write {
                key,
                expected: None,
                effect: Effect::Put { value },
                written: written.ok().flatten(),
            });
        }
        let mut history = History::default();
        history.attempts.push(Attempt {
            token,
            writes,
            outcome: Outcome::Acknowledged,
            started: 0,
            settled: 0,
        });

        for (label, store) in &targets {
            let mut session = store.query_session();
            let seen = session
                .query::<Account>()
                .where_eq("run", run.as_str())
                .count()
                .await
                .map_err(|error| format!("{label}: reading the accounts failed: {error}"))?;
            if seen != u64::from(shape.accounts) {
                return Err(format!(
                    "{label} sees {seen} of the {} accounts written through {first_label}: the \
                     targets of one run must be one database",
                    shape.accounts
                ));
            }
        }
        Ok(Torture {
            inner: Arc::new(Inner {
                targets,
                config,
                shared,
                history: Mutex::new(history),
                rounds: AtomicU64::new(0),
                running: Mutex::new(Duration::ZERO),
            }),
        })
    }

    /// Runs the clients until `stop` (or the run's operation bound), then
    /// adds what they recorded to the history. May be called again: the
    /// history goes on.
    pub async fn run(&self, stop: Stop) {
        let inner = &self.inner;
        let round = inner.rounds.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let clients: Vec<_> = (0..inner.config.clients)
            .map(|number| {
                let (_, store) = &inner.targets[number % inner.targets.len()];
                let seed = inner
                    .config
                    .seed
                    .wrapping_add(round.wrapping_mul(1_000_003))
                    .wrapping_add(number as u64);
                let client = Client::new(store.clone(), inner.shared.clone(), seed);
                tokio::spawn(client.run(stop.clone()))
            })
            .collect();
        for client in clients {
            match client.await {
                Ok(recorded) => {
                    let violations = lock(&inner.history).merge(recorded, &inner.shared.run);
                    for violation in violations {
                        inner.shared.violation(violation);
                    }
                }
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => inner.shared.violation(Violation {
                    invariant: Invariant::LostWrite,
                    document: None,
                    detail: format!("a client did not finish, its history is lost: {error}"),
                }),
            }
        }
        *lock(&inner.running) += started.elapsed();
    }

    /// What the clients did so far (also while they run).
    pub fn totals(&self) -> Totals {
        let counters = &self.inner.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            operations: get(&counters.operations),
            acknowledged_writes: get(&counters.acknowledged_writes),
            acknowledged_batches: get(&counters.acknowledged_batches),
            conflicts: get(&counters.conflicts),
            errors: get(&counters.errors),
            in_doubt: get(&counters.in_doubt),
            transfers: get(&counters.transfers),
            increments: get(&counters.increments),
            deletes: get(&counters.deletes),
            audits: get(&counters.audits),
            torn_reads_caught: get(&counters.torn_reads_caught),
        }
    }

    /// How many violations the clients found while they ran.
    pub fn violations_so_far(&self) -> usize {
        self.inner.shared.violation_count()
    }

    /// Reads the final state through every target (retrying while a target
    /// fails, e.g. a server coming back) and checks the whole history
    /// against it. Call it when no client runs. The violations it returns
    /// are not kept: each call judges the whole history again.
    pub async fn verify(&self) -> Result<Vec<Violation>, String> {
        let inner = &self.inner;
        let mut states = Vec::with_capacity(inner.targets.len());
        for (label, store) in &inner.targets {
            states.push((
                label.as_str(),
                read_final_state(store, &inner.shared).await?,
            ));
        }
        let history = lock(&inner.history);
        Ok(self.judge(&states, &history))
    }

    /// The run's clock now: a moment to cut the history at
    /// ([`Torture::verify_as_of`]).
    pub fn now(&self) -> u64 {
        self.inner.shared.tick()
    }

    /// Checks the history as it stood at `cut` ([`Torture::now`]) against
    /// the state `store` holds: the database as a power loss at `cut` left
    /// it. What no client knew before `cut` did not happen: attempts sent
    /// later are dropped, outcomes learned later are in doubt, reads and
    /// conflicts received later are dropped. Call it when no client runs.
    pub async fn verify_as_of(
        &self,
        cut: u64,
        store: &DocumentStore,
    ) -> Result<Vec<Violation>, String> {
        let state = read_final_state(store, &self.inner.shared).await?;
        let history = lock(&self.inner.history).before(cut);
        Ok(self.judge(&[("after the power loss", state)], &history))
    }

    /// How many saves were sent before `cut` and answered after it (in
    /// doubt after a power loss at `cut`).
    pub fn in_flight_at(&self, cut: u64) -> usize {
        lock(&self.inner.history)
            .attempts
            .iter()
            .filter(|attempt| attempt.started < cut && attempt.settled >= cut)
            .count()
    }

    /// Every change vector a client was shown before `cut`: none may name
    /// another version after a power loss at `cut` (a write after it must
    /// take a new one).
    pub fn change_vectors_shown_before(&self, cut: u64) -> HashSet<folio::ChangeVector> {
        lock(&self.inner.history).change_vectors_before(cut)
    }

    /// The violations of `history` against the final states read through
    /// each target (which must agree).
    fn judge(&self, states: &[(&str, FinalState)], history: &History) -> Vec<Violation> {
        let inner = &self.inner;
        let mut violations = Vec::new();
        let (first_label, first) = &states[0];
        for (label, state) in &states[1..] {
            let mut keys: Vec<&DocKey> = first.keys().collect();
            keys.sort();
            for key in keys {
                if state.get(key) != first.get(key) {
                    violations.push(Violation {
                        invariant: Invariant::Targets,
                        document: Some(key.name(&inner.shared.run)),
                        detail: format!(
                            "{first_label} reads {:?}, {label} reads {:?}",
                            first.get(key),
                            state.get(key)
                        ),
                    });
                }
            }
        }
        let balances: Vec<Option<i64>> = (0..inner.shared.shape.accounts)
            .map(|index| {
                let key = DocKey::new(Kind::Account, index);
                first
                    .get(&key)
                    .cloned()
                    .flatten()
                    .map(|version| version.value)
            })
            .collect();
        if let Err(detail) = bank_total(&balances, inner.shared.shape) {
            violations.push(Violation {
                invariant: Invariant::Bank,
                document: None,
                detail: format!("the final state {detail}"),
            });
        }
        violations.extend(history::check(history, first, &inner.shared.run));
        violations
    }

    /// Verifies the final state ([`Torture::verify`]) and reports the run.
    pub async fn finish(&self) -> Result<Report, String> {
        let found = self.verify().await?;
        let inner = &self.inner;
        let mut violations = inner.shared.violations();
        violations.extend(found);
        let mut by_invariant = BTreeMap::new();
        let mut details = Vec::new();
        for violation in violations {
            let count: &mut usize = by_invariant.entry(violation.invariant).or_default();
            *count += 1;
            if *count <= DETAILED_VIOLATIONS {
                details.push(violation);
            }
        }
        Ok(Report {
            targets: inner
                .targets
                .iter()
                .map(|(label, _)| label.clone())
                .collect(),
            clients: inner.config.clients,
            seed: inner.config.seed,
            run: inner.shared.run.clone(),
            seconds: lock(&inner.running).as_secs_f64(),
            totals: self.totals(),
            violations: by_invariant.values().sum(),
            violations_by_invariant: by_invariant,
            violation_details: details,
            error_samples: inner.shared.error_samples(),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A run id: unique enough that runs sharing a database do not meet.
fn run_id(seed: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mixed = workload::Rng::new(nanos ^ seed ^ (u64::from(std::process::id()) << 40)).next_u64();
    format!("{:012x}", mixed >> 16)
}

/// Every document of the run as `store` reads it now.
async fn read_final_state(store: &DocumentStore, shared: &Shared) -> Result<FinalState, String> {
    let deadline = Instant::now() + FINAL_READ_PATIENCE;
    loop {
        let mut state = FinalState::new();
        let read = async {
            read_kind::<Account>(store, shared, &mut state).await?;
            read_kind::<Counter>(store, shared, &mut state).await?;
            read_kind::<Register>(store, shared, &mut state).await
        };
        match read.await {
            Ok(()) => return Ok(state),
            Err(error) if Instant::now() >= deadline => {
                return Err(format!("reading the final state failed: {error}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn read_kind<T: Cell>(
    store: &DocumentStore,
    shared: &Shared,
    state: &mut FinalState,
) -> folio::Result<()> {
    let count = shared.shape.count(T::KIND);
    let ids: Vec<String> = (0..count).map(|i| T::KIND.id(&shared.run, i)).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let documents = store.query_session().load_many::<T>(&refs).await?;
    for (index, document) in (0..count).zip(documents) {
        state.insert(
            DocKey::new(T::KIND, index),
            document.as_ref().and_then(Cell::version),
        );
    }
    Ok(())
}

/// `folio torture`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to drive: embedded:PATH, memory:, postgres:URL or
    /// http://HOST:PORT/db/NAME (local only). Repeat it to deal the clients
    /// over several targets, which must be one database (e.g. three servers
    /// on one PostgreSQL).
    #[arg(long = "target", required = true, value_name = "TARGET", value_parser = target::parse)]
    pub targets: Vec<Location>,
    /// How many clients run at once.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long the clients run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many operations in all.
    #[arg(long)]
    pub max_operations: Option<u64>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// The seed of the clients' choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The database of embedded and PostgreSQL targets.
    #[arg(long, default_value = "torture")]
    pub database: String,
    /// How many bank accounts.
    #[arg(long, default_value_t = 8)]
    pub accounts: u32,
    /// How many counters.
    #[arg(long, default_value_t = 4)]
    pub counters: u32,
    /// How many registers.
    #[arg(long, default_value_t = 32)]
    pub registers: u32,
}

/// The longest run, in seconds (a day).
const MAX_DURATION: u64 = 86_400;

/// Runs `folio torture`: prints the report (JSON or a summary) and returns
/// whether the run was clean; `Err` when it could not run.
pub async fn command(args: Args) -> Result<bool, String> {
    if !(1..=MAX_DURATION).contains(&args.duration) {
        return Err(format!(
            "--duration must be between 1 and {MAX_DURATION} seconds"
        ));
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    });
    let config = Config {
        clients: args.clients,
        seed,
        accounts: args.accounts,
        counters: args.counters,
        registers: args.registers,
        max_operations: args.max_operations,
    };
    config.shape()?;
    let mut targets = Vec::with_capacity(args.targets.len());
    for target in &args.targets {
        ensure_local(target)?;
        let store = target::open(target, &args.database).await?;
        targets.push((target.to_string(), store));
    }
    let torture = Torture::setup(targets, config).await?;

    let stop = Stop::after(Duration::from_secs(args.duration));
    let progress = ProgressBar::new(args.duration).with_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = tokio::spawn({
        let torture = torture.clone();
        let progress = progress.clone();
        let started = Instant::now();
        async move {
            loop {
                let totals = torture.totals();
                progress.set_position(started.elapsed().as_secs());
                progress.set_message(format!(
                    "{} operations, {} acknowledged writes, {} conflicts, {} errors, {} violations",
                    totals.operations,
                    totals.acknowledged_writes,
                    totals.conflicts,
                    totals.errors,
                    torture.violations_so_far()
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    torture.run(stop).await;
    ticker.abort();
    progress.finish_and_clear();
    let report = torture.finish().await?;

    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_string(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln_to(&mut stdout, &json))
    } else {
        writeln_to(&mut stdout, &summary(&report))
    };
    printed.map_err(|error| format!("writing the report failed: {error}"))?;
    Ok(report.violations == 0)
}

fn writeln_to(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    writeln!(out, "{text}")
}

/// The human summary of a report.
fn summary(report: &Report) -> String {
    let totals = &report.totals;
    let mut text = format!(
        "folio torture: {} clients on {} for {:.1} s (seed {}, run {})\n",
        report.clients,
        report.targets.join(", "),
        report.seconds,
        report.seed,
        report.run
    );
    let rows = [
        ("operations", totals.operations),
        ("acknowledged writes", totals.acknowledged_writes),
        ("acknowledged batches", totals.acknowledged_batches),
        ("transfers", totals.transfers),
        ("increments", totals.increments),
        ("deletes", totals.deletes),
        ("audits of the bank", totals.audits),
        ("torn reads caught", totals.torn_reads_caught),
        ("conflicts", totals.conflicts),
        ("errors", totals.errors),
        ("saves in doubt", totals.in_doubt),
    ];
    for (name, value) in rows {
        text.push_str(&format!("  {name:<22}{:>14}\n", thousands(value)));
    }
    for error in &report.error_samples {
        text.push_str(&format!("  error: {error}\n"));
    }
    if report.violations == 0 {
        text.push_str("no invariant was violated");
    } else {
        for violation in &report.violation_details {
            text.push_str(&format!("  VIOLATION {violation}\n"));
        }
        text.push_str(&format!(
            "FAILED: {} invariant violations",
            report.violations
        ));
    }
    text
}

/// `1234567` → `1,234,567`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Refuses targets beyond this machine: a torture run writes as fast as it
/// can and must never hit someone else's server by mistake.
fn ensure_local(target: &Location) -> Result<(), String> {
    let hosts = match target {
        Location::Embedded(_) | Location::Memory => return Ok(()),
        // As libpq reads it: several hosts, sockets, `host`/`hostaddr`.
        Location::Postgres(url) => {
            folio_postgres::url_hosts(url).map_err(|error| format!("{target}: {error}"))?
        }
        Location::Server(url) => {
            let parsed = reqwest::Url::parse(url).map_err(|error| format!("{target}: {error}"))?;
            parsed
                .host_str()
                .filter(|host| !host.is_empty())
                .map(|host| {
                    percent_encoding::percent_decode_str(host)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .into_iter()
                .collect()
        }
    };
    match hosts.iter().find(|host| !is_local(host)) {
        Some(host) => Err(format!(
            "{target}: {host} is not this machine; folio torture only drives local targets \
             (loopback addresses, Unix sockets, files)"
        )),
        None => Ok(()),
    }
}

fn is_local(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_targets_are_accepted() {
        for local in [
            "memory:",
            "embedded:/tmp/t",
            "http://127.0.0.1:7070/db/t",
            "http://localhost:7070/db/t",
            "http://[::1]:7070/db/t",
            "postgres://folio@127.0.0.1:5432/postgres",
            "postgres:///postgres?host=/var/run/postgresql",
            // A cluster's nodes, as libpq takes them.
            "postgres://folio@127.0.0.1:5432,[::1]:5433/folio?target_session_attrs=read-write",
        ] {
            let target = target::parse(local).unwrap();
            assert_eq!(ensure_local(&target), Ok(()), "{local}");
        }
        for remote in [
            "http://10.0.0.7:7070/db/t",
            "http://example.com/db/t",
            "postgres://folio@db.example.com/postgres",
            "postgres://folio@127.0.0.1/postgres?host=db.example.com",
            "postgres://folio@127.0.0.1:5432,db.example.com:5432/folio",
        ] {
            let target = target::parse(remote).unwrap();
            assert!(ensure_local(&target).is_err(), "{remote}");
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn configurations_are_bounded() {
        assert!(Config::default().shape().is_ok());
        for bad in [
            Config {
                clients: 0,
                ..Config::default()
            },
            Config {
                accounts: 1,
                ..Config::default()
            },
            Config {
                registers: 1001,
                ..Config::default()
            },
        ] {
            assert!(bad.shape().is_err(), "{bad:?}");
        }
    }
}
