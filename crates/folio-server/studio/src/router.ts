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

/** Goes to a route (a new history entry). */
export function navigate(route: Route): void {
  location.hash = href(route);
}

/** The current route, following the fragment. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const follow = () => setRoute(parseHash(location.hash));
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);
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
