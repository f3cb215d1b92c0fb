// The changes feed (docs/protocol.md "Changes feed"), read with fetch() rather
// than EventSource: EventSource cannot send an Authorization header, and a
// server with API keys requires one on every request. The Server-Sent
// Events text is parsed here (it is small: lines of `field: value`, an
// empty line ends an event).

import { authHeaders, credentials } from "./api";

/** One committed write, as the feed reports it. */
export interface Change {
  event: "put" | "delete";
  collection: string;
  id: string;
  change_vector: string;
  revision: number;
  etag: number;
}

/** Where a feed is: connecting, live, or not served at all. */
export type FeedState = "connecting" | "live" | "retrying" | "unavailable";

/** One event of an event stream. */
export interface StreamEvent {
  event: string;
  data: string;
  id: string | null;
}

/**
 * The Server-Sent Events parser (the WHATWG "event stream interpretation"):
 * text goes in by chunks, as it arrives, split anywhere; events come out.
 */
export class EventStreamParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private lastId: string | null = null;

  constructor(private readonly dispatch: (event: StreamEvent) => void) {}

  /** Feeds a chunk of the stream. */
  push(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      if (end < 0) return;
      // A lone "\r" at the very end may be the first half of "\r\n".
      if (this.buffer[end] === "\r" && end === this.buffer.length - 1) return;
      const terminator = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + terminator);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) {
        this.dispatch({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      default:
      // "retry" and unknown fields: the reconnection delay is ours to choose.
    }
  }
}

/** What to follow, and whom to tell. */
export interface FeedOptions {
  db: string;
  collection: string;
  /** Report changes with a larger etag than this. */
  since: number;
  onChange: (change: Change) => void;
  /** `problem`: why the feed was interrupted (with `retrying`). */
  onState: (state: FeedState, problem?: string) => void;
  signal: AbortSignal;
}

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10_000;

/**
 * Follows the changes of a collection until `signal` aborts, reconnecting
 * (with `Last-Event-ID`: no change is missed or repeated) when the stream
 * ends or fails. Resolves when aborted, or when the server has no feed.
 *
 * The position moves past an event only once it has been read: an event
 * that cannot be read, or the server's `error` event (it ends the stream
 * with one when it fails to read the changes), interrupts the feed, which
 * reconnects from the last event it did read.
 */
export async function followChanges(options: FeedOptions): Promise<void> {
  const { db, collection, signal } = options;
  let lastEventId = String(options.since);
  let retryMs = RETRY_FIRST_MS;
  options.onState("connecting");
  while (!signal.aborted) {
    let problem: string | undefined;
    try {
      const query = new URLSearchParams({ since: lastEventId, collection });
      const response = await fetch(`/db/${encodeURIComponent(db)}/changes?${query}`, {
        headers: { ...authHeaders(), Accept: "text/event-stream", "Last-Event-ID": lastEventId },
        cache: "no-store",
        signal,
      });
      if (response.status === 401) credentials.reject();
      if (response.status === 404 || response.status === 401 || response.status === 403) {
        // No feed on this server (or not for this key): nothing to retry.
        options.onState("unavailable");
        await response.body?.cancel();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`the server answered HTTP ${response.status}`);
      options.onState("live");
      retryMs = RETRY_FIRST_MS;
      const parser = new EventStreamParser((event) => {
        const change = changeOf(event);
        if (event.id !== null) lastEventId = event.id;
        if (change) options.onChange(change);
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } finally {
        // Left early (an event not read): close the connection.
        reader.cancel().catch(() => undefined);
      }
    } catch (error) {
      if (signal.aborted) return;
      problem = error instanceof Error ? error.message : String(error);
      console.warn("changes feed interrupted; reconnecting", error);
    }
    if (signal.aborted) return;
    options.onState("retrying", problem);
    await sleep(retryMs, signal);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  }
}

/**
 * The change an event reports; `null` for events that report none. Throws
 * on the server's `error` event and on a change that cannot be read.
 */
function changeOf(event: StreamEvent): Change | null {
  if (event.event === "error") throw new Error(`the server ended the feed: ${event.data}`);
  if (event.event !== "put" && event.event !== "delete") return null;
  let change: Omit<Change, "event">;
  try {
    change = JSON.parse(event.data) as Omit<Change, "event">;
  } catch (error) {
    throw new Error(`a ${event.event} event could not be read (${(error as Error).message})`);
  }
  return { ...change, event: event.event };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
