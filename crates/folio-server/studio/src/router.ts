// Pages live in the URL's fragment (#/db/shop/collections/people/docs/p1),
// so the server serves one page for all of them and the browser's history
// and links work. Every name and id is percent-encoded as one segment.

import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "databases" }
  | { page: "database"; db: string }
  | { page: "collection"; db: string; collection: string }
  | { page: "document"; db: string; collection: string; id: string }
  | { page: "new"; db: string; collection: string }
  | { page: "query"; db: string; collection?: string }
  | { page: "unknown" };

/** The route of a fragment (`#/…`). */
export function parseHash(hash: string): Route {
  const path = hash.replace(/^#\/?/, "");
  if (path === "") return { page: "databases" };
  let segments: string[];
  try {
    segments = path.split("/").map(decodeURIComponent);
  } catch {
    return { page: "unknown" };
  }
  const [root, db, kind, collection, docs, id, ...rest] = segments;
  if (root !== "db" || !db) return { page: "unknown" };
  if (kind === undefined) return { page: "database", db };
  if (kind === "query" && collection === undefined) return { page: "query", db };
  if (kind === "query" && docs === undefined) return { page: "query", db, collection };
  if (kind !== "collections" || !collection) return { page: "unknown" };
  if (docs === undefined) return { page: "collection", db, collection };
  if (docs === "new" && id === undefined) return { page: "new", db, collection };
  if (docs === "docs" && id !== undefined && rest.length === 0) return { page: "document", db, collection, id };
  return { page: "unknown" };
}

/** The fragment of a route. */
export function href(route: Route): string {
  const encode = (...segments: string[]) => `#/${segments.map(encodeURIComponent).join("/")}`;
  switch (route.page) {
    case "databases":
    case "unknown":
      return "#/";
    case "database":
      return encode("db", route.db);
    case "collection":
      return encode("db", route.db, "collections", route.collection);
    case "document":
      return encode("db", route.db, "collections", route.collection, "docs", route.id);
    case "new":
      return encode("db", route.db, "collections", route.collection, "new");
    case "query":
      return route.collection === undefined
        ? encode("db", route.db, "query")
        : encode("db", route.db, "query", route.collection);
  }
}

/**
 * The fragment of a move already agreed to: `navigate`'s, or that of a
 * link the user agreed to follow. The page is not asked about it again.
 */
let agreedMove: string | null = null;

/**
 * Goes to a route (a new history entry). The page is not asked whether it
 * may be left: the app moves after something the user asked for (a
 * document deleted, one created).
 */
export function navigate(route: Route): void {
  agreedMove = href(route);
  location.hash = agreedMove;
}

/**
 * The current route, following the fragment. A move away that the user
 * makes happens only when `mayLeave()` agrees. A link is asked about
 * before it is followed, so that declining leaves the history as it was;
 * a move the browser has already made (back, forward, the address bar) is
 * undone with a new entry for the page shown, so that going back again
 * goes where it went.
 */
export function useRoute(mayLeave: () => boolean): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    let shown = location.hash;
    const askBeforeFollowing = (event: MouseEvent) => {
      const plainClick = event.button === 0 && !(event.metaKey || event.ctrlKey || event.shiftKey || event.altKey);
      if (event.defaultPrevented || !plainClick || !(event.target instanceof Element)) return;
      const link = event.target.closest("a");
      if (!link?.getAttribute("href")?.startsWith("#") || link.hash === location.hash) return;
      if (mayLeave()) agreedMove = link.hash;
      else event.preventDefault();
    };
    const follow = () => {
      const agreed = location.hash === agreedMove;
      agreedMove = null;
      if (location.hash === shown) return;
      if (!agreed && !mayLeave()) {
        history.pushState(history.state, "", shown || location.pathname + location.search);
        return;
      }
      shown = location.hash;
      setRoute(parseHash(shown));
    };
    document.addEventListener("click", askBeforeFollowing);
    window.addEventListener("hashchange", follow);
    return () => {
      document.removeEventListener("click", askBeforeFollowing);
      window.removeEventListener("hashchange", follow);
    };
  }, [mayLeave]);
  return route;
}

const COLLECTIONS = "folio-studio-collections:";

/**
 * The collections of a database that this browser has opened: the
 * protocol has no request that lists collections, so the Studio remembers
 * the ones it has seen.
 */
export function knownCollections(db: string): string[] {
  try {
    const stored = JSON.parse(localStorage.getItem(COLLECTIONS + db) ?? "[]") as unknown;
    return Array.isArray(stored) ? stored.filter((name): name is string => typeof name === "string") : [];
  } catch {
    return [];
  }
}

/** Adds a collection to those remembered for `db`. */
export function rememberCollection(db: string, collection: string): void {
  const known = knownCollections(db);
  if (known.includes(collection)) return;
  known.push(collection);
  known.sort();
  localStorage.setItem(COLLECTIONS + db, JSON.stringify(known));
}
