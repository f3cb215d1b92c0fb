/// Whether a session checks versions when it saves (docs/design.md, rule 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConcurrencyChecks {
    /// Decided per document: the session's switch
    /// (`advanced().set_use_optimistic_concurrency`), else the document
    /// type's setting, else the store-wide default.
    #[default]
    Default,
    /// No implicit checks. Explicit change vectors (`store_with_change_vector`,
    /// `delete_with_change_vector`, a set change-vector field) and
    /// `store_new` are still checked.
    Disabled,
    /// Every write is checked: a document the session read must still have
    /// the version it read; a document new to the session must not exist.
    Writes,
    /// As `Writes`, and every document the session read but does not write
    /// is sent as a read guard: the save fails if it changed (or, if it was
    /// found missing, if it now exists). Prevents write skew.
    WritesAndReads,
}

/// How a session remembers the documents it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tracking {
    /// An identity map: loading an id the session already knows returns the
    /// session's copy (including its unsaved changes) without a round trip.
    /// Every `store` is written on save. The default.
    #[default]
    IdentityMap,
    /// As `IdentityMap`, and a stored document whose JSON equals what the
    /// session read is not written on save (when its version is checked, it
    /// is sent as a read guard instead, so the check is kept).
    DirtyTracking,
    /// No identity map: every load and query goes to the engine and returns
    /// what is stored. Versions are still tracked (the last read wins), so
    /// concurrency checks work as usual.
    Lightweight,
}

/// Options of a session; `Default` gives checks per document type and an
/// identity map.
///
/// ```
/// use folio::{ConcurrencyChecks, SessionOptions, Tracking};
///
/// let options = SessionOptions {
///     concurrency_checks: ConcurrencyChecks::WritesAndReads,
///     ..SessionOptions::default()
/// };
/// assert_eq!(options.tracking, Tracking::IdentityMap);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    /// Whether saves check versions.
    pub concurrency_checks: ConcurrencyChecks,
    /// How read documents are remembered.
    pub tracking: Tracking,
    /// What a save does when a document changed since the session read it.
    pub on_conflict: OnConflict,
}

/// What `save_changes` does when a document it writes changed since the
/// session read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnConflict {
    /// Refuse the save: `Error::Concurrency`, nothing written. The default.
    #[default]
    Fail,
    /// Merge each such document three ways (base: the version the session
    /// read; theirs: the one stored now, from the refusal; mine: the
    /// session's) and save again, conditional on theirs, for a few rounds
    /// while theirs keeps moving. Objects merge key by key, other values
    /// whole ([`folio_core::merge`]). When a value was changed differently
    /// on both sides, or a conflict is not a changed document (one created,
    /// deleted, or only read), the save is refused as with `Fail`; the
    /// conflicts that overlap list their paths (`Conflict::overlaps`).
    Merge,
}
