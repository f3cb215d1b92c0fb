// Small pieces shared by the pages: loading data, showing errors,
// breadcrumbs, the API-key field, asking before an unsaved edit is
// dropped, names as docs/protocol.md allows them.

import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useLayoutEffect, useState } from "preact/hooks";
import { HttpError, credentials } from "./api";
import { href, type Route } from "./router";

/** What a load gave: the data, or the error, while or after loading. */
export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change (and on `reload`), keeping the latest answer. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let current = true;
    setState((previous) => ({ ...previous, loading: true }));
    load().then(
      (data) => current && setState({ data, loading: false }),
      (error: unknown) => current && setState({ error, loading: false }),
    );
    return () => {
      current = false;
    };
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((value) => value + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

/** An error as a person reads it: the problem's title and detail. */
export function describe(error: unknown): string {
  if (error instanceof HttpError) {
    const { title, detail } = error.problem;
    return [title, detail].filter(Boolean).join(": ") || `HTTP ${error.status}`;
  }
  if (error instanceof TypeError) return `The server could not be reached (${error.message})`;
  return error instanceof Error ? error.message : String(error);
}

/** An error box (`role="alert"`). */
export function ErrorNote({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  const unauthorized = error instanceof HttpError && error.status === 401;
  return (
    <p class="note error" role="alert">
      {describe(error)}
      {unauthorized && " — enter an API key above."}
    </p>
  );
}

/** The trail of links above a page's title. */
export function Breadcrumbs({ trail }: { trail: Array<[string, Route]> }) {
  return (
    <nav class="breadcrumbs" aria-label="Breadcrumbs">
      <a href="#/">Databases</a>
      {trail.map(([label, route]) => (
        <span key={label}>
          <span aria-hidden="true"> › </span>
          <a href={href(route)}>{label}</a>
        </span>
      ))}
    </nav>
  );
}

/** Re-renders when the API key changes or the server refuses one. */
export function useCredentials(): typeof credentials {
  const [, setTick] = useState(0);
  useEffect(() => credentials.subscribe(() => setTick((tick) => tick + 1)), []);
  return credentials;
}

/**
 * The API-key field: shown when the server asked for a key (a 401) or a
 * key is set. The key stays in this tab (sessionStorage).
 */
export function KeyField() {
  const auth = useCredentials();
  const [draft, setDraft] = useState(auth.key);
  const [open, setOpen] = useState(false);
  useEffect(() => setDraft(auth.key), [auth.key]);
  if (!auth.rejected && !auth.key && !open) {
    return (
      <button type="button" class="link" onClick={() => setOpen(true)}>
        API key…
      </button>
    );
  }
  return (
    <form
      class="key-field"
      onSubmit={(event) => {
        event.preventDefault();
        auth.setKey(draft);
      }}
    >
      {auth.rejected && (
        <span class="key-needed" role="alert">
          This server requires an API key
        </span>
      )}
      <label>
        API key{" "}
        <input
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={draft}
          onInput={(event) => setDraft(event.currentTarget.value)}
        />
      </label>
      <button type="submit">Use key</button>
      {auth.key && (
        <button
          type="button"
          class="secondary"
          onClick={() => {
            auth.setKey("");
            setOpen(false);
          }}
        >
          Forget key
        </button>
      )}
    </form>
  );
}

/** The unsaved edit on the page (what it edits), if any. */
let unsavedEdit: string | null = null;

/**
 * Tells what leaving or loading the page again would drop: `label` while
 * the page holds an unsaved edit of it, `null` when it holds none. While
 * it holds one, closing or reloading the tab asks too (the browser's own
 * question: it shows no text of ours).
 */
export function useUnsavedEdit(label: string | null): void {
  // A layout effect runs as the render that changed the edit commits, in
  // the same turn as the keystroke: a back button pressed right after it
  // already finds the edit (a plain effect waits for the next frame).
  useLayoutEffect(() => {
    unsavedEdit = label;
    if (label === null) return;
    const askBeforeUnload = (event: BeforeUnloadEvent) => {
      event.preventDefault();
      // Older browsers ask only when returnValue is set (MDN's legacy form).
      event.returnValue = true;
    };
    window.addEventListener("beforeunload", askBeforeUnload);
    return () => {
      unsavedEdit = null;
      window.removeEventListener("beforeunload", askBeforeUnload);
    };
  }, [label]);
}

/**
 * Whether to go on with something that drops the unsaved edit: yes when
 * there is none; otherwise the user is asked `question` (window.confirm).
 * `ifCancelled` says what declining keeps.
 */
export function mayDropUnsavedEdit(question: string, ifCancelled = "Cancel keeps it."): boolean {
  if (unsavedEdit === null) return true;
  return window.confirm(`${question}\n\nYour unsaved edit of ${unsavedEdit} will be lost. ${ifCancelled}`);
}

/** A labelled page section. */
export function Section({ title, children }: { title: string; children: ComponentChildren }) {
  const id = `section-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** docs/protocol.md: `[a-z0-9][a-z0-9_-]{0,62}`. */
export function databaseNameProblem(name: string): string | null {
  return /^[a-z0-9][a-z0-9_-]{0,62}$/.test(name)
    ? null
    : "A database name is 1–63 of a–z, 0–9, _ and -, starting with a letter or digit";
}

/** docs/protocol.md: `[A-Za-z0-9_-]{1,128}`. */
export function collectionNameProblem(name: string): string | null {
  return /^[A-Za-z0-9_-]{1,128}$/.test(name) ? null : "A collection name is 1–128 of A–Z, a–z, 0–9, _ and -";
}

/** docs/protocol.md: 1–512 bytes of UTF-8, no control characters. */
export function idProblem(id: string): string | null {
  const bytes = new TextEncoder().encode(id).length;
  if (bytes === 0 || bytes > 512) return "An id is 1–512 bytes of UTF-8";
  if (/[\u0000-\u001f\u007f-\u009f]/.test(id)) return "An id has no control characters";
  return null;
}

/** A date as the reader's locale writes it. */
export function formatDate(value: string): string {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
}
