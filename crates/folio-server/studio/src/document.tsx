// One document: its metadata, the JSON editor, conditional save and
// delete, the conflict dialog when a write is refused (412, or 409 when the
// server could not merge), the live banner when someone else saves it
// while it is open, and its history.
//
// The version the edit started from (`base`) is what every write is
// conditional on: save sends `If-Match: "<its change vector>"`, so a save
// over someone else's newer version is refused (412) instead of silently
// overwriting it.

import { useEffect, useRef, useState } from "preact/hooks";
import {
  deleteDocument,
  getCollectionConfig,
  getDocument,
  putDocument,
  type Precondition,
  type Stored,
  type Version,
} from "./api";
import { ConflictDialog, keepMineProblem, type Conflict, type ServerMergeRefusal } from "./conflict";
import { JsonEditor } from "./editor";
import { followChanges, type Change, type FeedState } from "./feed";
import { HistoryPanel } from "./history";
import { minify, pretty, validateDocument } from "./jsontext";
import { navigate, rememberCollection } from "./router";
import { Breadcrumbs, ErrorNote, describe, formatDate, mayDropUnsavedEdit, useLoad, useUnsavedEdit } from "./ui";

interface Props {
  db: string;
  collection: string;
  id: string;
  generation: number;
}

type Notice = { kind: "ok" | "error"; text: string } | null;

/**
 * The conflict dialog, when open: the conflict, and why the last write
 * from the dialog failed (told in the dialog: the page is behind it).
 */
type Dialog = { conflict: Conflict; problem: string | null } | null;

/** Where the changes feed is, and why it was interrupted. */
type Feed = { state: FeedState; problem?: string };

/** How a write is made, and what its success is called. */
interface WriteOptions {
  /** Sent with `Prefer: merge`: the server merges it with what is stored now. */
  serverMerge?: boolean;
  /** What the notice calls it once written (`Saved`). */
  done?: string;
}

export function DocumentPage({ db, collection, id, generation }: Props) {
  const label = `${collection} #${id}`;
  const [base, setBase] = useState<Version | null>(null);
  const [missing, setMissing] = useState(false);
  const [loadError, setLoadError] = useState<unknown>();
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState<Notice>(null);
  const [dialog, setDialog] = useState<Dialog>(null);
  const [remote, setRemote] = useState<Change | null>(null);
  const [feed, setFeed] = useState<Feed>({ state: "connecting" });
  const [confirmingDelete, setConfirmingDelete] = useState(false);
  // Where the changes feed starts: the etag of the first version loaded.
  const [feedSince, setFeedSince] = useState<number | null>(null);
  const config = useLoad(() => getCollectionConfig(db, collection), [db, collection, generation]);
  const keep = config.data ? (config.data.revisions?.keep ?? 0) : undefined;

  // Read by the feed's callback, which outlives renders.
  const baseRef = useRef<Version | null>(null);
  const savingRef = useRef(false);
  const ownWrites = useRef(new Set<string>());
  const heldChanges = useRef<Change[]>([]);

  const adopt = (version: Version) => {
    baseRef.current = version;
    setBase(version);
    setText(pretty(version.text));
    setMissing(false);
    setRemote((current) => (current && current.etag > version.etag ? current : null));
    setFeedSince((since) => since ?? version.etag);
  };

  /**
   * Reads the stored version and shows it. `then` runs in the same update
   * as the new version (or the error), so nothing is ever shown half done.
   */
  const load = async (then?: () => void) => {
    setLoadError(undefined);
    let version: Version | null;
    try {
      version = await getDocument(db, collection, id);
    } catch (error) {
      then?.();
      setLoadError(error);
      return;
    }
    then?.();
    if (version) {
      adopt(version);
    } else {
      baseRef.current = null;
      setBase(null);
      setMissing(true);
      setRemote(null);
    }
  };

  const openDialog = (conflict: Conflict) => setDialog({ conflict, problem: null });
  const closeDialog = () => setDialog(null);

  useEffect(() => {
    setBase(null);
    closeDialog();
    setRemote(null);
    setNotice(null);
    setFeedSince(null);
    ownWrites.current.clear();
    rememberCollection(db, collection);
    void load();
  }, [db, collection, id, generation]);

  /** A change reported by the feed: someone else's, unless we wrote it. */
  const consider = (change: Change) => {
    if (change.id !== id) return;
    if (savingRef.current) {
      // Our own save may be this change: decide once its answer is in.
      heldChanges.current.push(change);
      return;
    }
    const current = baseRef.current;
    if (ownWrites.current.has(change.change_vector)) return;
    if (current && change.etag <= current.etag) return;
    setRemote((shown) => (shown && shown.etag >= change.etag ? shown : change));
  };
  const considerRef = useRef(consider);
  considerRef.current = consider;

  useEffect(() => {
    if (feedSince === null) return;
    const abort = new AbortController();
    void followChanges({
      db,
      collection,
      since: feedSince,
      signal: abort.signal,
      onChange: (change) => considerRef.current(change),
      onState: (state, problem) => setFeed({ state, problem }),
    });
    return () => abort.abort();
  }, [db, collection, feedSince, generation]);

  const finishSaving = () => {
    savingRef.current = false;
    const held = heldChanges.current;
    heldChanges.current = [];
    held.forEach((change) => considerRef.current(change));
  };

  /**
   * Writes `editText` with `precondition`; when refused, opens the conflict
   * dialog with what is stored now, as the refusal tells it, `startedFrom`
   * being the version the edit was made from (none: it was written over a
   * deletion, and the refusal is told in a notice). A failure is told where
   * the user is looking: in the dialog when the write came from it, the
   * edit kept either way.
   */
  const write = async (
    editText: string,
    precondition: Precondition,
    startedFrom: Stored | null,
    options: WriteOptions = {},
  ) => {
    const fromDialog = dialog !== null;
    setBusy(true);
    setNotice(null);
    setDialog((open) => open && { ...open, problem: null });
    savingRef.current = true;
    try {
      const body = minify(editText);
      const outcome = await putDocument(db, collection, id, body, precondition, { merge: options.serverMerge });
      if (outcome.ok) {
        ownWrites.current.add(outcome.value.changeVector);
        adopt(outcome.value);
        closeDialog();
        const done = outcome.merged ? "Merged on the server" : (options.done ?? "Saved");
        setNotice({ kind: "ok", text: `${done} — revision ${outcome.value.revision}` });
      } else if (startedFrom === null) {
        setNotice({ kind: "error", text: `Not written: someone else created ${label} meanwhile. Reload to see it.` });
      } else {
        const { current, overlaps } = outcome.conflict;
        const serverMerge: ServerMergeRefusal | undefined = options.serverMerge
          ? outcome.status === 409
            ? { overlaps: overlaps ?? [""] }
            : { notKept: true }
          : undefined;
        openDialog({ base: startedFrom, mine: editText, theirs: current, reason: "refused", serverMerge });
      }
    } catch (error) {
      const problem = `Not saved: ${describe(error)}`;
      if (fromDialog) setDialog((open) => open && { ...open, problem });
      else setNotice({ kind: "error", text: problem });
    } finally {
      finishSaving();
      setBusy(false);
    }
  };

  const validation = validateDocument(text);
  const dirty = base !== null && text !== pretty(base.text);
  useUnsavedEdit(dirty ? label : null);

  const save = (event: Event) => {
    event.preventDefault();
    if (!base || !validation.ok) return;
    void write(text, { ifMatch: base.changeVector }, base);
  };

  const showDifferences = async () => {
    if (!base) return;
    setBusy(true);
    try {
      const theirs = await getDocument(db, collection, id);
      openDialog({ base, mine: text, theirs, reason: "preview" });
    } catch (error) {
      setNotice({ kind: "error", text: describe(error) });
    } finally {
      setBusy(false);
    }
  };

  /** Drops the edit for the stored version; the dialog stays until it is shown. */
  const takeTheirs = async () => {
    setBusy(true);
    setNotice(null);
    await load(() => {
      setBusy(false);
      closeDialog();
    });
  };

  /** Reload (banner and editor): as take theirs, once the user agrees to drop the edit. */
  const reload = () => {
    if (mayDropUnsavedEdit(`Reload ${label} as stored now?`)) void takeTheirs();
  };

  const conflict = dialog?.conflict;

  const keepMine = () => {
    if (!conflict || keepMineProblem(conflict) !== null) return;
    const precondition: Precondition = conflict.theirs
      ? { ifMatch: conflict.theirs.changeVector }
      : { ifNoneMatch: "*" };
    void write(conflict.mine, precondition, conflict.base);
  };

  const saveMerge = (merged: string) => {
    if (!conflict?.theirs) return;
    // The merge is made from the stored version: that is what it replaces.
    void write(merged, { ifMatch: conflict.theirs.changeVector }, conflict.theirs);
  };

  /** The edit again, from the version it started from, for the server to merge with theirs. */
  const serverMerge = () => {
    if (!conflict?.theirs || keepMineProblem(conflict) !== null) return;
    void write(conflict.mine, { ifMatch: conflict.base.changeVector }, conflict.base, { serverMerge: true });
  };

  /** A kept version written again as the new one, over the version shown (none: a deletion). */
  const revert = (version: Version) => {
    if (!mayDropUnsavedEdit(`Revert ${label} to revision ${version.revision}?`)) return;
    const precondition: Precondition = base ? { ifMatch: base.changeVector } : { ifNoneMatch: "*" };
    void write(version.text, precondition, base, { done: `Reverted to revision ${version.revision}` });
  };

  const remove = async () => {
    if (!base) return;
    setBusy(true);
    setConfirmingDelete(false);
    try {
      const outcome = await deleteDocument(db, collection, id, base.changeVector);
      if (outcome.ok) {
        navigate({ page: "collection", db, collection });
      } else {
        setNotice({
          kind: "error",
          text: outcome.conflict.actual
            ? "Not deleted: someone else changed it since you opened it. Reload to see their version."
            : "Not deleted: someone else deleted it already.",
        });
      }
    } catch (error) {
      setNotice({ kind: "error", text: `Not deleted: ${describe(error)}` });
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <Breadcrumbs
        trail={[
          [db, { page: "database", db }],
          [collection, { page: "collection", db, collection }],
        ]}
      />
      <h1 class="document-title">{id}</h1>
      <FeedIndicator feed={feed} active={feedSince !== null} />
      <ErrorNote error={loadError} />
      {missing && (
        <p class="note" role="status">
          No document {label}.{" "}
          <a href={`#/db/${encodeURIComponent(db)}/collections/${encodeURIComponent(collection)}/new`}>
            Create a document
          </a>
        </p>
      )}

      {remote && (
        <div class="banner" role="alert">
          <strong>
            {remote.event === "delete"
              ? "Deleted by someone else"
              : `Changed by someone else — revision ${remote.revision}`}
          </strong>
          <span>
            {remote.event === "delete"
              ? "Saving now would be refused: it no longer exists."
              : dirty
                ? "Your unsaved edit started from an older version: saving will be refused."
                : "You are looking at an older version."}
          </span>
          <span class="banner-actions">
            {remote.event === "put" && (
              <button type="button" class="secondary" disabled={busy} onClick={showDifferences}>
                Show differences
              </button>
            )}
            <button type="button" class="secondary" disabled={busy} onClick={reload}>
              Reload
            </button>
          </span>
        </div>
      )}

      {base && (
        <>
          <dl class="metadata" aria-label="Metadata">
            <div>
              <dt>Change vector</dt>
              <dd class="code">{base.changeVector}</dd>
            </div>
            <div>
              <dt>Revision</dt>
              <dd>{base.revision}</dd>
            </div>
            <div>
              <dt>Last modified</dt>
              <dd>{formatDate(base.lastModified)}</dd>
            </div>
            <div>
              <dt>Etag</dt>
              <dd>{base.etag}</dd>
            </div>
          </dl>

          <form class="editor" onSubmit={save}>
            <JsonEditor
              id="document-json"
              label="Document JSON"
              rows={18}
              value={text}
              invalid={!validation.ok}
              describedBy="document-validation"
              onChange={setText}
            />
            <p id="document-validation" class={validation.ok ? "muted small" : "note error"}>
              {validation.ok ? (dirty ? "Valid JSON, not saved" : "Valid JSON, as stored") : validation.message}
            </p>
            <p class="actions">
              <button type="submit" disabled={!dirty || !validation.ok || busy}>
                Save
              </button>
              <button type="button" class="secondary" disabled={!dirty || busy} onClick={() => adopt(base)}>
                Discard changes
              </button>
              <button type="button" class="secondary" disabled={busy} onClick={reload}>
                Reload
              </button>
              <span class="spacer" />
              {confirmingDelete ? (
                <span class="confirm" role="group" aria-label="Confirm delete">
                  Delete {label}?{" "}
                  <button type="button" class="danger" disabled={busy} onClick={remove}>
                    Delete for good
                  </button>
                  <button type="button" class="secondary" onClick={() => setConfirmingDelete(false)}>
                    Cancel
                  </button>
                </span>
              ) : (
                <button type="button" class="danger" disabled={busy} onClick={() => setConfirmingDelete(true)}>
                  Delete
                </button>
              )}
            </p>
          </form>
        </>
      )}

      {notice && (
        <p class={`note ${notice.kind}`} role={notice.kind === "error" ? "alert" : "status"}>
          {notice.text}
        </p>
      )}

      {(base || missing) && (
        <HistoryPanel
          db={db}
          collection={collection}
          id={id}
          keep={keep}
          configError={config.error}
          current={base}
          changed={remote?.etag ?? 0}
          busy={busy}
          onRevert={revert}
        />
      )}

      {dialog && (
        <ConflictDialog
          conflict={dialog.conflict}
          title={
            dialog.conflict.reason === "refused"
              ? `Conflict: someone else saved ${label}`
              : `Someone else saved ${label}`
          }
          busy={busy}
          problem={dialog.problem}
          keepsRevisions={(keep ?? 0) > 0}
          onTakeTheirs={takeTheirs}
          onKeepMine={keepMine}
          onSaveMerge={saveMerge}
          onServerMerge={serverMerge}
          onClose={closeDialog}
        />
      )}
    </>
  );
}

function FeedIndicator({ feed, active }: { feed: Feed; active: boolean }) {
  if (!active) return null;
  const text: Record<FeedState, string> = {
    connecting: "Connecting to the changes feed…",
    live: "Live: you will see saves by others as they happen",
    retrying: feed.problem
      ? `Changes feed interrupted (${feed.problem}), reconnecting…`
      : "Changes feed interrupted, reconnecting…",
    unavailable: "Live updates unavailable on this server",
  };
  return (
    <p class={`feed feed-${feed.state}`} aria-live="polite" data-feed-state={feed.state}>
      <span class="dot" aria-hidden="true" />
      {text[feed.state]}
    </p>
  );
}
