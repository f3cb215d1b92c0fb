// Browsing, creating, editing, deleting and querying in the Studio, each
// write checked over HTTP and for the precondition it sent.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  assertNoPageErrors,
  editorText,
  fillEditor,
  http,
  launch,
  person,
  requestOf,
  screenshot,
  seeText,
  seed,
  server,
  stored,
  studio,
  uniqueName,
} from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("the server serves the committed build of the Studio (a stale binary would test old code)", async () => {
  for (const file of ["index.html", "assets/studio.js", "assets/studio.css"]) {
    const served = await http(server(), "GET", `/studio/${file}`);
    assert.equal(served.status, 200);
    assert.ok(
      served.text === readFileSync(new URL(`../dist/${file}`, import.meta.url), "utf8"),
      `/studio/${file} is not dist/${file}: rebuild the folio binary`,
    );
  }
});

const isDocumentWrite = (method) => (request) => request.method() === method && request.url().includes("/docs/");

test("databases → collections → documents, page by page, and a document's metadata", async () => {
  const db = uniqueName("browse");
  const people = Array.from({ length: 25 }, (_, index) => {
    const id = `p${String(index + 1).padStart(2, "0")}`;
    return ["people", id, { name: `Person ${index + 1}`, age: 20 + index }];
  });
  await seed(server(), db, people);
  const page = await person(browser);

  await page.goto(studio(server()));
  await page.getByRole("heading", { name: "Databases", level: 1 }).waitFor();
  await page.getByRole("link", { name: db }).click();
  await page.getByRole("heading", { name: db, level: 1 }).waitFor();

  // Written over HTTP, never opened here: listed, with its count.
  const collections = page.getByRole("list", { name: "Collections" });
  await seeText(collections, "25 documents");
  await screenshot(page, "browse-database");
  await collections.getByRole("link", { name: "people" }).click();
  const table = page.getByRole("table", { name: /Documents in people, page 1/ });
  await table.waitFor();
  assert.equal(await table.getByRole("row").count(), 21, "a header and 20 documents");
  await seeText(table.getByRole("row").nth(1), "p01");
  await screenshot(page, "browse-collection");

  await page.getByRole("button", { name: "Next page" }).click();
  const second = page.getByRole("table", { name: /page 2/ });
  await second.waitFor();
  assert.equal(await second.getByRole("row").count(), 6, "a header and the last 5 documents");
  await seeText(second.getByRole("row").nth(1), "p21");
  assert.equal(await page.getByRole("button", { name: "Next page" }).isDisabled(), true);
  await page.getByRole("button", { name: "Previous page" }).click();
  await page.getByRole("table", { name: /page 1/ }).waitFor();

  await page.getByRole("link", { name: "p03", exact: true }).click();
  await page.getByRole("heading", { name: "p03", level: 1 }).waitFor();
  const expected = await stored(server(), db, "people", "p03");
  const metadata = page.getByRole("definition");
  await seeText(metadata.nth(0), expected.changeVector);
  await seeText(metadata.nth(1), "1");
  assert.deepEqual(JSON.parse(await editorText(page.getByLabel("Document JSON"))), {
    name: "Person 3",
    age: 22,
  });
  await screenshot(page, "browse-document");

  // Any other collection opens by its name.
  await page.getByRole("link", { name: db, exact: true }).first().click();
  await page.getByLabel("Collection name").fill("nobody-yet");
  await page.getByRole("button", { name: "Open collection" }).click();
  await seeText(page.getByText(/^No documents in/), "No documents in nobody-yet yet.");
  assertNoPageErrors(page);
});

test("creating sends If-None-Match: * and refuses an id that exists; without an id the server picks one", async () => {
  const db = uniqueName("create");
  await seed(server(), db, []);
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/collections/people/new`));

  await page.getByLabel("Document id").fill("ada");
  await fillEditor(page.getByLabel("Document JSON"), '{"name": "Ada", "born": 1815}');
  const reads = [];
  page.on("request", (request) => {
    if (request.method() === "GET" && request.url().endsWith("/docs/people/ada")) reads.push(request);
  });
  const create = await requestOf(page, isDocumentWrite("PUT"), () =>
    page.getByRole("button", { name: "Create" }).click(),
  );
  assert.equal(create.headers["if-none-match"], "*");
  assert.equal(create.headers["if-match"], undefined);
  await page.getByRole("heading", { name: "ada", level: 1 }).waitFor();
  // The document is read back after the write's position (Folio-After):
  // on a cluster whose standbys serve reads, it shows the write.
  const position = (await create.request.response()).headers()["folio-position"];
  assert.match(position, /^etag:\d+$/);
  assert.ok(reads.length > 0, "the new document is read back");
  assert.equal((await reads.at(-1).allHeaders())["folio-after"], position);
  const ada = await stored(server(), db, "people", "ada");
  assert.equal(ada.status, 200);
  assert.deepEqual(ada.document, { name: "Ada", born: 1815 });
  assert.equal(ada.revision, 1);

  // The same id again: refused, and the stored document is untouched.
  await page.goto(studio(server(), `/db/${db}/collections/people/new`));
  await page.getByLabel("Document id").fill("ada");
  await fillEditor(page.getByLabel("Document JSON"), '{"name": "Someone else"}');
  await page.getByRole("button", { name: "Create" }).click();
  await seeText(page.getByRole("alert"), "a document with id ada already exists");
  assert.deepEqual((await stored(server(), db, "people", "ada")).document, { name: "Ada", born: 1815 });

  // No id: POST to the collection.
  await page.getByLabel("Document id").fill("");
  await fillEditor(page.getByLabel("Document JSON"), '{"name": "Grace"}');
  const post = await requestOf(page, isDocumentWrite("POST"), () =>
    page.getByRole("button", { name: "Create" }).click(),
  );
  assert.match(post.request.url(), /\/docs\/people$/);
  await page.getByRole("heading", { name: /^[0-9A-Z]{26}$/, level: 1 }).waitFor();
  const id = await page.getByRole("heading", { level: 1 }).textContent();
  assert.deepEqual((await stored(server(), db, "people", id)).document, { name: "Grace" });
  assertNoPageErrors(page);
});

test("editing: invalid JSON cannot be saved; a save sends If-Match with the version it started from", async () => {
  const db = uniqueName("edit");
  await seed(server(), db, [["people", "p1", { name: "Ada", tags: ["math"] }]]);
  const before = await stored(server(), db, "people", "p1");
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/p1`));
  const editor = page.getByLabel("Document JSON");
  await editor.waitFor();
  const save = page.getByRole("button", { name: "Save", exact: true });
  assert.equal(await save.isDisabled(), true, "nothing to save yet");

  await fillEditor(editor, '{"name": "Ada Lovelace", "tags": ["math",]}');
  await seeText(page.locator("#document-validation"), "Invalid JSON");
  assert.equal(await editor.getAttribute("aria-invalid"), "true");
  assert.equal(await save.isDisabled(), true, "invalid JSON cannot be saved");
  await screenshot(page, "edit-invalid-json");

  await fillEditor(editor, "[1, 2]");
  await seeText(page.locator("#document-validation"), "A document is a JSON object");
  assert.equal(await save.isDisabled(), true);

  await fillEditor(editor, '{"name": "Ada Lovelace", "tags": ["math", "poetry"], "id": 12345678901234567890}');
  assert.equal(await save.isDisabled(), false);
  const put = await requestOf(page, isDocumentWrite("PUT"), () => save.click());
  assert.equal(put.headers["if-match"], `"${before.changeVector}"`);
  await seeText(page.getByRole("status"), "Saved — revision 2");

  const after = await stored(server(), db, "people", "p1");
  assert.equal(after.revision, 2);
  assert.deepEqual(after.document.tags, ["math", "poetry"]);
  // The number was sent as written, not rounded through a JavaScript number.
  const raw = await http(server(), "GET", `/db/${db}/docs/people/p1`);
  assert.match(raw.text, /12345678901234567890/);
  await seeText(page.getByRole("definition").nth(0), after.changeVector);
  assertNoPageErrors(page);
});

test("the editor highlights JSON and folds objects; a folded document is saved whole", async () => {
  const db = uniqueName("editor");
  const document = { name: "Ada", address: { street: "Main 1", city: "London" }, born: 1815 };
  await seed(server(), db, [["people", "ada", document]]);
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/ada`));
  const editor = page.getByLabel("Document JSON");
  await editor.waitFor();

  // Keys, strings and numbers each in their colour.
  const colour = (text) =>
    editor.locator("span", { hasText: new RegExp(`^${text}$`) }).first().evaluate((span) => getComputedStyle(span).color);
  const [key, string, number] = [await colour('"name"'), await colour('"Ada"'), await colour("1815")];
  assert.notEqual(key, string);
  assert.notEqual(string, number);

  // Folding the address hides its lines, not its text.
  await page.locator('.cm-foldGutter [title="Fold line"]').nth(1).click();
  await editor.locator(".cm-foldPlaceholder").waitFor();
  assert.doesNotMatch(await editorText(editor), /Main 1/);
  await screenshot(page, "editor-folded");
  await editor.focus();
  await editor.press("ControlOrMeta+Home");
  await editor.press("ArrowDown");
  await editor.press("End");
  await editor.press("ArrowLeft");
  await editor.press("ArrowLeft");
  await editor.pressSequentially(" Lovelace");
  assert.equal(await editor.locator(".cm-foldPlaceholder").count(), 1, "typing keeps the fold");
  assert.match(await editorText(editor), /^ {2}"name": "Ada Lovelace",$/m);
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await seeText(page.getByRole("status"), "Saved — revision 2");
  assert.deepEqual((await stored(server(), db, "people", "ada")).document, { ...document, name: "Ada Lovelace" });
  assertNoPageErrors(page);
});

test("deleting sends If-Match, and is refused when someone changed the document since", async () => {
  const db = uniqueName("delete");
  await seed(server(), db, [
    ["people", "gone", { name: "Gone" }],
    ["people", "kept", { name: "Kept" }],
  ]);
  const page = await person(browser);

  const gone = await stored(server(), db, "people", "gone");
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/gone`));
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  const remove = await requestOf(page, isDocumentWrite("DELETE"), () =>
    page.getByRole("button", { name: "Delete for good" }).click(),
  );
  assert.equal(remove.headers["if-match"], `"${gone.changeVector}"`);
  await page.getByRole("heading", { name: "people", level: 1 }).waitFor();
  assert.equal((await stored(server(), db, "people", "gone")).status, 404);

  await page.goto(studio(server(), `/db/${db}/collections/people/docs/kept`));
  await page.getByLabel("Document JSON").waitFor();
  const kept = await stored(server(), db, "people", "kept");
  const update = await http(server(), "PUT", `/db/${db}/docs/people/kept`, {
    body: { name: "Kept, and changed" },
    headers: { "if-match": `"${kept.changeVector}"` },
  });
  assert.equal(update.status, 200);
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.getByRole("button", { name: "Delete for good" }).click();
  await seeText(page.getByRole("alert").last(), "Not deleted: someone else changed it");
  assert.deepEqual((await stored(server(), db, "people", "kept")).document, { name: "Kept, and changed" });
  assertNoPageErrors(page);
});

test("the query page runs PROTOCOL.md query JSON and shows the results and the problem of a bad query", async () => {
  const db = uniqueName("query");
  await seed(server(), db, [
    ["people", "a", { name: "Ada", age: 36 }],
    ["people", "b", { name: "Bea", age: 19 }],
    ["people", "c", { name: "Cyd", age: 52 }],
  ]);
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/query/people`));
  const query = page.getByLabel("Query JSON");
  await fillEditor(
    query,
    JSON.stringify({
      collection: "people",
      where: [{ path: "age", op: "gt", value: 30 }],
      order_by: [{ path: "age", desc: true }],
    }),
  );
  await page.getByRole("button", { name: "Run query" }).click();
  await seeText(page.getByRole("status"), "2 shown of 2 matching");
  const results = page.getByRole("table", { name: "Query results" });
  const rows = results.getByRole("row");
  await seeText(rows.nth(1), "c");
  await seeText(rows.nth(2), "a");
  await screenshot(page, "query");

  await fillEditor(query, '{"collection": "people", "where": [{"path": "age", "op": "bigger", "value": 1}]}');
  await page.getByRole("button", { name: "Run query" }).click();
  await seeText(page.getByRole("alert"), "Bad request");

  await rows.first().waitFor({ state: "detached" });
  await fillEditor(query, '{"collection": "people",');
  assert.equal(await page.getByRole("button", { name: "Run query" }).isDisabled(), true);
  assertNoPageErrors(page);
});
