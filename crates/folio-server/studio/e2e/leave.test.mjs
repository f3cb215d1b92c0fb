// Leaving a document with an unsaved edit asks first: a link (the
// breadcrumbs, the top navigation), the browser's back button, closing or
// reloading the tab. Declined, the document and the edit stay; once the
// edit is saved, nothing asks.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  answerConfirm,
  assertNoPageErrors,
  editorText,
  fillEditor,
  launch,
  person,
  seeText,
  seed,
  server,
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

/** Opens the document and waits until its changes feed is live. */
async function open(page, db, id) {
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/${id}`));
  await page.getByLabel("Document JSON").waitFor();
  await page.locator('[data-feed-state="live"]').waitFor();
}

/** The document in the editor. */
async function editorDocument(page) {
  return JSON.parse(await editorText(page.getByLabel("Document JSON")));
}

/** Waits until the page's fragment is `hash`. */
async function seeHash(page, hash) {
  await page.waitForFunction((expected) => location.hash === expected, hash);
}

/** Every dialog the page raises from now on, dismissed; their types. */
function recordDialogs(page) {
  const types = [];
  page.on("dialog", (dialog) => {
    types.push(dialog.type());
    void dialog.dismiss();
  });
  return types;
}

test("a breadcrumb or the top navigation asks before leaving an unsaved edit; declined, the document stays", async () => {
  const db = uniqueName("leave");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const page = await person(browser);
  await open(page, db, "ada");
  const documentHash = await page.evaluate(() => location.hash);
  const entries = await page.evaluate(() => history.length);
  await fillEditor(page.getByLabel("Document JSON"), '{"name": "Ada Lovelace"}');

  const breadcrumb = page.getByRole("navigation", { name: "Breadcrumbs" }).getByRole("link", { name: "people" });
  const question = await answerConfirm(page, false, () => breadcrumb.click());
  assert.match(question, /Leave this page\?/);
  assert.match(question, /Your unsaved edit of people #ada will be lost/);
  assert.deepEqual(await editorDocument(page), { name: "Ada Lovelace" }, "the edit is kept");
  assert.equal(await page.evaluate(() => location.hash), documentHash);
  assert.equal(await page.evaluate(() => history.length), entries, "no history entry for the move declined");

  const query = page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Query" });
  await answerConfirm(page, false, () => query.click());
  assert.deepEqual(await editorDocument(page), { name: "Ada Lovelace" });
  assert.equal(await page.evaluate(() => location.hash), documentHash);

  await answerConfirm(page, true, () => breadcrumb.click());
  await page.getByRole("heading", { name: "people", level: 1 }).waitFor();
  await seeHash(page, `#/db/${db}/collections/people`);
  assertNoPageErrors(page);
});

test("the back button asks before leaving an unsaved edit; declined, the document and the edit stay", async () => {
  const db = uniqueName("back");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/collections/people`));
  await page.getByRole("link", { name: "ada", exact: true }).click();
  await page.getByLabel("Document JSON").waitFor();
  await page.locator('[data-feed-state="live"]').waitFor();
  const documentHash = await page.evaluate(() => location.hash);
  await fillEditor(page.getByLabel("Document JSON"), '{"name": "Ada Lovelace"}');

  const question = await answerConfirm(page, false, () => page.goBack());
  assert.match(question, /Your unsaved edit of people #ada will be lost/);
  await seeHash(page, documentHash);
  assert.deepEqual(await editorDocument(page), { name: "Ada Lovelace" }, "the edit is kept");
  assert.equal(await page.getByRole("heading", { name: "ada", level: 1 }).count(), 1);

  // Going back again still goes to the collection, asked again.
  await answerConfirm(page, true, () => page.goBack());
  await page.getByRole("heading", { name: "people", level: 1 }).waitFor();
  assertNoPageErrors(page);
});

test("once the edit is saved, or is what is stored, leaving asks nothing", async () => {
  const db = uniqueName("saved");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const page = await person(browser);
  await open(page, db, "ada");
  const editor = page.getByLabel("Document JSON");
  const stored = await editorText(editor);
  const breadcrumb = page.getByRole("navigation", { name: "Breadcrumbs" }).getByRole("link", { name: "people" });

  // Unsaved, it asks.
  await fillEditor(editor, '{"name": "Ada Lovelace"}');
  await answerConfirm(page, false, () => breadcrumb.click());

  // Changed back to what is stored: nothing to lose, nothing asked.
  const dialogs = recordDialogs(page);
  await fillEditor(editor, stored);
  await seeText(page.locator("#document-validation"), "as stored");
  await breadcrumb.click();
  await page.getByRole("heading", { name: "people", level: 1 }).waitFor();
  await page.goBack();
  await editor.waitFor();

  // Saved: nothing asked either, by a link or by reloading the tab.
  await fillEditor(editor, '{"name": "Ada Lovelace"}');
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await seeText(page.getByRole("status"), "Saved — revision 2");
  await page.reload();
  await page.locator('[data-feed-state="live"]').waitFor();
  await breadcrumb.click();
  await page.getByRole("heading", { name: "people", level: 1 }).waitFor();
  assert.deepEqual(dialogs, [], "no question asked");
  assertNoPageErrors(page);
});

test("reloading the tab with an unsaved edit asks (beforeunload); declined, the edit stays", async () => {
  const db = uniqueName("unload");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const page = await person(browser);
  await open(page, db, "ada");
  // Chromium asks before unloading only a page the user has interacted
  // with: fillEditor's key press counts.
  const editor = page.getByLabel("Document JSON");
  await fillEditor(editor, '{"name": "Ada Lovelace"}');
  const edited = await editorText(editor);
  const unloadDialog = (accept) =>
    page.waitForEvent("dialog").then(async (dialog) => {
      assert.equal(dialog.type(), "beforeunload");
      await (accept ? dialog.accept() : dialog.dismiss());
    });

  // Declined: the reload does not happen, and playwright's reload waits on
  // until the next one, accepted.
  const declined = page.reload().catch(() => {});
  await unloadDialog(false);
  assert.equal(await editorText(editor), edited, "the edit is kept");

  await Promise.all([unloadDialog(true), page.reload()]);
  await declined;
  await page.locator('[data-feed-state="live"]').waitFor();
  assert.deepEqual(await editorDocument(page), { name: "Ada" }, "reloaded as stored");
  assertNoPageErrors(page);
});
