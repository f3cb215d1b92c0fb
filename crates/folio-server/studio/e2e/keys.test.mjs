// A server started with --keys: the Studio's own files load without a
// key, the API asks for one, and once it is entered every request carries
// it, the changes feed included (read with fetch(), which can send
// Authorization; EventSource cannot).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  adminKey,
  answerConfirm,
  assertNoPageErrors,
  editorText,
  fillEditor,
  http,
  keyedServer,
  launch,
  person,
  readerKey,
  requestOf,
  screenshot,
  seeText,
  seed,
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

test("the Studio asks for a key, then sends it on every request, the changes feed included", async () => {
  const db = uniqueName("keys");
  await seed(keyedServer(), db, [["people", "ada", { name: "Ada" }]], adminKey());
  const page = await person(browser);

  await page.goto(studio(keyedServer()));
  await seeText(page.getByRole("alert").first(), "This server requires an API key");
  await seeText(page.getByRole("alert").last(), "send an API key");
  await screenshot(page, "keys-required");

  await page.getByLabel("API key").fill("not-a-key-0123456789");
  await page.getByRole("button", { name: "Use key" }).click();
  await seeText(page.getByRole("alert").last(), "unknown API key");

  await page.getByLabel("API key").fill(adminKey());
  const list = await requestOf(
    page,
    (request) => request.url().endsWith("/db"),
    () => page.getByRole("button", { name: "Use key" }).click(),
  );
  assert.equal(list.headers.authorization, `Bearer ${adminKey()}`);
  await page.getByRole("link", { name: db }).click();
  await page.getByRole("list", { name: "Collections" }).getByRole("link", { name: "people" }).click();

  const feed = page.waitForRequest((request) => request.url().includes("/changes?"));
  await page.getByRole("link", { name: "ada", exact: true }).click();
  const feedHeaders = await (await feed).allHeaders();
  assert.equal(feedHeaders.authorization, `Bearer ${adminKey()}`);
  assert.equal(feedHeaders.accept, "text/event-stream");
  await page.locator('[data-feed-state="live"]').waitFor();

  // Someone else saves over HTTP: the banner comes through the keyed feed.
  const before = await stored(keyedServer(), db, "people", "ada", adminKey());
  const update = await http(keyedServer(), "PUT", `/db/${db}/docs/people/ada`, {
    body: { name: "Ada Lovelace" },
    headers: { "if-match": `"${before.changeVector}"` },
    key: adminKey(),
  });
  assert.equal(update.status, 200, update.text);
  await seeText(page.getByRole("alert"), "Changed by someone else — revision 2");
  await screenshot(page, "keys-banner");

  // The key stays for the tab's session: a reload keeps it.
  await page.reload();
  await page.locator('[data-feed-state="live"]').waitFor();
  assert.equal(await page.getByText("This server requires an API key").count(), 0);
  assertNoPageErrors(page);
});

test("a read-only key can browse, and a save is refused with the server's reason", async () => {
  const db = uniqueName("reader");
  await seed(keyedServer(), db, [["people", "ada", { name: "Ada" }]], adminKey());
  const page = await person(browser);
  await page.goto(studio(keyedServer(), `/db/${db}/collections/people/docs/ada`));
  await page.getByLabel("API key").fill(readerKey());
  await page.getByRole("button", { name: "Use key" }).click();
  const editor = page.getByLabel("Document JSON");
  await editor.waitFor();
  await page.locator('[data-feed-state="live"]').waitFor();

  await fillEditor(editor, '{"name": "Ada Lovelace"}');
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await seeText(page.getByRole("alert"), "Not saved: Forbidden");
  assert.deepEqual((await stored(keyedServer(), db, "people", "ada", adminKey())).document, { name: "Ada" });

  // Forgetting the key loads the page again, which drops the refused edit: asked first.
  const question = await answerConfirm(page, true, () => page.getByRole("button", { name: "Forget key" }).click());
  assert.match(question, /Your unsaved edit of people #ada will be lost/);
  await seeText(page.getByRole("alert").first(), "This server requires an API key");
  assertNoPageErrors(page);
});

/** Opens a document of the keyed server with `key`, and waits until its changes feed is live. */
async function openWithKey(page, db, id, key) {
  await page.goto(studio(keyedServer(), `/db/${db}/collections/people/docs/${id}`));
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.getByLabel("Document JSON").waitFor();
  await page.locator('[data-feed-state="live"]').waitFor();
}

test("changing the key asks before dropping an unsaved edit; kept, the edit is saved with the new key", async () => {
  const db = uniqueName("rekey");
  await seed(keyedServer(), db, [["people", "ada", { name: "Ada" }]], adminKey());
  const page = await person(browser);
  await openWithKey(page, db, "ada", readerKey());
  const editor = page.getByLabel("Document JSON");
  await fillEditor(editor, '{"name": "Ada Lovelace"}');

  await page.getByLabel("API key").fill(adminKey());
  const question = await answerConfirm(page, false, () => page.getByRole("button", { name: "Use key" }).click());
  assert.match(question, /The API key changed/);
  assert.match(question, /Your unsaved edit of people #ada will be lost/);
  assert.deepEqual(JSON.parse(await editorText(editor)), { name: "Ada Lovelace" }, "the edit is kept");

  const put = await requestOf(
    page,
    (request) => request.method() === "PUT",
    () => page.getByRole("button", { name: "Save", exact: true }).click(),
  );
  assert.equal(put.headers.authorization, `Bearer ${adminKey()}`);
  await seeText(page.getByRole("status"), "Saved — revision 2");
  assert.deepEqual((await stored(keyedServer(), db, "people", "ada", adminKey())).document, { name: "Ada Lovelace" });
  assertNoPageErrors(page);
});

test("a write from the conflict dialog that the server refuses shows its reason in the dialog, and keeps the edit", async () => {
  const db = uniqueName("refused");
  await seed(keyedServer(), db, [["people", "ada", { name: "Ada", city: "London" }]], adminKey());
  const page = await person(browser);
  await openWithKey(page, db, "ada", readerKey());

  const before = await stored(keyedServer(), db, "people", "ada", adminKey());
  const update = await http(keyedServer(), "PUT", `/db/${db}/docs/people/ada`, {
    body: { name: "Ada Lovelace", city: "London" },
    headers: { "if-match": `"${before.changeVector}"` },
    key: adminKey(),
  });
  assert.equal(update.status, 200, update.text);
  const banner = page.getByRole("alert").filter({ hasText: "Changed by someone else" });
  await seeText(banner, "Changed by someone else — revision 2");

  const edit = '{\n  "name": "Ada",\n  "city": "Paris"\n}';
  await fillEditor(page.getByLabel("Document JSON"), edit);
  await banner.getByRole("button", { name: "Show differences" }).click();
  const dialog = page.getByRole("dialog", { name: "Someone else saved people #ada" });
  await dialog.waitFor();

  // Keep mine: 403 for a read-only key, told in the dialog, which stays.
  await dialog.getByRole("button", { name: "Keep mine" }).click();
  const problem = dialog.getByRole("alert");
  await seeText(problem, "Not saved: Forbidden: this key may not write");
  await screenshot(page, "conflict-dialog-forbidden");

  // Save merge: the same, and the merge being edited stays as it was.
  await dialog.getByRole("button", { name: "Merge…" }).click();
  const merged = dialog.getByLabel("Merged document");
  await fillEditor(merged, '{"name": "Ada Lovelace", "city": "Paris", "note": "mine"}');
  const [answer] = await Promise.all([
    page.waitForResponse((response) => response.request().method() === "PUT"),
    dialog.getByRole("button", { name: "Save merge" }).click(),
  ]);
  assert.equal(answer.status(), 403);
  await seeText(problem, "Not saved: Forbidden: this key may not write");
  assert.equal(await editorText(merged), '{"name": "Ada Lovelace", "city": "Paris", "note": "mine"}');

  // Back to editing: the edit is still in the editor, and nothing was written.
  await dialog.getByRole("button", { name: "Back to comparison" }).click();
  await dialog.getByRole("button", { name: "Back to editing" }).click();
  await dialog.waitFor({ state: "detached" });
  assert.equal(await editorText(page.getByLabel("Document JSON")), edit);
  assert.deepEqual((await stored(keyedServer(), db, "people", "ada", adminKey())).document, {
    name: "Ada Lovelace",
    city: "London",
  });
  assertNoPageErrors(page);
});
