// Folio Studio: browse databases, collections and documents, edit them
// with optimistic concurrency (If-Match, the conflict dialog on 412, a
// banner when someone else saves), and run queries.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { credentials } from "./api";
import { DocumentPage } from "./document";
import { CollectionPage, DatabasePage, DatabasesPage, NewDocumentPage, QueryPage } from "./pages";
import { href, useRoute, type Route } from "./router";
import { KeyField, mayDropUnsavedEdit } from "./ui";
import "./style.css";

function Page({ route, generation }: { route: Route; generation: number }) {
  switch (route.page) {
    case "databases":
      return <DatabasesPage generation={generation} />;
    case "database":
      return <DatabasePage db={route.db} generation={generation} />;
    case "collection":
      return <CollectionPage db={route.db} collection={route.collection} generation={generation} />;
    case "document":
      return <DocumentPage db={route.db} collection={route.collection} id={route.id} generation={generation} />;
    case "new":
      return <NewDocumentPage db={route.db} collection={route.collection} />;
    case "query":
      return <QueryPage db={route.db} collection={route.collection} />;
    case "unknown":
      return (
        <>
          <h1>No such page</h1>
          <p>
            <a href="#/">Back to the databases</a>
          </p>
        </>
      );
  }
}

/** Following a link away, or going back, asks before it drops an unsaved edit. */
const mayLeave = () => mayDropUnsavedEdit("Leave this page?");

function App() {
  const route = useRoute(mayLeave);
  // Bumped when the API key changes: every page loads again with it,
  // unless that would drop an unsaved edit and the user keeps it instead
  // (the new key is used from then on: saving the edit sends it).
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let key = credentials.key;
    return credentials.subscribe(() => {
      if (credentials.key === key) return;
      key = credentials.key;
      const question = "The API key changed. Load this page again with it?";
      if (mayDropUnsavedEdit(question, "Cancel keeps it, and saving it sends the new key.")) {
        setGeneration((value) => value + 1);
      }
    });
  }, []);
  const db = "db" in route ? route.db : undefined;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          Folio Studio
        </a>
        <nav aria-label="Main">
          <a href="#/">Databases</a>
          {db !== undefined && <a href={href({ page: "database", db })}>{db}</a>}
          {db !== undefined && <a href={href({ page: "query", db })}>Query</a>}
        </nav>
        <KeyField />
      </header>
      <main>
        <Page route={route} generation={generation} />
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
