// A document's history: the versions its collection keeps, newest first,
// page by page; what one of them changed from the version before it; and
// reverting to it, a new write conditional on the version shown now (the
// document page makes it, as every write).

import { useEffect, useMemo, useState } from "preact/hooks";
import { getRevision, listRevisions, type RevisionItem, type Stored, type Version } from "./api";
import { Column } from "./conflict";
import { diffByPath, markChangedLines, preview, type Json } from "./diff";
import { pretty } from "./jsontext";
import { ErrorNote, Section, formatDate, useLoad } from "./ui";

/** How many versions a page of the history lists. */
const PAGE_SIZE = 10;

export interface HistoryPanelProps {
  db: string;
  collection: string;
  id: string;
  /** How many versions the collection keeps (`0`: none; `undefined`: not read yet). */
  keep: number | undefined;
  /** Why the collection's configuration could not be read. */
  configError: unknown;
  /** The version the page shows (`null`: the document does not exist). */
  current: Stored | null;
  /** Changes when someone else writes the document: the list is read again. */
  changed: number;
  busy: boolean;
  /** Writes the kept version as the document's new version. */
  onRevert: (version: Version) => void;
}

/** A kept version chosen in the list, and the one kept before it (`null`: none). */
interface Selection {
  item: RevisionItem;
  previous: RevisionItem | null;
}

export function HistoryPanel(props: HistoryPanelProps) {
  const { db, collection, id, keep } = props;
  const [start, setStart] = useState(0);
  const [selection, setSelection] = useState<Selection | null>(null);
  useEffect(() => {
    setStart(0);
    setSelection(null);
  }, [db, collection, id]);
  // One more than a page: the version before the last one shown.
  const page = useLoad(
    async () => (keep ? { start, ...(await listRevisions(db, collection, id, start, PAGE_SIZE + 1)) } : null),
    [db, collection, id, keep, start, props.current?.changeVector, props.changed],
  );
  const data = page.data;
  const shown = data ? data.items.slice(0, PAGE_SIZE) : [];

  return (
    <Section title="History">
      <ErrorNote error={props.configError ?? page.error} />
      {keep === 0 && <NoRevisions db={db} collection={collection} />}
      {data && data.total === 0 && (
        <p class="muted">No version of {id} is kept yet: the next write keeps one.</p>
      )}
      {data && shown.length > 0 && (
        <>
          <table class="history">
            <caption>
              Kept versions, newest first: {data.start + 1}–{data.start + shown.length} of {data.total} (the
              collection keeps {keep} per document)
            </caption>
            <thead>
              <tr>
                <th scope="col">Revision</th>
                <th scope="col">Saved</th>
                <th scope="col">Change vector</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((item, index) => {
                const chosen = selection?.item.change_vector === item.change_vector;
                return (
                  <tr key={item.change_vector} class={chosen ? "selected" : undefined}>
                    <th scope="row">
                      <button
                        type="button"
                        class="link"
                        aria-pressed={chosen}
                        onClick={() => setSelection({ item, previous: data.items[index + 1] ?? null })}
                      >
                        Revision {item.revision}
                      </button>
                      {item.deleted && <span class="badge">deleted</span>}
                      {data.start + index === 0 && <span class="badge current">current</span>}
                    </th>
                    <td>{formatDate(item.last_modified)}</td>
                    <td class="code">{item.change_vector}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {data.total > PAGE_SIZE && (
            <nav class="pager" aria-label="History pages">
              <button
                type="button"
                class="secondary"
                disabled={start === 0 || page.loading}
                onClick={() => setStart(Math.max(0, start - PAGE_SIZE))}
              >
                Newer versions
              </button>
              <span>
                Page {Math.floor(data.start / PAGE_SIZE) + 1} of {Math.ceil(data.total / PAGE_SIZE)}
              </span>
              <button
                type="button"
                class="secondary"
                disabled={data.start + PAGE_SIZE >= data.total || page.loading}
                onClick={() => setStart(start + PAGE_SIZE)}
              >
                Older versions
              </button>
            </nav>
          )}
        </>
      )}
      {selection && (
        <VersionChanges
          key={selection.item.change_vector}
          {...props}
          selection={selection}
          isCurrent={props.current?.changeVector === selection.item.change_vector}
        />
      )}
    </Section>
  );
}

/** What a collection that keeps no revisions says, and how an admin turns them on. */
function NoRevisions({ db, collection }: { db: string; collection: string }) {
  const config = '{"revisions":{"keep":100}}';
  return (
    <>
      <p class="note">{collection} keeps no revisions: only the version stored now can be read.</p>
      <p class="muted small">
        An admin key can turn them on for the writes that follow:{" "}
        <code>
          PUT /db/{db}/collections/{collection}/config
        </code>{" "}
        with <code>{config}</code>, or{" "}
        <code>
          folio config --db {db} {collection} '{config}'
        </code>
        .
      </p>
    </>
  );
}

function parse(text: string | undefined): Json | undefined {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as Json;
  } catch {
    return undefined;
  }
}

/** The chosen version against the one before it, and reverting to it. */
function VersionChanges(props: HistoryPanelProps & { selection: Selection; isCurrent: boolean }) {
  const { db, collection, id, selection } = props;
  const { item, previous } = selection;
  const loaded = useLoad(async () => {
    const read = (kept: RevisionItem | null) =>
      kept && !kept.deleted ? getRevision(db, collection, id, kept.change_vector) : Promise.resolve(null);
    const [version, before] = await Promise.all([read(item), read(previous)]);
    return { version, before };
  }, [db, collection, id, item.change_vector, previous?.change_vector]);
  const version = loaded.data?.version ?? null;
  const before = loaded.data?.before ?? null;
  const texts = useMemo(
    () => ({ version: version ? pretty(version.text) : "", before: before ? pretty(before.text) : "" }),
    [version, before],
  );
  const differences = useMemo(() => {
    const [old, now] = [parse(before?.text), parse(version?.text)];
    return diffByPath(old, now, now);
  }, [version, before]);
  const name = `Revision ${item.revision}${item.deleted ? " (deleted)" : ""}`;
  const beforeName = previous
    ? `revision ${previous.revision}${previous.deleted ? " (deleted)" : ""}`
    : "nothing kept before it";

  return (
    <section class="version" aria-label={name}>
      <h3>
        {name}, saved {formatDate(item.last_modified)}
      </h3>
      <ErrorNote error={loaded.error} />
      {item.deleted && <p class="note">The document was deleted here: this version has no document.</p>}
      {loaded.data && !item.deleted && !version && (
        <p class="note">This version is no longer kept: the collection keeps only the newest {props.keep}.</p>
      )}
      {version && (
        <>
          <div class="columns two">
            <Column
              label={`Before · ${beforeName}`}
              name="Before"
              lines={markChangedLines(texts.version, texts.before)}
            />
            <Column
              label={`This version · revision ${item.revision}`}
              name="This version"
              lines={markChangedLines(texts.before, texts.version)}
            />
          </div>
          <table class="diff">
            <caption>
              Changes from {beforeName} to revision {item.revision}
            </caption>
            <thead>
              <tr>
                <th scope="col">Path</th>
                <th scope="col">Before</th>
                <th scope="col">This version</th>
              </tr>
            </thead>
            <tbody>
              {differences.length === 0 && (
                <tr>
                  <td colSpan={3} class="muted">
                    No difference in content.
                  </td>
                </tr>
              )}
              {differences.map((row) => (
                <tr key={row.path}>
                  <th scope="row" class="code">
                    {row.path}
                  </th>
                  <td class="code">{preview(row.base)}</td>
                  <td class="code changed">{preview(row.mine)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="actions">
            <button
              type="button"
              class="danger"
              disabled={props.busy || props.isCurrent}
              onClick={() => props.onRevert(version)}
            >
              Revert to this version
            </button>
            <span class="muted small">
              {props.isCurrent
                ? "This is the version stored now."
                : props.current
                  ? `Writes it as a new version, only over revision ${props.current.revision}, the one shown (If-Match).`
                  : "Writes it again, only while the document does not exist (If-None-Match: *)."}
            </span>
          </p>
        </>
      )}
    </section>
  );
}
