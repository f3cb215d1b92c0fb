//! Concurrency: read guards (`WritesAndReads`), write skew, and many tasks
//! racing on the same documents without losing an update.

use std::sync::Arc;

use folio::{ConcurrencyChecks, DocumentStore, Error, Expectation, Session, SessionOptions};
use tokio::sync::Barrier;

use crate::harness::{Account, Counter, Harness, Note, conflicts, seed};

conformance!(
    writes_and_reads_catches_a_changed_read,
    writes_and_reads_catches_a_phantom_create,
    writes_and_reads_prevents_write_skew,
    concurrent_increments_with_retry_on_conflict_lose_no_update,
    concurrent_increments_with_manual_retries_lose_no_update,
    concurrent_bank_transfers_keep_every_balance_exact,
);

// ---- helpers of this module -------------------------------------------------

/// How often a racing task may retry before the test gives up. Optimistic
/// concurrency promises no fairness: with 16 tasks on one counter, a single
/// increment was seen to need about 200 attempts. The cap only turns a
/// livelock into a failure instead of a hang.
pub(crate) const MAX_ATTEMPTS: usize = 10_000;

fn session_with(store: &DocumentStore, concurrency_checks: ConcurrencyChecks) -> Session {
    store.open_session_with(SessionOptions {
        concurrency_checks,
        ..SessionOptions::default()
    })
}

/// The document `id` as stored now, read in a fresh session.
async fn stored<T: folio::Document>(store: &DocumentStore, id: &str) -> Option<T> {
    store
        .open_session()
        .load::<T>(id)
        .await
        .expect("a load succeeds")
}

/// A small deterministic PRNG (xorshift64), so the races are reproducible in
/// what they do, if not in how they interleave.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..bound`.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

pub(crate) fn account(id: &str, balance: i64) -> Account {
    Account {
        id: id.into(),
        balance,
    }
}

// ---- read guards ------------------------------------------------------------

async fn writes_and_reads_catches_a_changed_read(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Note::new("notes/a", "a1"), Note::new("notes/b", "b1")],
    )
    .await;

    let mut session = session_with(&store, ConcurrencyChecks::WritesAndReads);
    let a = session.load::<Note>("notes/a").await.unwrap().unwrap();
    let mut b = session.load::<Note>("notes/b").await.unwrap().unwrap();
    let a_as_read = session
        .change_vector_for::<Note>("notes/a")
        .await
        .unwrap()
        .unwrap();

    // A changes elsewhere; the session writes only B, based on what A said.
    seed(&store, vec![Note::new("notes/a", "a2 from elsewhere")]).await;
    b.text = format!("b2, because a said {}", a.text);
    session.store(b).unwrap();

    let result = session.save_changes().await;
    assert_eq!(
        result.as_ref().unwrap_err().to_string(),
        "Optimistic concurrency check failed for Note #notes/a"
    );
    let conflicts = conflicts(result);
    let a_now = store
        .open_session()
        .change_vector_for::<Note>("notes/a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conflicts.len(), 1, "only the stale read conflicts");
    assert_eq!(conflicts[0].type_name(), "Note");
    assert_eq!(conflicts[0].id(), "notes/a");
    assert_eq!(conflicts[0].expected(), &Expectation::version(a_as_read));
    assert_eq!(conflicts[0].actual(), Some(&a_now));

    assert_eq!(stored::<Note>(&store, "notes/b").await.unwrap().text, "b1");
    assert_eq!(
        stored::<Note>(&store, "notes/a").await.unwrap().text,
        "a2 from elsewhere"
    );
}

async fn writes_and_reads_catches_a_phantom_create(h: Harness) {
    let store = h.store().await;

    let mut session = session_with(&store, ConcurrencyChecks::WritesAndReads);
    assert!(session.load::<Note>("notes/x").await.unwrap().is_none());
    session
        .store(Note::new("notes/y", "written because x does not exist"))
        .unwrap();

    // Someone creates X meanwhile.
    seed(&store, vec![Note::new("notes/x", "x exists now")]).await;

    let conflicts = conflicts(session.save_changes().await);
    let x_now = store
        .open_session()
        .change_vector_for::<Note>("notes/x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].type_name(), "Note");
    assert_eq!(conflicts[0].id(), "notes/x");
    assert_eq!(conflicts[0].expected(), &Expectation::Missing);
    assert_eq!(conflicts[0].actual(), Some(&x_now));
    assert!(stored::<Note>(&store, "notes/y").await.is_none());
}

/// Two sessions read both accounts, check that the pair keeps a
/// non-negative sum after withdrawing `amount`, wait for each other (so both
/// decisions rest on the same reads), then each withdraws from a different
/// account. Returns both saves' results.
async fn race_two_withdrawals(
    store: &DocumentStore,
    checks: ConcurrencyChecks,
    ids: [&'static str; 2],
    amount: i64,
) -> [folio::Result<()>; 2] {
    let barrier = Arc::new(Barrier::new(2));
    let tasks = [0, 1].map(|from| {
        let store = store.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            let mut session = session_with(&store, checks);
            let accounts = session.load_many::<Account>(&ids).await.unwrap();
            let mut accounts: Vec<Account> = accounts.into_iter().map(Option::unwrap).collect();
            let sum: i64 = accounts.iter().map(|a| a.balance).sum();
            barrier.wait().await;
            assert!(sum - amount >= 0, "each session sees enough money");
            let mut mine = accounts.swap_remove(from);
            mine.balance -= amount;
            session.store(mine).unwrap();
            session.save_changes().await
        })
    });
    let [first, second] = tasks;
    [first.await.unwrap(), second.await.unwrap()]
}

async fn writes_and_reads_prevents_write_skew(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![account("accounts/1", 50), account("accounts/2", 50)],
    )
    .await;

    let results = race_two_withdrawals(
        &store,
        ConcurrencyChecks::WritesAndReads,
        ["accounts/1", "accounts/2"],
        100,
    )
    .await;
    let winners = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(winners, 1, "exactly one withdrawal commits: {results:?}");
    let [first, second] = results;
    let (winner, loser) = if first.is_ok() {
        (0, second)
    } else {
        (1, first)
    };
    let conflicts = conflicts(loser);
    // The loser's own write was fine; its read of the winner's account was not.
    let winners_account = ["accounts/1", "accounts/2"][winner];
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].type_name(), "Account");
    assert_eq!(conflicts[0].id(), winners_account);
    assert!(matches!(
        conflicts[0].expected(),
        Expectation::Version { .. }
    ));
    let balances = [
        stored::<Account>(&store, "accounts/1")
            .await
            .unwrap()
            .balance,
        stored::<Account>(&store, "accounts/2")
            .await
            .unwrap()
            .balance,
    ];
    assert_eq!(balances.iter().sum::<i64>(), 0, "{balances:?}");

    // The control: with write checks only, both withdrawals commit and the
    // invariant breaks. That is the skew the read guards above prevented.
    seed(
        &store,
        vec![account("accounts/3", 50), account("accounts/4", 50)],
    )
    .await;
    let results = race_two_withdrawals(
        &store,
        ConcurrencyChecks::Writes,
        ["accounts/3", "accounts/4"],
        100,
    )
    .await;
    assert!(
        results.iter().all(Result::is_ok),
        "without read guards both commit: {results:?}"
    );
    let sum = stored::<Account>(&store, "accounts/3")
        .await
        .unwrap()
        .balance
        + stored::<Account>(&store, "accounts/4")
            .await
            .unwrap()
            .balance;
    assert_eq!(sum, -100);
}

// ---- many tasks, one document -----------------------------------------------

async fn concurrent_increments_with_retry_on_conflict_lose_no_update(h: Harness) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 25;
    let store = h.store().await;
    seed(
        &store,
        vec![Counter {
            id: "counters/1".into(),
            value: 0,
        }],
    )
    .await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = Vec::with_capacity(INCREMENTS);
                for _ in 0..INCREMENTS {
                    let value = store
                        .retry_on_conflict(MAX_ATTEMPTS, async |session| {
                            let mut counter = session
                                .load::<Counter>("counters/1")
                                .await?
                                .expect("the counter is seeded");
                            counter.value += 1;
                            let value = counter.value;
                            session.store(counter)?;
                            Ok(value)
                        })
                        .await
                        .expect("every increment commits within the attempts");
                    written.push(value);
                }
                written
            })
        })
        .collect();

    let mut written = Vec::with_capacity(TASKS * INCREMENTS);
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    let total = u64::try_from(TASKS * INCREMENTS).unwrap();
    let counter = stored::<Counter>(&store, "counters/1").await.unwrap();
    assert_eq!(counter.value, total, "no increment was lost");
    // Each committed increment wrote a value nobody else wrote.
    written.sort_unstable();
    assert_eq!(written, (1..=total).collect::<Vec<_>>());
    let metadata = store
        .open_session()
        .metadata_for::<Counter>("counters/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(metadata.revision, total + 1);
}

async fn concurrent_increments_with_manual_retries_lose_no_update(h: Harness) {
    const COUNTERS: usize = 4;
    const TASKS: usize = 16;
    const INCREMENTS: usize = 20;
    let store = h.store().await;
    let ids: Vec<String> = (0..COUNTERS).map(|c| format!("counters/{c}")).collect();
    seed(
        &store,
        ids.iter()
            .map(|id| Counter {
                id: id.clone(),
                value: 0,
            })
            .collect(),
    )
    .await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = XorShift::new(0x5EED_0000 + task as u64);
                let mut applied = [0u64; COUNTERS];
                for _ in 0..INCREMENTS {
                    let c = usize::try_from(rng.below(COUNTERS as u64)).unwrap();
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts <= MAX_ATTEMPTS, "no progress on {}", ids[c]);
                        // Counter does not opt in: the session turns checks on.
                        let mut session = session_with(&store, ConcurrencyChecks::Writes);
                        let mut counter = session.load::<Counter>(&ids[c]).await.unwrap().unwrap();
                        counter.value += 1;
                        session.store(counter).unwrap();
                        match session.save_changes().await {
                            Ok(()) => break,
                            Err(Error::Concurrency(conflict)) => {
                                assert_eq!(conflict.conflicts()[0].id(), ids[c]);
                            }
                            Err(other) => panic!("a save failed: {other:?}"),
                        }
                    }
                    applied[c] += 1;
                }
                applied
            })
        })
        .collect();

    let mut expected = [0u64; COUNTERS];
    for task in tasks {
        for (total, applied) in expected.iter_mut().zip(task.await.unwrap()) {
            *total += applied;
        }
    }
    assert_eq!(
        expected.iter().sum::<u64>(),
        u64::try_from(TASKS * INCREMENTS).unwrap()
    );
    for (id, expected) in ids.iter().zip(expected) {
        let counter = stored::<Counter>(&store, id).await.unwrap();
        assert_eq!(counter.value, expected, "{id}: no increment was lost");
    }
}

// ---- many tasks, many documents ---------------------------------------------

async fn concurrent_bank_transfers_keep_every_balance_exact(h: Harness) {
    const ACCOUNTS: usize = 8;
    const TASKS: usize = 16;
    const TRANSFERS: usize = 30;
    const OPENING: i64 = 1000;
    let store = h.store().await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|a| format!("accounts/{a}")).collect();
    seed(&store, ids.iter().map(|id| account(id, OPENING)).collect()).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15 ^ (task as u64 + 1));
                // Per account: the net amount this task moved, and how many
                // of its transfers touched it.
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
                        // Account opts in: a default session checks it.
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
    assert_eq!(total, OPENING * ACCOUNTS as i64, "no money made or lost");
}
