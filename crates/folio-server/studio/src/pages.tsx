// The browsing pages: databases, a database's collections, a collection's
// documents (paged), a new document, and queries.

import { useEffect, useState } from "preact/hooks";
import {
  createDatabase,
  listCollections,
  listDatabases,
  listDocuments,
  postDocument,
  putDocument,
  runQuery,
  type Entry,
} from "./api";
import { JsonEditor } from "./editor";
import { minify, validateDocument } from "./jsontext";
import { href, knownCollections, navigate, rememberCollection } from "./router";
import {
  Breadcrumbs,
  ErrorNote,
  Section,
  collectionNameProblem,
  databaseNameProblem,
  formatDate,
  idProblem,
  useLoad,
} from "./ui";

/** How many documents a page of a collection shows. */
const PAGE_SIZE = 20;

export function DatabasesPage({ generation }: { generation: number }) {
  const databases = useLoad(listDatabases, [generation]);
  const [name, setName] = useState("");
  const [error, setError] = useState<unknown>();
  const create = async (event: Event) => {
    event.preventDefault();
    const problem = databaseNameProblem(name);
    if (problem) return setError(new Error(problem));
    try {
      await createDatabase(name);
      navigate({ page: "database", db: name });
    } catch (caught) {
      setError(caught);
    }
  };
  return (
    <>
      <h1>Databases</h1>
      <ErrorNote error={databases.error} />
      {databases.data && databases.data.length === 0 && <p class="muted">No databases yet: create one below.</p>}
      {databases.data && databases.data.length > 0 && (
        <ul class="cards" aria-label="Databases">
          {databases.data.map((db) => (
            <li key={db}>
              <a href={href({ page: "database", db })}>{db}</a>
            </li>
          ))}
        </ul>
      )}
      <Section title="Create a database">
        <form class="inline" onSubmit={create}>
          <label>
            Database name{" "}
            <input value={name} required onInput={(event) => setName(event.currentTarget.value.trim())} />
          </label>
          <button type="submit">Create database</button>
        </form>
        <ErrorNote error={error} />
      </Section>
    </>
  );
}

export function DatabasePage({ db, generation }: { db: string; generation: number }) {
  const [collection, setCollection] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const listed = useLoad(() => listCollections(db), [db, generation]);
  const counts = new Map((listed.data ?? []).map(({ name, documents }) => [name, documents]));
  const names = [...new Set([...knownCollections(db), ...counts.keys()])].sort();
  const open = (event: Event) => {
    event.preventDefault();
    const invalid = collectionNameProblem(collection);
    if (invalid) return setProblem(invalid);
    navigate({ page: "collection", db, collection });
  };
  return (
    <>
      <Breadcrumbs trail={[[db, { page: "database", db }]]} />
      <h1>{db}</h1>
      <p class="actions">
        <a class="button secondary" href={href({ page: "query", db })}>
          Query
        </a>
      </p>
      <Section title="Collections">
        <ErrorNote error={listed.error} />
        {names.length > 0 && (
          <ul class="cards" aria-label="Collections">
            {names.map((name) => (
              <li key={name}>
                <a href={href({ page: "collection", db, collection: name })}>
                  {name} <span class="muted small">{documentCount(counts.get(name) ?? 0)}</span>
                </a>
              </li>
            ))}
          </ul>
        )}
        {names.length === 0 && !listed.loading && <p class="muted">No collection holds documents yet.</p>}
        <p class="muted small" aria-live="polite">
          {listed.loading
            ? "Reading the collections…"
            : "The collections that hold documents, and those opened from this browser."}
        </p>
        <form class="inline" onSubmit={open}>
          <label>
            Collection name{" "}
            <input value={collection} required onInput={(event) => setCollection(event.currentTarget.value.trim())} />
          </label>
          <button type="submit">Open collection</button>
        </form>
        {problem && (
          <p class="note error" role="alert">
            {problem}
          </p>
        )}
      </Section>
    </>
  );
}

/** "1 document", "3 documents". */
function documentCount(count: number): string {
  return count === 1 ? "1 document" : `${count} documents`;
}

/** A document in one line, for tables. */
function documentPreview(document: unknown): string {
  const text = JSON.stringify(document);
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

export function CollectionPage({ db, collection, generation }: { db: string; collection: string; generation: number }) {
  // The ids after which each page starts: the first page starts after nothing.
  const [starts, setStarts] = useState<Array<string | null>>([null]);
  const after = starts[starts.length - 1];
  // The page's number travels with its items: while the next page loads,
  // the table still shows (and names) the one before.
  const number = starts.length;
  const page = useLoad(
    async () => ({ number, ...(await listDocuments(db, collection, after, PAGE_SIZE)) }),
    [db, collection, after, generation],
  );
  const [openId, setOpenId] = useState("");
  useEffect(() => setStarts([null]), [db, collection]);
  useEffect(() => rememberCollection(db, collection), [db, collection]);
  const open = (event: Event) => {
    event.preventDefault();
    if (!idProblem(openId)) navigate({ page: "document", db, collection, id: openId });
  };
  const items = page.data?.items ?? [];
  return (
    <>
      <Breadcrumbs
        trail={[
          [db, { page: "database", db }],
          [collection, { page: "collection", db, collection }],
        ]}
      />
      <h1>{collection}</h1>
      <p class="actions">
        <a class="button" href={href({ page: "new", db, collection })}>
          New document
        </a>
        <a class="button secondary" href={href({ page: "query", db, collection })}>
          Query this collection
        </a>
        <button type="button" class="secondary" onClick={page.reload}>
          Refresh
        </button>
      </p>
      <form class="inline" onSubmit={open}>
        <label>
          Document id <input value={openId} onInput={(event) => setOpenId(event.currentTarget.value)} />
        </label>
        <button type="submit" class="secondary">
          Open document
        </button>
      </form>
      <ErrorNote error={page.error} />
      {page.data && items.length === 0 && page.data.number === 1 && (
        <p class="muted">No documents in {collection} yet.</p>
      )}
      {page.data && items.length > 0 && (
        <EntryTable db={db} entries={items} caption={`Documents in ${collection}, page ${page.data.number}`} />
      )}
      <nav class="pager" aria-label="Pages">
        <button
          type="button"
          class="secondary"
          disabled={starts.length === 1 || page.loading}
          onClick={() => setStarts(starts.slice(0, -1))}
        >
          Previous page
        </button>
        <span>Page {page.data?.number ?? number}</span>
        <button
          type="button"
          class="secondary"
          disabled={!page.data?.next || page.loading}
          onClick={() => page.data?.next && setStarts([...starts, page.data.next])}
        >
          Next page
        </button>
      </nav>
    </>
  );
}

/** Documents with their metadata, each id a link to its page. */
function EntryTable({ db, entries, caption }: { db: string; entries: Entry[]; caption: string }) {
  return (
    <table class="entries">
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Id</th>
          <th scope="col">Revision</th>
          <th scope="col">Last modified</th>
          <th scope="col">Document</th>
        </tr>
      </thead>
      <tbody>
        {entries.map((entry) => (
          <tr key={`${entry.collection}/${entry.id}`}>
            <td>
              <a href={href({ page: "document", db, collection: entry.collection, id: entry.id })}>{entry.id}</a>
            </td>
            <td class="number">{entry.revision}</td>
            <td>{formatDate(entry.last_modified)}</td>
            <td class="code">{documentPreview(entry.document)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function NewDocumentPage({ db, collection }: { db: string; collection: string }) {
  const [id, setId] = useState("");
  const [text, setText] = useState("{\n  \n}");
  const [error, setError] = useState<unknown>();
  const [existing, setExisting] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const validation = validateDocument(text);
  const create = async (event: Event) => {
    event.preventDefault();
    setError(undefined);
    setExisting(null);
    if (!validation.ok) return;
    if (id !== "" && idProblem(id)) return setError(new Error(idProblem(id) ?? ""));
    setBusy(true);
    try {
      if (id === "") {
        const created = await postDocument(db, collection, minify(text));
        rememberCollection(db, collection);
        navigate({ page: "document", db, collection, id: created.id });
      } else {
        const outcome = await putDocument(db, collection, id, minify(text), { ifNoneMatch: "*" });
        if (outcome.ok) {
          rememberCollection(db, collection);
          navigate({ page: "document", db, collection, id });
        } else {
          setExisting(id);
        }
      }
    } catch (caught) {
      setError(caught);
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
      <h1>New document in {collection}</h1>
      <form class="editor" onSubmit={create}>
        <label>
          Document id{" "}
          <input
            value={id}
            placeholder="empty: the server makes one"
            onInput={(event) => setId(event.currentTarget.value)}
          />
        </label>
        <JsonEditor
          id="new-document-json"
          label="Document JSON"
          rows={16}
          value={text}
          invalid={!validation.ok}
          describedBy="new-document-validation"
          onChange={setText}
        />
        <p id="new-document-validation" class={validation.ok ? "muted small" : "note error"}>
          {validation.ok ? "Valid JSON" : validation.message}
        </p>
        <p class="actions">
          <button type="submit" disabled={!validation.ok || busy}>
            Create
          </button>
          <span class="muted small">
            {id === "" ? "POST: the server picks a time-sortable id" : "PUT with If-None-Match: * (only if it does not exist)"}
          </span>
        </p>
      </form>
      {existing !== null && (
        <p class="note error" role="alert">
          Not created: a document with id {existing} already exists.{" "}
          <a href={href({ page: "document", db, collection, id: existing })}>Open it</a>
        </p>
      )}
      <ErrorNote error={error} />
    </>
  );
}

export function QueryPage({ db, collection }: { db: string; collection?: string }) {
  const [text, setText] = useState(() =>
    JSON.stringify({ collection: collection ?? "", where: [], order_by: [], take: 50 }, null, 2),
  );
  const [answer, setAnswer] = useState<{ results: Entry[]; total: number }>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  let parseProblem: string | null = null;
  try {
    JSON.parse(text);
  } catch (caught) {
    parseProblem = `Invalid JSON: ${(caught as Error).message}`;
  }
  const run = async (event: Event) => {
    event.preventDefault();
    setError(undefined);
    setBusy(true);
    try {
      setAnswer(await runQuery(db, text));
    } catch (caught) {
      setAnswer(undefined);
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <Breadcrumbs trail={[[db, { page: "database", db }], ["Query", { page: "query", db }]]} />
      <h1>Query {db}</h1>
      <form class="editor" onSubmit={run}>
        <JsonEditor
          id="query-json"
          label="Query JSON"
          rows={10}
          value={text}
          invalid={parseProblem !== null}
          describedBy="query-help"
          onChange={setText}
        />
        <p id="query-help" class={parseProblem ? "note error" : "muted small"}>
          {parseProblem ??
            "where: [{ path, op, value }] with op one of eq ne lt le gt ge in contains starts_with exists; order_by: [{ path, desc }]; skip; take"}
        </p>
        <p class="actions">
          <button type="submit" disabled={parseProblem !== null || busy}>
            Run query
          </button>
        </p>
      </form>
      <ErrorNote error={error} />
      {answer && (
        <Section title="Results">
          <p role="status">
            {answer.results.length} shown of {answer.total} matching
          </p>
          {answer.results.length > 0 && <EntryTable db={db} entries={answer.results} caption="Query results" />}
        </Section>
      )}
    </>
  );
}
