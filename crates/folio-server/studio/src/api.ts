// The Folio HTTP API (docs/protocol.md), as the Studio uses it. Every request
// carries the API key of this tab, when one is set, as
// `Authorization: Bearer <key>`, and bypasses the browser's HTTP cache: a
// document answered with `Last-Modified` and no `Cache-Control` may
// otherwise be served from the cache, stale, on "take theirs".

import { memberText } from "./jsontext";

/** A problem body (RFC 9457), as every error of the server has. */
export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  /** 412: the document's current change vector (`null`: it does not exist). */
  actual?: string | null;
  /** 409 and 412: each refused write, with what is stored now. */
  conflicts?: ProblemConflict[];
}

/** One refused write of a `409` or `412` problem. */
export interface ProblemConflict {
  collection: string;
  id: string;
  /** The change vector stored when the write was refused (`null`: the document does not exist). */
  actual: string | null;
  /** What is stored now, read where the write was refused (`null`: the document does not exist). */
  current: Stored | null;
  /**
   * A merge on the server (`Prefer: merge`) that both sides changed: the
   * JSON Pointer of each value changed on both (`""`: the whole document,
   * deleted since).
   */
  overlaps?: string[];
}

/** An answer that is not a success. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
  }
}

/** A document with its metadata, as lists and queries answer it. */
export interface Entry {
  collection: string;
  id: string;
  change_vector: string;
  revision: number;
  etag: number;
  last_modified: string;
  document: unknown;
}

/** A stored version of a document: its text and what names it. */
export interface Stored {
  /** The document as stored (JSON text). */
  text: string;
  changeVector: string;
  revision: number;
  lastModified: string;
}

/** One version of a document, as read or as written. */
export interface Version extends Stored {
  /** The database-wide etag of this version (where the changes feed resumes). */
  etag: number;
}

/** What a conditional write or delete answered. */
export type WriteOutcome<T> =
  /** Written; `merged`: the server merged the edit (`Prefer: merge`), `value` is what it wrote. */
  | { ok: true; value: T; merged?: boolean }
  /**
   * Refused, nothing written: `412`, the precondition failed, or `409`, a
   * merge on the server found changes on both sides (`conflict.overlaps`).
   */
  | { ok: false; status: 409 | 412; conflict: ProblemConflict };

const KEY_STORAGE = "folio-studio-api-key";

type Listener = () => void;

/**
 * The API key of this tab (kept in sessionStorage: it survives a reload,
 * not the tab) and whether the server asked for one.
 */
export const credentials = {
  key: sessionStorage.getItem(KEY_STORAGE) ?? "",
  /** The server answered 401: a key is missing or unknown. */
  rejected: false,
  listeners: new Set<Listener>(),

  setKey(key: string): void {
    this.key = key.trim();
    if (this.key) sessionStorage.setItem(KEY_STORAGE, this.key);
    else sessionStorage.removeItem(KEY_STORAGE);
    this.rejected = false;
    this.notify();
  },

  reject(): void {
    if (!this.rejected) {
      this.rejected = true;
      this.notify();
    }
  },

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  },

  notify(): void {
    for (const listener of this.listeners) listener();
  },
};

/** The headers every request carries. */
export function authHeaders(): Record<string, string> {
  return credentials.key ? { Authorization: `Bearer ${credentials.key}` } : {};
}

/** `/db/{db}/docs/{collection}[/{id}]`, each segment percent-encoded. */
export function documentPath(db: string, collection: string, id?: string): string {
  const base = `/db/${encodeURIComponent(db)}/docs/${encodeURIComponent(collection)}`;
  return id === undefined ? base : `${base}/${encodeURIComponent(id)}`;
}

/**
 * The position of the last write the Studio made (`Folio-Position`): every
 * later request sends it back as `Folio-After`, so that on a cluster whose
 * standbys serve reads, what the Studio shows after a save includes it.
 */
let lastPosition: string | null = null;

async function send(
  method: string,
  path: string,
  options: { body?: string; headers?: Record<string, string>; contentType?: string } = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders(), ...options.headers };
  if (options.body !== undefined) headers["Content-Type"] = options.contentType ?? "application/json";
  if (lastPosition !== null) headers["Folio-After"] = lastPosition;
  const response = await fetch(path, {
    method,
    headers,
    body: options.body,
    cache: "no-store",
  });
  if (response.status === 401) credentials.reject();
  const position = response.headers.get("Folio-Position");
  if (position !== null) lastPosition = position;
  return response;
}

/** A conflict as the problem body has it. */
interface WireConflict {
  collection: string;
  id: string;
  actual?: string | null;
  current?: { document: unknown; change_vector: string; revision: number; last_modified: string } | null;
  overlaps?: string[];
}

/**
 * The problem body of a failed response (or one made up from its status).
 * The documents of its conflicts keep their text as the server sent it.
 */
async function problemOf(response: Response): Promise<Problem> {
  try {
    const text = await response.text();
    const body = JSON.parse(text) as Omit<Problem, "conflicts"> & { conflicts?: WireConflict[] };
    if (body && typeof body === "object") {
      const conflicts = Array.isArray(body.conflicts)
        ? body.conflicts.map((conflict, index) => conflictOf(conflict, text, index))
        : undefined;
      return { ...body, status: response.status, conflicts };
    }
  } catch {
    // Not JSON: fall through to a problem made from the status line.
  }
  return { status: response.status, title: response.statusText || `HTTP ${response.status}` };
}

function conflictOf(conflict: WireConflict, body: string, index: number): ProblemConflict {
  const current = conflict.current ?? null;
  return {
    collection: conflict.collection,
    id: conflict.id,
    actual: conflict.actual ?? null,
    current: current && {
      text: memberText(body, ["conflicts", index, "current", "document"]) ?? JSON.stringify(current.document),
      changeVector: current.change_vector,
      revision: current.revision,
      lastModified: current.last_modified,
    },
    overlaps: conflict.overlaps,
  };
}

/** A refused write (`409`, `412`) as an outcome, with what is stored now. */
async function refusalOf(response: Response): Promise<WriteOutcome<never>> {
  const problem = await problemOf(response);
  const conflict = problem.conflicts?.[0];
  if (!conflict) throw new HttpError(response.status, problem);
  return { ok: false, status: response.status === 409 ? 409 : 412, conflict };
}

/** Whether the answer is a refused write: its precondition failed, or a merge overlapped. */
function refused(response: Response): boolean {
  return response.status === 412 || response.status === 409;
}

async function fail(response: Response): Promise<never> {
  throw new HttpError(response.status, await problemOf(response));
}

async function json<T>(response: Response): Promise<T> {
  if (!response.ok) await fail(response);
  return (await response.json()) as T;
}

/** Strips the quotes of an `ETag` header: the change vector itself. */
function changeVectorOf(etag: string | null): string {
  if (!etag) return "";
  return etag.replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

function versionOf(response: Response, text: string): Version {
  const headers = response.headers;
  return {
    text,
    changeVector: changeVectorOf(headers.get("ETag")),
    revision: Number(headers.get("Folio-Revision") ?? 0),
    etag: Number(headers.get("Folio-Etag") ?? 0),
    lastModified: headers.get("Last-Modified") ?? "",
  };
}

/** `GET /db`: the databases this key may read. */
export async function listDatabases(): Promise<string[]> {
  const body = await json<{ databases: string[] }>(await send("GET", "/db"));
  return body.databases;
}

/** `PUT /db/{db}` (admin): creates a database; `true` when it is new. */
export async function createDatabase(db: string): Promise<boolean> {
  const response = await send("PUT", `/db/${encodeURIComponent(db)}`);
  if (!response.ok) await fail(response);
  return response.status === 201;
}

/** One page of a collection, in id order. */
export interface Page {
  items: Entry[];
  next: string | null;
}

/** `GET /db/{db}/docs/{collection}?after=&limit=`. */
export async function listDocuments(
  db: string,
  collection: string,
  after: string | null,
  limit: number,
): Promise<Page> {
  const query = new URLSearchParams({ limit: String(limit) });
  if (after !== null) query.set("after", after);
  return json<Page>(await send("GET", `${documentPath(db, collection)}?${query}`));
}

/** `GET` of one document; `null` when it does not exist. */
export async function getDocument(db: string, collection: string, id: string): Promise<Version | null> {
  return getVersion(documentPath(db, collection, id));
}

/** `GET` of a document or a kept version of it; `null` on `404`, unless the database is missing. */
async function getVersion(path: string): Promise<Version | null> {
  const response = await send("GET", path);
  if (response.status === 404) {
    const problem = await problemOf(response);
    // A missing database is an error; a missing document is an answer.
    if (/^no database/.test(problem.detail ?? "")) {
      throw new HttpError(404, problem);
    }
    return null;
  }
  if (!response.ok) await fail(response);
  return versionOf(response, await response.text());
}

/** The precondition of a write: the version it replaces, or none at all. */
export type Precondition = { ifMatch: string } | { ifNoneMatch: "*" };

function preconditionHeaders(precondition: Precondition): Record<string, string> {
  return "ifMatch" in precondition
    ? { "If-Match": `"${precondition.ifMatch}"` }
    : { "If-None-Match": "*" };
}

/**
 * A conditional `PUT`: `If-Match: "<change vector>"` (update only that
 * version) or `If-None-Match: *` (create only). `text` is sent as is.
 *
 * With `merge` (and `If-Match` of the version the edit started from), the
 * server merges the edit with what is stored now when that changed since
 * (`Prefer: merge`, a collection that keeps revisions); what it wrote is
 * then read back from the document's revisions.
 */
export async function putDocument(
  db: string,
  collection: string,
  id: string,
  text: string,
  precondition: Precondition,
  options: { merge?: boolean } = {},
): Promise<WriteOutcome<Version>> {
  const response = await send("PUT", documentPath(db, collection, id), {
    body: text,
    headers: { ...preconditionHeaders(precondition), ...(options.merge ? { Prefer: "merge" } : {}) },
  });
  if (refused(response)) return refusalOf(response);
  if (!response.ok) await fail(response);
  const applied = (response.headers.get("Preference-Applied") ?? "").split(",");
  const merged = applied.some((preference) => preference.trim().toLowerCase() === "merge");
  if (!merged) return { ok: true, value: versionOf(response, text) };
  const changeVector = changeVectorOf(response.headers.get("ETag"));
  const written =
    (await getRevision(db, collection, id, changeVector)) ?? (await getDocument(db, collection, id));
  if (!written) throw new Error("the merge was written, and deleted before it could be read");
  return { ok: true, value: written, merged };
}

/** `POST` to a collection: the server picks the id. */
export async function postDocument(
  db: string,
  collection: string,
  text: string,
): Promise<{ id: string; version: Version }> {
  const response = await send("POST", documentPath(db, collection), { body: text });
  if (!response.ok) await fail(response);
  const metadata = (await response.json()) as { id: string };
  return { id: metadata.id, version: versionOf(response, text) };
}

/** A `DELETE` with `If-Match: "<change vector>"`. */
export async function deleteDocument(
  db: string,
  collection: string,
  id: string,
  changeVector: string,
): Promise<WriteOutcome<null>> {
  const response = await send("DELETE", documentPath(db, collection, id), {
    headers: { "If-Match": `"${changeVector}"` },
  });
  if (refused(response)) return refusalOf(response);
  if (!response.ok) await fail(response);
  return { ok: true, value: null };
}

/** `POST /db/{db}/query` with the query JSON as the user wrote it. */
export async function runQuery(db: string, queryText: string): Promise<{ results: Entry[]; total: number }> {
  return json(await send("POST", `/db/${encodeURIComponent(db)}/query`, { body: queryText }));
}

/** A collection that holds documents, and how many. */
export interface CollectionCount {
  name: string;
  documents: number;
}

/** `GET /db/{db}/collections`: the collections that hold documents, by name. */
export async function listCollections(db: string): Promise<CollectionCount[]> {
  const body = await json<{ collections: CollectionCount[] }>(
    await send("GET", `/db/${encodeURIComponent(db)}/collections`),
  );
  return body.collections;
}

/** A collection's configuration. */
export interface CollectionConfig {
  /** How many versions of each document it keeps (`0`: none). */
  revisions?: { keep: number };
}

/** `/db/{db}/collections/{collection}/config`. */
function configPath(db: string, collection: string): string {
  return `/db/${encodeURIComponent(db)}/collections/${encodeURIComponent(collection)}/config`;
}

/** `GET /db/{db}/collections/{collection}/config`. */
export async function getCollectionConfig(db: string, collection: string): Promise<CollectionConfig> {
  return json<CollectionConfig>(await send("GET", configPath(db, collection)));
}

/** One kept version of a document, as its history lists it. */
export interface RevisionItem {
  change_vector: string;
  revision: number;
  etag: number;
  last_modified: string;
  /** The document's deletion (no document). */
  deleted: boolean;
}

/** A page of a document's history, newest first, and how many versions are kept. */
export interface History {
  items: RevisionItem[];
  total: number;
}

/** `GET /db/{db}/docs/{collection}/{id}/revisions?start=&take=`. */
export async function listRevisions(
  db: string,
  collection: string,
  id: string,
  start: number,
  take: number,
): Promise<History> {
  const query = new URLSearchParams({ start: String(start), take: String(take) });
  return json<History>(await send("GET", `${documentPath(db, collection, id)}/revisions?${query}`));
}

/** `GET` of a kept version; `null` when it is not kept (or is a deletion). */
export async function getRevision(
  db: string,
  collection: string,
  id: string,
  changeVector: string,
): Promise<Version | null> {
  return getVersion(`${documentPath(db, collection, id)}/revisions/${encodeURIComponent(changeVector)}`);
}
