//! What the clients of a torture run did and saw, and the checker that
//! judges it.
//!
//! Every write attempt takes a unique [`Token`], stored in each document it
//! writes, so any version a client reads names the attempt that wrote it.
//! A client records each attempt (which documents, what it expected of each
//! — the version it read, or "missing" — and what it wrote) with its
//! outcome: acknowledged, refused (a conflict verdict), or in doubt (an
//! error: the batch may or may not have committed). Every version a client
//! reads is recorded too (document, token, change vector, value).
//!
//! [`check`] compares that history with the final state, document by
//! document:
//!
//! * **visibility**: every version ever read was written by an attempt
//!   that was acknowledged or in doubt, never by a refused one, and holds
//!   the value that attempt wrote; one token is always seen with one change
//!   vector, and one change vector with one token;
//! * **version chain**: no two committed writes expected the same version
//!   (a fork is a lost update), each expected change vector is the one the
//!   write that produced it was acknowledged with, and a document is not
//!   created from "missing" more often than it was deleted;
//! * **no lost write**: every acknowledged put, and every put whose version
//!   anyone read, is the final version, or a committed write (or a delete
//!   in doubt: it leaves no token to see) expected it; and the final version
//!   was not replaced or deleted by an acknowledged write;
//! * **atomicity**: a batch in doubt (its puts) is seen whole or not at all.
//!   Every later write of a document reads the version it replaces, so a
//!   put that committed is always seen: in a read, in an expectation, or in
//!   the final state.
//!
//! * **change vectors**: one change vector names one version of one
//!   document: across documents, across every place a client was shown one
//!   (acknowledgements, reads, expectations, the final state, a conflict's
//!   `actual`); a conflict never reports a change vector before the write
//!   that took it was sent, nor one that no write can have produced
//!   ([`Reported`], on the run's clock).
//!
//! An attempt in doubt counts as committed once anyone saw its token (a
//! read, an expectation, the final state); otherwise it is only an excuse:
//! it may have replaced the version it expected. What was seen must survive
//! like what was acknowledged: engines show only durable versions, so not
//! even a power loss may erase one that was read.

use std::collections::{HashMap, HashSet};
use std::fmt;

use folio::ChangeVector;
use serde::Serialize;

/// The number of one write attempt, written into every document it puts.
pub(crate) type Token = u64;

/// The collections of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Bank accounts: transfers move money between them.
    Account,
    /// Counters: incremented with `retry_on_conflict`.
    Counter,
    /// Registers: updated, batched, deleted and created again.
    Register,
}

impl Kind {
    /// The collection the documents of this kind live in.
    pub(crate) fn collection(self) -> &'static str {
        match self {
            Kind::Account => "torture_accounts",
            Kind::Counter => "torture_counters",
            Kind::Register => "torture_registers",
        }
    }

    /// The id of document `index` of this kind in run `run`.
    pub(crate) fn id(self, run: &str, index: u32) -> String {
        let prefix = match self {
            Kind::Account => "a",
            Kind::Counter => "c",
            Kind::Register => "r",
        };
        format!("{prefix}-{run}-{index}")
    }
}

/// One document of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DocKey {
    pub(crate) kind: Kind,
    pub(crate) index: u32,
}

impl DocKey {
    pub(crate) fn new(kind: Kind, index: u32) -> Self {
        DocKey { kind, index }
    }

    /// The document of run `run` stored as `collection`/`id`, if it is one.
    pub(crate) fn parse(collection: &str, id: &str, run: &str) -> Option<Self> {
        let kind = [Kind::Account, Kind::Counter, Kind::Register]
            .into_iter()
            .find(|kind| kind.collection() == collection)?;
        let prefix = kind.id(run, 0);
        let prefix = prefix.strip_suffix('0')?;
        let index = id.strip_prefix(prefix)?.parse().ok()?;
        (kind.id(run, index) == id).then_some(DocKey { kind, index })
    }

    /// `collection/id`, for messages.
    pub(crate) fn name(self, run: &str) -> String {
        format!(
            "{}/{}",
            self.kind.collection(),
            self.kind.id(run, self.index)
        )
    }
}

/// One stored version of a document, as a client read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) change_vector: ChangeVector,
    /// The attempt that wrote it.
    pub(crate) token: Token,
    pub(crate) value: i64,
}

/// What one command of an attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Writes the attempt's token with this value.
    Put {
        value: i64,
    },
    Delete,
}

/// One write of an attempt.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) key: DocKey,
    /// The version the write expects (the one its session read); `None`:
    /// the document must be missing.
    pub(crate) expected: Option<Version>,
    pub(crate) effect: Effect,
    /// The change vector the engine acknowledged a put with, when the
    /// client learned it.
    pub(crate) written: Option<ChangeVector>,
}

/// What became of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `save_changes` returned `Ok`: every write of it must last.
    Acknowledged,
    /// `save_changes` returned a conflict: nothing of it may ever be seen.
    Refused,
    /// `save_changes` failed otherwise: it may or may not have committed.
    InDoubt,
}

/// One `save_changes`: its writes (one batch) and their fate.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub(crate) token: Token,
    pub(crate) writes: Vec<Write>,
    pub(crate) outcome: Outcome,
    /// When its `save_changes` was sent, on the run's clock: no version it
    /// wrote can have been shown to anyone before.
    pub(crate) started: Tick,
    /// When its client learned the outcome (`Tick::MAX`: never).
    pub(crate) settled: Tick,
}

/// A moment of a run: the run's clock ticks at every save sent, every
/// outcome learned, every read and every conflict received, by any client,
/// so ticks order those events.
pub(crate) type Tick = u64;

/// A change vector an engine reported as the stored version of a document
/// in a conflict (the conflict's `actual`).
#[derive(Clone, Debug)]
pub(crate) struct Reported {
    pub(crate) key: DocKey,
    pub(crate) change_vector: ChangeVector,
    /// When the conflict was received.
    pub(crate) at: Tick,
}

/// An invariant that a run can break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// The total of the accounts changed in a read or in the final state.
    Bank,
    /// Two successes from one version, or a chain that does not link.
    VersionChain,
    /// One change vector named two versions (of two documents, or one
    /// shown before the write that took it), or a conflict reported as
    /// stored a version that no write produced.
    ChangeVector,
    /// A batch whose fate was unknown was seen applied in part.
    Atomicity,
    /// An acknowledged write is neither in the final state nor superseded.
    LostWrite,
    /// A read saw what no committed write wrote (a refused write, an
    /// unknown token, another value or change vector than written).
    Visibility,
    /// The targets of one run disagree about the final state.
    Targets,
}

/// One broken invariant, with enough detail to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// The document (`collection/id`), when it concerns one.
    pub document: Option<String>,
    /// What was seen, and why it breaks the invariant.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let invariant = serde_json::to_value(self.invariant)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        match &self.document {
            Some(document) => write!(f, "[{invariant}] {document}: {}", self.detail),
            None => write!(f, "[{invariant}] {}", self.detail),
        }
    }
}

/// Everything the clients of a run recorded.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) attempts: Vec<Attempt>,
    /// Every version read, once per document and token.
    pub(crate) observed: HashMap<(DocKey, Token), Version>,
    /// When each version of `observed` was first read.
    pub(crate) observed_at: HashMap<(DocKey, Token), Tick>,
    /// Every change vector a conflict reported as stored.
    pub(crate) reported: Vec<Reported>,
}

impl History {
    /// Records a read of `version` of `key` at `at`; a version read before
    /// with another change vector or value is a violation, returned.
    pub(crate) fn observe(
        &mut self,
        key: DocKey,
        version: &Version,
        at: Tick,
        run: &str,
    ) -> Option<Violation> {
        let first = self.observed_at.entry((key, version.token)).or_insert(at);
        *first = (*first).min(at);
        match self.observed.get(&(key, version.token)) {
            None => {
                self.observed.insert((key, version.token), version.clone());
                None
            }
            Some(seen) if seen == version => None,
            Some(seen) => Some(Violation {
                invariant: Invariant::Visibility,
                document: Some(key.name(run)),
                detail: format!(
                    "the version written by attempt {} was read as {} = {} and as {} = {}",
                    version.token,
                    seen.change_vector,
                    seen.value,
                    version.change_vector,
                    version.value
                ),
            }),
        }
    }

    /// Adds another client's history; disagreeing reads are violations.
    pub(crate) fn merge(&mut self, other: History, run: &str) -> Vec<Violation> {
        self.attempts.extend(other.attempts);
        self.reported.extend(other.reported);
        let mut violations = Vec::new();
        for ((key, token), version) in other.observed {
            let at = other.observed_at.get(&(key, token)).copied().unwrap_or(0);
            violations.extend(self.observe(key, &version, at, run));
        }
        violations
    }

    /// The history as a power loss at `cut` leaves it: what no client knew
    /// before `cut` did not happen. Attempts sent later are gone; attempts
    /// whose outcome came later are in doubt (their writes may or may not
    /// be on the disk); reads and conflicts received later are gone.
    pub(crate) fn before(&self, cut: Tick) -> History {
        let attempts = self
            .attempts
            .iter()
            .filter(|attempt| attempt.started < cut)
            .map(|attempt| {
                let mut attempt = attempt.clone();
                if attempt.settled >= cut {
                    attempt.outcome = Outcome::InDoubt;
                    attempt.settled = Tick::MAX;
                    for write in &mut attempt.writes {
                        write.written = None;
                    }
                }
                attempt
            })
            .collect();
        let kept: HashMap<(DocKey, Token), Tick> = self
            .observed_at
            .iter()
            .filter(|(_, at)| **at < cut)
            .map(|(key, at)| (*key, *at))
            .collect();
        History {
            attempts,
            observed: self
                .observed
                .iter()
                .filter(|(key, _)| kept.contains_key(key))
                .map(|(key, version)| (*key, version.clone()))
                .collect(),
            observed_at: kept,
            reported: self
                .reported
                .iter()
                .filter(|reported| reported.at < cut)
                .cloned()
                .collect(),
        }
    }

    /// Every change vector a client was shown before `cut`: read, expected,
    /// acknowledged, or reported by a conflict.
    pub(crate) fn change_vectors_before(&self, cut: Tick) -> HashSet<ChangeVector> {
        let before = self.before(cut);
        let mut shown: HashSet<ChangeVector> = before
            .observed
            .values()
            .map(|version| version.change_vector.clone())
            .collect();
        for attempt in &before.attempts {
            for write in &attempt.writes {
                shown.extend(write.expected.iter().map(|v| v.change_vector.clone()));
                shown.extend(write.written.iter().cloned());
            }
        }
        shown.extend(before.reported.iter().map(|r| r.change_vector.clone()));
        shown
    }
}

/// The final state of every document of a run (`None`: missing).
pub(crate) type FinalState = HashMap<DocKey, Option<Version>>;

/// Checks `history` against `final_state`; see the module documentation.
pub(crate) fn check(history: &History, final_state: &FinalState, run: &str) -> Vec<Violation> {
    let mut writes: HashMap<DocKey, Vec<(&Attempt, &Write)>> = HashMap::new();
    for attempt in &history.attempts {
        for write in &attempt.writes {
            writes.entry(write.key).or_default().push((attempt, write));
        }
    }
    let mut observed: HashMap<DocKey, Vec<&Version>> = HashMap::new();
    for ((key, _), version) in &history.observed {
        observed.entry(*key).or_default().push(version);
    }
    let mut keys: Vec<DocKey> = final_state.keys().copied().collect();
    keys.extend(writes.keys().copied());
    keys.sort();
    keys.dedup();
    let mut violations = Vec::new();
    for key in keys {
        let document = DocumentCheck {
            name: key.name(run),
            writes: writes.get(&key).map(Vec::as_slice).unwrap_or_default(),
            observed: observed.get(&key).map(Vec::as_slice).unwrap_or_default(),
            final_version: final_state.get(&key).and_then(Option::as_ref),
        };
        document.check(&mut violations);
    }
    check_atomicity(history, final_state, run, &mut violations);
    check_change_vectors(history, final_state, run, &mut violations);
    violations
}

/// A change vector names one version of one document, forever: every
/// change vector the clients were shown — in an acknowledgement, a read, an
/// expectation, the final state, or a conflict's `actual` — names one
/// document and one write; a conflict reports a version only after the
/// write that took its change vector was sent; and a change vector a
/// conflict reported names a version some write may have produced. (An
/// engine that reports its own rolled-back write as the conflict's `actual`
/// and then gives that change vector to a later write fails the second or
/// the third rule.) Two versions of one document with one change vector are
/// reported by the document's own check (`Visibility`).
fn check_change_vectors(
    history: &History,
    final_state: &FinalState,
    run: &str,
    violations: &mut Vec<Violation>,
) {
    let mut named: HashMap<&ChangeVector, (DocKey, Token)> = HashMap::new();
    let mut name = |change_vector, key: DocKey, token, violations: &mut Vec<Violation>| {
        if let Some((other_key, other_token)) = named.insert(change_vector, (key, token))
            && other_key != key
        {
            violations.push(Violation {
                invariant: Invariant::ChangeVector,
                document: Some(key.name(run)),
                detail: format!(
                    "change vector {change_vector} names the write of attempt {token} of this                      document and the write of attempt {other_token} of {}",
                    other_key.name(run)
                ),
            });
        }
    };
    for ((key, token), version) in &history.observed {
        name(&version.change_vector, *key, *token, violations);
    }
    for attempt in &history.attempts {
        for write in &attempt.writes {
            if let Some(expected) = &write.expected {
                name(
                    &expected.change_vector,
                    write.key,
                    expected.token,
                    violations,
                );
            }
            if let Some(written) = &write.written {
                name(written, write.key, attempt.token, violations);
            }
        }
    }
    for (key, version) in final_state {
        if let Some(version) = version {
            name(&version.change_vector, *key, version.token, violations);
        }
    }
    let attempts: HashMap<Token, &Attempt> = history
        .attempts
        .iter()
        .map(|attempt| (attempt.token, attempt))
        .collect();
    for reported in &history.reported {
        let document = Some(reported.key.name(run));
        match named.get(&reported.change_vector) {
            Some((key, token)) => {
                let started = attempts.get(token).map(|attempt| attempt.started);
                if *key != reported.key {
                    violations.push(Violation {
                        invariant: Invariant::ChangeVector,
                        document,
                        detail: format!(
                            "a conflict reported {} as this document's stored version, but it \
                             names a version of {}",
                            reported.change_vector,
                            key.name(run)
                        ),
                    });
                } else if started.is_some_and(|started| started > reported.at) {
                    violations.push(Violation {
                        invariant: Invariant::ChangeVector,
                        document,
                        detail: format!(
                            "a conflict reported {} as stored before attempt {token}, whose \
                             write took that change vector, was sent: it named another version \
                             then (a rolled-back write's, issued again)",
                            reported.change_vector
                        ),
                    });
                }
            }
            None => {
                // Its version was never seen: only a put whose change vector
                // nobody was told (in doubt, or acknowledged without it) may
                // have produced it, and only one sent before the conflict.
                let possible = history.attempts.iter().any(|attempt| {
                    attempt.outcome != Outcome::Refused
                        && attempt.started <= reported.at
                        && attempt.writes.iter().any(|write| {
                            write.key == reported.key
                                && write.written.is_none()
                                && matches!(write.effect, Effect::Put { .. })
                        })
                });
                if !possible {
                    violations.push(Violation {
                        invariant: Invariant::ChangeVector,
                        document,
                        detail: format!(
                            "a conflict reported {} as this document's stored version, which \
                             no write of it can have produced (a version that never committed)",
                            reported.change_vector
                        ),
                    });
                }
            }
        }
    }
}

/// Each batch in doubt is seen whole or not at all.
fn check_atomicity(
    history: &History,
    final_state: &FinalState,
    run: &str,
    violations: &mut Vec<Violation>,
) {
    let mut seen: HashSet<(DocKey, Token)> = history.observed.keys().copied().collect();
    for attempt in &history.attempts {
        for write in &attempt.writes {
            if let Some(expected) = &write.expected {
                seen.insert((write.key, expected.token));
            }
        }
    }
    for (key, version) in final_state {
        if let Some(version) = version {
            seen.insert((*key, version.token));
        }
    }
    for attempt in &history.attempts {
        if attempt.outcome != Outcome::InDoubt {
            continue;
        }
        let (visible, invisible): (Vec<&Write>, Vec<&Write>) = attempt
            .writes
            .iter()
            .filter(|write| matches!(write.effect, Effect::Put { .. }))
            .partition(|write| seen.contains(&(write.key, attempt.token)));
        if let (Some(visible), Some(invisible)) = (visible.first(), invisible.first()) {
            violations.push(Violation {
                invariant: Invariant::Atomicity,
                document: Some(invisible.key.name(run)),
                detail: format!(
                    "attempt {} (in doubt) committed its put of {} but its put of this \
                     document was never seen: a batch is all or nothing",
                    attempt.token,
                    visible.key.name(run)
                ),
            });
        }
    }
}

/// The facts about one document.
struct DocumentCheck<'a> {
    name: String,
    writes: &'a [(&'a Attempt, &'a Write)],
    observed: &'a [&'a Version],
    final_version: Option<&'a Version>,
}

impl DocumentCheck<'_> {
    fn violation(&self, invariant: Invariant, detail: String) -> Violation {
        Violation {
            invariant,
            document: Some(self.name.clone()),
            detail,
        }
    }

    /// The version (its token) each delete in doubt expected: it may have
    /// deleted it.
    fn deletes_in_doubt(&self) -> impl Iterator<Item = Option<Token>> + '_ {
        self.writes
            .iter()
            .filter(|(attempt, write)| {
                attempt.outcome == Outcome::InDoubt && write.effect == Effect::Delete
            })
            .map(|(_, write)| write.expected.as_ref().map(|expected| expected.token))
    }

    fn check(&self, violations: &mut Vec<Violation>) {
        let puts: HashMap<Token, (&Attempt, &Write)> = self
            .writes
            .iter()
            .filter(|(_, write)| matches!(write.effect, Effect::Put { .. }))
            .map(|(attempt, write)| (attempt.token, (*attempt, *write)))
            .collect();

        // Every version anyone saw: reads, expectations, the final state.
        let seen: Vec<&Version> = self
            .observed
            .iter()
            .copied()
            .chain(self.writes.iter().filter_map(|(_, w)| w.expected.as_ref()))
            .chain(self.final_version)
            .collect();
        let mut by_token: HashMap<Token, &Version> = HashMap::new();
        let mut by_change_vector: HashMap<&ChangeVector, Token> = HashMap::new();
        for version in &seen {
            if let Some(other) = by_token.insert(version.token, version)
                && other != *version
            {
                violations.push(self.violation(
                    Invariant::Visibility,
                    format!(
                        "the version of attempt {} was seen as {} = {} and as {} = {}",
                        version.token,
                        other.change_vector,
                        other.value,
                        version.change_vector,
                        version.value
                    ),
                ));
            }
            if let Some(other) = by_change_vector.insert(&version.change_vector, version.token)
                && other != version.token
            {
                violations.push(self.violation(
                    Invariant::Visibility,
                    format!(
                        "change vector {} was seen holding the writes of attempts {other} and {}",
                        version.change_vector, version.token
                    ),
                ));
            }
        }

        // Each version seen was written by a put that may have committed,
        // with the value and change vector it wrote.
        for (token, version) in &by_token {
            match puts.get(token) {
                None => violations.push(self.violation(
                    Invariant::Visibility,
                    format!(
                        "version {} holds token {token}, which no put of this document wrote",
                        version.change_vector
                    ),
                )),
                Some((attempt, _)) if attempt.outcome == Outcome::Refused => {
                    violations.push(self.violation(
                        Invariant::Visibility,
                        format!(
                            "version {} was written by attempt {token}, which was refused \
                             with a conflict: a refused batch must leave nothing behind",
                            version.change_vector
                        ),
                    ))
                }
                Some((_, write)) => {
                    if write.effect
                        != (Effect::Put {
                            value: version.value,
                        })
                    {
                        violations.push(self.violation(
                            Invariant::Visibility,
                            format!(
                                "version {} holds {} but attempt {token} wrote {:?}",
                                version.change_vector, version.value, write.effect
                            ),
                        ));
                    }
                    if let Some(written) = &write.written
                        && *written != version.change_vector
                    {
                        violations.push(self.violation(
                            Invariant::VersionChain,
                            format!(
                                "attempt {token} was acknowledged with change vector {written}, \
                                 but its version was seen as {}",
                                version.change_vector
                            ),
                        ));
                    }
                }
            }
        }

        // What committed: acknowledged writes, and writes in doubt whose
        // version someone saw.
        let committed = |attempt: &Attempt, write: &Write| match attempt.outcome {
            Outcome::Acknowledged => true,
            Outcome::Refused => false,
            Outcome::InDoubt => {
                matches!(write.effect, Effect::Put { .. }) && by_token.contains_key(&attempt.token)
            }
        };
        let mut successors: HashMap<Token, Vec<&Attempt>> = HashMap::new();
        let mut creations = 0usize;
        let mut deletions = 0usize;
        for (attempt, write) in self.writes {
            if !committed(attempt, write) {
                continue;
            }
            match &write.expected {
                Some(expected) => successors.entry(expected.token).or_default().push(attempt),
                None => creations += 1,
            }
            if write.effect == Effect::Delete {
                deletions += 1;
            }
        }
        // A delete in doubt may have deleted, and then one more creation may
        // follow; unless a committed write replaced the version it expected
        // (both cannot have committed).
        deletions += self
            .deletes_in_doubt()
            .filter(|expected| expected.is_none_or(|token| !successors.contains_key(&token)))
            .count();
        for (token, next) in &successors {
            if next.len() > 1 {
                let attempts: Vec<String> = next.iter().map(|a| a.token.to_string()).collect();
                violations.push(self.violation(
                    Invariant::VersionChain,
                    format!(
                        "attempts {} all committed from the version written by attempt {token}: \
                         two successes from one version lose all but one update",
                        attempts.join(", ")
                    ),
                ));
            }
        }
        if creations > deletions + 1 {
            violations.push(self.violation(
                Invariant::VersionChain,
                format!(
                    "{creations} writes committed expecting the document to be missing, but it \
                     was deleted at most {deletions} times"
                ),
            ));
        }

        // Every put that was acknowledged, or read (readers are shown only
        // durable versions), is the final version or was superseded.
        let final_token = self.final_version.map(|version| version.token);
        for (attempt, write) in self.writes {
            if !committed(attempt, write)
                || !matches!(write.effect, Effect::Put { .. })
                || final_token == Some(attempt.token)
                || successors.contains_key(&attempt.token)
            {
                continue;
            }
            // Only a delete in doubt can explain it: it leaves no token. A
            // put in doubt that replaced it would be seen (in the final
            // state, or as the version a later write expected), and then it
            // is a successor above.
            let maybe_superseded = self
                .deletes_in_doubt()
                .any(|expected| expected == Some(attempt.token));
            if !maybe_superseded {
                let now = match self.final_version {
                    Some(version) => format!(
                        "the document holds {} (attempt {})",
                        version.change_vector, version.token
                    ),
                    None => "the document is missing".to_owned(),
                };
                violations.push(self.violation(
                    Invariant::LostWrite,
                    format!(
                        "attempt {} was {} ({}) and nothing replaced it, but {now}",
                        attempt.token,
                        if attempt.outcome == Outcome::Acknowledged {
                            "acknowledged"
                        } else {
                            "seen"
                        },
                        describe(write)
                    ),
                ));
            }
        }
        if let Some(version) = self.final_version
            && let Some(next) = successors.get(&version.token)
        {
            for attempt in next {
                if attempt.outcome == Outcome::Acknowledged {
                    violations.push(self.violation(
                        Invariant::LostWrite,
                        format!(
                            "the final version {} (attempt {}) was replaced or deleted by the \
                             acknowledged attempt {}, which is gone",
                            version.change_vector, version.token, attempt.token
                        ),
                    ));
                }
            }
        }
    }
}

fn describe(write: &Write) -> String {
    let expected = match &write.expected {
        Some(version) => format!("expecting {}", version.change_vector),
        None => "expecting missing".to_owned(),
    };
    match (&write.effect, &write.written) {
        (Effect::Put { value }, Some(written)) => {
            format!("put of {value} {expected}, now {written}")
        }
        (Effect::Put { value }, None) => format!("put of {value} {expected}"),
        (Effect::Delete, _) => format!("delete {expected}"),
    }
}

#[cfg(test)]
mod tests {
    //! The checker on small, hand-made histories: each broken invariant is
    //! reported, and correct histories (with refusals, doubt and deletes)
    //! are not.

    use super::*;

    const RUN: &str = "t";
    const KEY: DocKey = DocKey {
        kind: Kind::Register,
        index: 0,
    };

    fn version(token: Token, value: i64) -> Version {
        Version {
            change_vector: ChangeVector::from(format!("A:{token}-db")),
            token,
            value,
        }
    }

    /// A put by attempt `token` of `value`, expecting `expected`.
    fn put(token: Token, expected: Option<Version>, value: i64, outcome: Outcome) -> Attempt {
        let written =
            (outcome == Outcome::Acknowledged).then(|| version(token, value).change_vector);
        Attempt {
            token,
            writes: vec![Write {
                key: KEY,
                expected,
                effect: Effect::Put { value },
                written,
            }],
            outcome,
            started: token,
            settled: token,
        }
    }

    fn delete(token: Token, expected: Version, outcome: Outcome) -> Attempt {
        Attempt {
            token,
            writes: vec![Write {
                key: KEY,
                expected: Some(expected),
                effect: Effect::Delete,
                written: None,
            }],
            outcome,
            started: token,
            settled: token,
        }
    }

    fn run(attempts: Vec<Attempt>, reads: &[Version], last: Option<Version>) -> Vec<Violation> {
        let mut history = History {
            attempts,
            ..History::default()
        };
        for read in reads {
            assert_eq!(history.observe(KEY, read, read.token, RUN), None);
        }
        let final_state = FinalState::from([(KEY, last)]);
        check(&history, &final_state, RUN)
    }

    fn invariants(violations: &[Violation]) -> Vec<Invariant> {
        violations.iter().map(|v| v.invariant).collect()
    }

    use Outcome::{Acknowledged, InDoubt, Refused};

    #[test]
    fn a_clean_chain_with_refusals_deletes_and_creations_passes() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Acknowledged),
            put(3, Some(version(1, 0)), 1, Refused),
            delete(4, version(2, 1), Acknowledged),
            put(5, None, 0, Acknowledged),
            put(6, Some(version(5, 0)), 1, Acknowledged),
        ];
        let violations = run(
            attempts,
            &[version(1, 0), version(2, 1)],
            Some(version(6, 1)),
        );
        assert_eq!(violations, Vec::new());
    }

    #[test]
    fn two_successes_from_one_version_are_a_fork() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Acknowledged),
            put(3, Some(version(1, 0)), 1, Acknowledged),
        ];
        let violations = run(attempts, &[], Some(version(3, 1)));
        assert!(
            invariants(&violations).contains(&Invariant::VersionChain),
            "{violations:?}"
        );
        // Attempt 2 is also lost: nothing replaced it, and it is not final.
        assert!(
            invariants(&violations).contains(&Invariant::LostWrite),
            "{violations:?}"
        );
    }

    #[test]
    fn two_creations_without_a_delete_are_a_fork() {
        let attempts = vec![put(1, None, 0, Acknowledged), put(2, None, 0, Acknowledged)];
        let violations = run(attempts, &[], Some(version(2, 0)));
        assert!(
            invariants(&violations).contains(&Invariant::VersionChain),
            "{violations:?}"
        );
        // A delete in doubt excuses a second creation only if it can have
        // committed: not when a committed write replaced what it expected.
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            delete(2, version(1, 0), InDoubt),
            put(3, Some(version(1, 0)), 1, Acknowledged),
            put(4, None, 0, Acknowledged),
        ];
        let violations = run(attempts, &[], Some(version(4, 0)));
        assert!(
            invariants(&violations).contains(&Invariant::VersionChain),
            "{violations:?}"
        );
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            delete(2, version(1, 0), InDoubt),
            put(3, None, 0, Acknowledged),
        ];
        assert_eq!(run(attempts, &[], Some(version(3, 0))), Vec::new());
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_final_state_is_lost() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Acknowledged),
        ];
        let violations = run(attempts, &[], Some(version(1, 0)));
        assert_eq!(
            invariants(&violations),
            vec![Invariant::LostWrite, Invariant::LostWrite],
            "{violations:?}"
        );
    }

    #[test]
    fn a_lost_delete_is_reported() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            delete(2, version(1, 0), Acknowledged),
        ];
        let violations = run(attempts, &[], Some(version(1, 0)));
        assert_eq!(
            invariants(&violations),
            vec![Invariant::LostWrite],
            "{violations:?}"
        );
        let violations = run(
            vec![
                put(1, None, 0, Acknowledged),
                delete(2, version(1, 0), Acknowledged),
            ],
            &[],
            None,
        );
        assert_eq!(violations, Vec::new());
    }

    #[test]
    fn a_refused_write_that_is_seen_is_reported() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Refused),
        ];
        let violations = run(attempts, &[version(2, 1)], Some(version(1, 0)));
        assert_eq!(
            invariants(&violations),
            vec![Invariant::Visibility],
            "{violations:?}"
        );
    }

    #[test]
    fn a_version_with_the_wrong_value_or_change_vector_is_reported() {
        let attempts = vec![put(1, None, 0, Acknowledged)];
        let violations = run(attempts.clone(), &[], Some(version(1, 7)));
        assert_eq!(
            invariants(&violations),
            vec![Invariant::Visibility],
            "{violations:?}"
        );
        let mut moved = version(1, 0);
        moved.change_vector = ChangeVector::from("A:99-db");
        let violations = run(attempts, &[], Some(moved));
        assert_eq!(
            invariants(&violations),
            vec![Invariant::VersionChain],
            "{violations:?}"
        );
    }

    #[test]
    fn one_change_vector_for_two_versions_is_reported() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, InDoubt),
        ];
        let mut reused = version(2, 1);
        reused.change_vector = version(1, 0).change_vector;
        let violations = run(attempts, &[version(1, 0), reused], Some(version(1, 0)));
        assert!(
            invariants(&violations).contains(&Invariant::Visibility),
            "{violations:?}"
        );
    }

    #[test]
    fn writes_in_doubt_excuse_only_what_they_could_have_replaced() {
        // Attempt 2 is in doubt: it may have replaced 1, and nobody saw it.
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, InDoubt),
        ];
        assert_eq!(run(attempts, &[], Some(version(1, 0))), Vec::new());
        // But unseen, it cannot be why 1 is gone: had it committed, the
        // document would hold it (or a later write would have read it).
        // This is a creation lost in a crash, whatever was in doubt after it.
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, InDoubt),
        ];
        let violations = run(attempts, &[], None);
        assert_eq!(
            invariants(&violations),
            vec![Invariant::LostWrite],
            "{violations:?}"
        );
        // Seen in the final state, it committed.
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, InDoubt),
        ];
        assert_eq!(run(attempts, &[], Some(version(2, 1))), Vec::new());
        // A delete in doubt that expected 1 may explain its absence…
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            delete(2, version(1, 0), InDoubt),
        ];
        assert_eq!(run(attempts, &[], None), Vec::new());
        // …but a write in doubt from another version excuses nothing.
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Acknowledged),
            put(3, Some(version(1, 0)), 1, InDoubt),
        ];
        let violations = run(attempts, &[], None);
        assert_eq!(
            invariants(&violations),
            vec![Invariant::LostWrite],
            "{violations:?}"
        );
    }

    #[test]
    fn a_batch_in_doubt_seen_in_part_is_reported() {
        let other = DocKey {
            kind: Kind::Register,
            index: 1,
        };
        let batch = |outcome| Attempt {
            token: 2,
            writes: vec![
                Write {
                    key: KEY,
                    expected: None,
                    effect: Effect::Put { value: 0 },
                    written: None,
                },
                Write {
                    key: other,
                    expected: None,
                    effect: Effect::Put { value: 0 },
                    written: None,
                },
            ],
            outcome,
            started: 2,
            settled: 2,
        };
        let history = History {
            attempts: vec![batch(InDoubt)],
            ..History::default()
        };
        let half = FinalState::from([(KEY, Some(version(2, 0))), (other, None)]);
        let violations = check(&history, &half, RUN);
        assert_eq!(
            invariants(&violations),
            vec![Invariant::Atomicity],
            "{violations:?}"
        );
        let other_version = Version {
            change_vector: "A:3-db".into(),
            ..version(2, 0)
        };
        let whole = FinalState::from([(KEY, Some(version(2, 0))), (other, Some(other_version))]);
        assert_eq!(check(&history, &whole, RUN), Vec::new());
        let none = FinalState::from([(KEY, None), (other, None)]);
        assert_eq!(check(&history, &none, RUN), Vec::new());
    }

    /// A conflict reported at tick `at` that `KEY` is stored at `change_vector`.
    fn reported(change_vector: &str, at: Tick) -> Reported {
        Reported {
            key: KEY,
            change_vector: change_vector.into(),
            at,
        }
    }

    #[test]
    fn a_change_vector_reported_before_its_write_was_sent_is_reported() {
        // Attempt 2 was refused; the engine reported its own rolled-back
        // write, A:5-db, as stored, then gave A:5-db to attempt 3 (sent
        // after the conflict, at tick 4).
        let first = put(1, None, 0, Acknowledged);
        let refused = put(2, Some(version(1, 0)), 1, Refused);
        let mut later = put(3, Some(version(1, 0)), 2, Acknowledged);
        later.started = 4;
        later.writes[0].written = Some("A:5-db".into());
        let history = History {
            attempts: vec![first, refused, later],
            reported: vec![reported("A:5-db", 3)],
            ..History::default()
        };
        let last = Version {
            change_vector: "A:5-db".into(),
            token: 3,
            value: 2,
        };
        let violations = check(&history, &FinalState::from([(KEY, Some(last))]), RUN);
        assert_eq!(
            invariants(&violations),
            vec![Invariant::ChangeVector],
            "{violations:?}"
        );
        // Reported after the write was sent, it is the committed version.
        let mut history = history;
        history.reported = vec![reported("A:5-db", 5)];
        let last = Version {
            change_vector: "A:5-db".into(),
            token: 3,
            value: 2,
        };
        assert_eq!(
            check(&history, &FinalState::from([(KEY, Some(last))]), RUN),
            Vec::new()
        );
    }

    #[test]
    fn a_reported_version_no_write_produced_is_reported() {
        let attempts = vec![
            put(1, None, 0, Acknowledged),
            put(2, Some(version(1, 0)), 1, Refused),
        ];
        let history = History {
            attempts: attempts.clone(),
            reported: vec![reported("A:9-db", 3)],
            ..History::default()
        };
        let final_state = FinalState::from([(KEY, Some(version(1, 0)))]);
        let violations = check(&history, &final_state, RUN);
        assert_eq!(
            invariants(&violations),
            vec![Invariant::ChangeVector],
            "{violations:?}"
        );
        // A put in doubt, sent before the conflict, may have produced it.
        let mut attempts = attempts;
        attempts.push(put(3, Some(version(1, 0)), 5, InDoubt));
        let history = History {
            attempts,
            reported: vec![reported("A:9-db", 4)],
            ..History::default()
        };
        assert_eq!(check(&history, &final_state, RUN), Vec::new());
    }

    #[test]
    fn one_change_vector_on_two_documents_is_reported() {
        let other = DocKey {
            kind: Kind::Register,
            index: 1,
        };
        let history = History {
            attempts: vec![
                put(1, None, 0, Acknowledged),
                Attempt {
                    writes: vec![Write {
                        key: other,
                        ..put(2, None, 0, Acknowledged).writes.remove(0)
                    }],
                    ..put(2, None, 0, Acknowledged)
                },
            ],
            ..History::default()
        };
        let mut shared = version(2, 0);
        shared.change_vector = version(1, 0).change_vector;
        let mut attempts = history.attempts;
        attempts[1].writes[0].written = Some(shared.change_vector.clone());
        let history = History {
            attempts,
            ..History::default()
        };
        let final_state = FinalState::from([(KEY, Some(version(1, 0))), (other, Some(shared))]);
        let violations = check(&history, &final_state, RUN);
        assert!(
            invariants(&violations).contains(&Invariant::ChangeVector),
            "{violations:?}"
        );
    }

    #[test]
    fn a_token_nobody_wrote_is_reported() {
        let attempts = vec![put(1, None, 0, Acknowledged)];
        let violations = run(attempts, &[], Some(version(9, 0)));
        assert!(
            invariants(&violations).contains(&Invariant::Visibility),
            "{violations:?}"
        );
    }
}
