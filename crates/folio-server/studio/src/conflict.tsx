// The conflict dialog: side by side, the version the edit started from,
// the edit, and what is stored now, with a diff by path; then take theirs,
// keep mine (overwrite, against the current change vector), merge here, or
// have the server merge (a collection that keeps revisions).

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Stored } from "./api";
import { deepEqual, diffByPath, markChangedLines, merge3, pointerPath, preview, type Json } from "./diff";
import { JsonEditor } from "./editor";
import { hasInexactNumbers, pretty, validateDocument } from "./jsontext";
import { formatDate } from "./ui";

/** A conflict between an edit and the stored document. */
export interface Conflict {
  /** The version the edit started from. */
  base: Stored;
  /**
   * The editor's text. From a refused save, a document; from the banner,
   * whatever the editor holds: maybe the version it started from (no
   * edit), maybe not JSON at all.
   */
  mine: string;
  /** What is stored now (`null`: someone deleted it). */
  theirs: Stored | null;
  /** `refused`: a write got 412 (or 409: the server could not merge); `preview`: opened from the banner, before saving. */
  reason: "refused" | "preview";
  /** Why the server did not merge, when it was asked to. */
  serverMerge?: ServerMergeRefusal;
}

/**
 * Why a merge on the server was refused: both sides changed these values
 * (JSON Pointers; `""`: the whole document, deleted since), or the
 * collection no longer keeps the version the edit started from.
 */
export type ServerMergeRefusal = { overlaps: string[] } | { notKept: true };

export interface ConflictDialogProps {
  conflict: Conflict;
  title: string;
  busy: boolean;
  /** Why the last write from the dialog failed (the page behind it cannot be read). */
  problem: string | null;
  /** The collection keeps revisions: the server can merge. */
  keepsRevisions: boolean;
  onTakeTheirs: () => void;
  onKeepMine: () => void;
  /** Saves the merged text against the stored version. */
  onSaveMerge: (text: string) => void;
  /** Sends the edit again, for the server to merge it with the stored version. */
  onServerMerge: () => void;
  /** Closes the dialog and goes back to editing. */
  onClose: () => void;
}

/**
 * Why "keep mine" must not be offered, or `null`. It writes the edit over
 * what is stored now: an edit that is not a document would be refused, and
 * no edit at all would write the old version back over their save.
 */
export function keepMineProblem(conflict: Conflict): string | null {
  const validation = validateDocument(conflict.mine);
  if (!validation.ok) {
    return `Your edit is not a document (${validation.message}): go back to editing to fix it.`;
  }
  if (deepEqual(parse(conflict.mine), parse(conflict.base.text))) {
    const undoing = conflict.theirs ? "over their save" : "undoing their delete";
    const revision = conflict.base.revision;
    return `You have not changed anything since revision ${revision}: keeping yours would write it back, ${undoing}.`;
  }
  return null;
}

function parse(text: string): Json | undefined {
  try {
    return JSON.parse(text) as Json;
  } catch {
    return undefined;
  }
}

export function ConflictDialog(props: ConflictDialogProps) {
  const { conflict, busy } = props;
  const dialog = useRef<HTMLDialogElement>(null);
  const [merging, setMerging] = useState(false);
  const [mergeText, setMergeText] = useState("");
  const texts = useMemo(
    () => ({
      base: pretty(conflict.base.text),
      mine: pretty(conflict.mine),
      theirs: conflict.theirs ? pretty(conflict.theirs.text) : null,
    }),
    [conflict],
  );
  const values = useMemo(
    () => ({
      base: parse(conflict.base.text),
      mine: parse(conflict.mine),
      theirs: conflict.theirs ? parse(conflict.theirs.text) : undefined,
    }),
    [conflict],
  );
  // An edit that is not JSON has no paths: the table lists their changes alone.
  const differences = useMemo(
    () => diffByPath(values.base, values.mine ?? values.base, values.theirs),
    [values],
  );
  const cannotKeepMine = useMemo(() => keepMineProblem(conflict), [conflict]);
  const merge = useMemo(() => merge3(values.base, values.mine, values.theirs), [values]);
  const inexact =
    hasInexactNumbers(conflict.base.text) ||
    hasInexactNumbers(conflict.mine) ||
    (conflict.theirs !== null && hasInexactNumbers(conflict.theirs.text));

  useEffect(() => {
    const element = dialog.current;
    if (element && !element.open) element.showModal();
    return () => element?.close();
  }, []);
  // A new conflict (the merge was refused too) starts over at the comparison.
  useEffect(() => setMerging(false), [conflict]);

  const startMerge = () => {
    setMergeText(JSON.stringify(merge.value ?? {}, null, 2));
    setMerging(true);
  };
  const mergeValidation = validateDocument(mergeText);
  const theirs = conflict.theirs;
  const refusal = conflict.serverMerge;

  return (
    <dialog
      ref={dialog}
      class="conflict"
      aria-labelledby="conflict-title"
      aria-describedby="conflict-summary"
      onCancel={(event) => {
        event.preventDefault();
        props.onClose();
      }}
    >
      <h2 id="conflict-title">{props.title}</h2>
      <p id="conflict-summary">
        {conflict.reason === "refused" ? "Your save was refused and nothing was written: " : "Before you save: "}
        your edit started from revision {conflict.base.revision}
        {theirs
          ? `, and the document is now at revision ${theirs.revision} (saved ${formatDate(theirs.lastModified)}).`
          : ", and the document has since been deleted."}
      </p>
      {props.problem && (
        <p class="note error" role="alert">
          {props.problem}
        </p>
      )}
      {refusal && (
        <p class="note warning">
          {"notKept" in refusal
            ? `The server did not merge: it no longer keeps revision ${conflict.base.revision}, the version your edit started from. Nothing was written.`
            : `The server did not merge: ${overlapText(refusal.overlaps)}. Nothing was written.`}
        </p>
      )}

      {!merging && (
        <>
          <div class="columns">
            <Column
              label={`Started from · revision ${conflict.base.revision}`}
              name="Started from"
              lines={markChangedLines(texts.base, texts.base)}
            />
            <Column
              label={values.mine === undefined ? "Your edit · not valid JSON" : "Your edit"}
              name="Your edit"
              lines={markChangedLines(texts.base, texts.mine)}
            />
            {texts.theirs !== null && theirs ? (
              <Column
                label={`Stored now · revision ${theirs.revision}`}
                name="Stored now"
                lines={markChangedLines(texts.base, texts.theirs)}
              />
            ) : (
              <section class="column" aria-label="Stored now">
                <h3>Stored now</h3>
                <p class="note error">Deleted by someone else.</p>
              </section>
            )}
          </div>

          <table class="diff">
            <caption>Changes since revision {conflict.base.revision}</caption>
            <thead>
              <tr>
                <th scope="col">Path</th>
                <th scope="col">Started from</th>
                <th scope="col">Your edit</th>
                <th scope="col">Stored now</th>
              </tr>
            </thead>
            <tbody>
              {differences.length === 0 && (
                <tr>
                  <td colSpan={4} class="muted">
                    No difference in content.
                  </td>
                </tr>
              )}
              {differences.map((row) => (
                <tr key={row.path} class={row.conflict ? "both" : undefined}>
                  <th scope="row" class="code">
                    {row.path}
                    {row.conflict && <span class="badge">both changed</span>}
                  </th>
                  <td class="code">{preview(row.base)}</td>
                  <td class={`code${deepEqual(row.mine, row.base) ? " muted" : " changed"}`}>
                    {values.mine === undefined ? "(not valid JSON)" : preview(row.mine)}
                  </td>
                  <td class={`code${deepEqual(row.theirs, row.base) ? " muted" : " changed"}`}>
                    {theirs ? preview(row.theirs) : "(deleted)"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>

          <div class="dialog-actions">
            <button type="button" class="secondary" disabled={busy} onClick={props.onTakeTheirs}>
              Take theirs
            </button>
            <button
              type="button"
              class="danger"
              disabled={busy || cannotKeepMine !== null}
              aria-describedby={cannotKeepMine === null ? undefined : "keep-mine-problem"}
              onClick={props.onKeepMine}
            >
              {theirs ? "Keep mine" : "Keep mine (create it again)"}
            </button>
            <button type="button" disabled={busy || !theirs || values.mine === undefined} onClick={startMerge}>
              Merge…
            </button>
            {props.keepsRevisions && (
              <button
                type="button"
                class="secondary"
                disabled={busy || !theirs || cannotKeepMine !== null || refusal !== undefined}
                onClick={props.onServerMerge}
              >
                Merge on the server
              </button>
            )}
            <button type="button" class="link" disabled={busy} onClick={props.onClose}>
              Back to editing
            </button>
          </div>
          {cannotKeepMine !== null && (
            <p id="keep-mine-problem" class="note warning">
              {cannotKeepMine}
            </p>
          )}
          <p class="muted small">
            Take theirs: reload the stored version, dropping your edit. Keep mine: overwrite it with your edit
            (If-Match its current version). Merge: edit a merge of both, then save it the same way.
            {props.keepsRevisions &&
              " Merge on the server: send your edit again (If-Match the version it started from, Prefer: merge); the server merges it with theirs, or writes nothing when both changed the same value."}
          </p>
        </>
      )}

      {merging && theirs && (
        <div class="merge">
          {merge.conflicts.length > 0 ? (
            <p class="note warning">
              Both sides changed {merge.conflicts.map(pointerPath).join(", ")}: your edit's value is in the merge
              below. Check it before saving.
            </p>
          ) : (
            <p class="note ok">Both edits merged without overlap: what you changed and what they changed.</p>
          )}
          {inexact && (
            <p class="note warning">
              A number here has more digits than JavaScript keeps: the merge may have rounded it. Check it.
            </p>
          )}
          <JsonEditor
            id="merge-json"
            label="Merged document"
            rows={14}
            value={mergeText}
            invalid={!mergeValidation.ok}
            describedBy="merge-validation"
            onChange={setMergeText}
          />
          <p id="merge-validation" class={mergeValidation.ok ? "muted small" : "note error"}>
            {mergeValidation.ok
              ? `Saved against revision ${theirs.revision} (If-Match its change vector)`
              : mergeValidation.message}
          </p>
          <div class="dialog-actions">
            <button
              type="button"
              disabled={busy || !mergeValidation.ok}
              onClick={() => props.onSaveMerge(mergeText)}
            >
              Save merge
            </button>
            <button type="button" class="secondary" disabled={busy} onClick={() => setMerging(false)}>
              Back to comparison
            </button>
          </div>
        </div>
      )}
    </dialog>
  );
}

/** The values both sides changed, as the server named them. */
function overlapText(overlaps: string[]): string {
  if (overlaps.includes("")) return "the document was deleted since your edit started";
  return `both sides changed ${overlaps.map(pointerPath).join(", ")}`;
}

/** A document's lines in a labelled column, the changed ones marked. */
export function Column({
  label,
  name,
  lines,
}: {
  label: string;
  name: string;
  lines: ReturnType<typeof markChangedLines>;
}) {
  return (
    <section class="column" aria-label={name}>
      <h3>{label}</h3>
      <pre>
        {lines.map((line, index) => (
          <span key={index} class={line.changed ? "line changed" : "line"}>
            {line.text}
            {"\n"}
          </span>
        ))}
      </pre>
    </section>
  );
}
