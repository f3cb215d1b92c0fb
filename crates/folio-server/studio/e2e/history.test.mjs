// A document's History panel: the versions its collection keeps, page by
// page, what one of them changed, and reverting to it (a write
// conditional on the version shown, refused when it changed meanwhile).
// What is stored is checked over HTTP.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertNoPageErrors,
  editorText,
  http,
  keepRevisions,
  launch,
  person,
  putVersion,
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

const isPut = (request) => request.method() === "PUT" && request.url().includes("/docs/");

/** Opens the document and waits until its changes feed is live. */
async function open(page, db, id) {
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/${id}`));
  await page.getByLabel("Document JSON").waitFor();
  await page.locator('[data-feed-state="live"]').waitFor();
}

/** Writes each document in turn over the one before; the change vector of each. */
async function versions(db, id, documents) {
  const changeVectors = [];
  for (const document of documents) {
    changeVectors.push(await putVersion(server(), db, "people", id, document, changeVectors.at(-1) ?? null));
  }
  return changeVectors;
}

test("the History panel lists the kept versions page by page, shows what one changed, and reverts to it", async () => {
  const db = uniqueName("history");
  await seed(server(), db, []);
  await keepRevisions(server(), db, "people", 100);
  const visits = Array.from({ length: 10 }, (_, index) => ({ name: "Ada Lovelace", city: "London", visits: index + 1 }));
  const changeVectors = await versions(db, "ada", [
    { name: "Ada", city: "London" },
    { name: "Ada Lovelace", city: "London" },
    ...visits,
  ]);
  const page = await person(browser);
  await open(page, db, "ada");

  // Twelve kept versions, newest first, ten to a page.
  const history = page.getByRole("region", { name: "History" });
  const table = history.getByRole("table", { name: /^Kept versions/ });
  await seeText(table, "1–10 of 12");
  const rows = table.getByRole("row");
  assert.equal(await rows.count(), 11, "a header and 10 versions");
  await seeText(rows.nth(1), "Revision 12");
  await seeText(rows.nth(1), "current");
  await seeText(rows.nth(1), changeVectors[11]);
  await seeText(rows.nth(10), "Revision 3");
  await screenshot(history, "history-list");
  await history.getByRole("button", { name: "Older versions" }).click();
  await seeText(table, "11–12 of 12");
  assert.equal(await rows.count(), 3, "a header and the 2 oldest");
  await seeText(rows.nth(2), "Revision 1");
  assert.equal(await history.getByRole("button", { name: "Older versions" }).isDisabled(), true);

  // Revision 2 against revision 1: the name changed.
  await history.getByRole("button", { name: "Revision 2", exact: true }).click();
  const version = history.getByRole("region", { name: "Revision 2" });
  await seeText(version.getByRole("region", { name: "Before" }), '"name": "Ada"');
  await seeText(version.getByRole("region", { name: "This version" }), '"name": "Ada Lovelace"');
  const changes = version.getByRole("table", { name: "Changes from revision 1 to revision 2" });
  await seeText(changes.getByRole("row", { name: /^name/ }), "Ada Lovelace");
  assert.equal(await changes.getByRole("row").count(), 2, "a header and the one path changed");
  const marked = await version.getByRole("region", { name: "This version" }).locator(".line.changed").allTextContents();
  assert.deepEqual(
    marked.map((line) => line.trim()),
    ['"name": "Ada Lovelace",'],
  );
  await screenshot(history, "history-diff");

  // The oldest kept version has nothing before it: all of it is new.
  await history.getByRole("button", { name: "Revision 1", exact: true }).click();
  const first = history.getByRole("region", { name: "Revision 1" });
  await first.getByRole("table", { name: "Changes from nothing kept before it to revision 1" }).waitFor();

  // Revert to revision 1: a new version, written only over revision 12.
  const revert = await requestOf(page, isPut, () =>
    first.getByRole("button", { name: "Revert to this version" }).click(),
  );
  assert.equal(revert.headers["if-match"], `"${changeVectors[11]}"`);
  await seeText(page.getByRole("status"), "Reverted to revision 1 — revision 13");
  const reverted = await stored(server(), db, "people", "ada");
  assert.equal(reverted.revision, 13);
  assert.deepEqual(reverted.document, { name: "Ada", city: "London" });
  assert.deepEqual(JSON.parse(await editorText(page.getByLabel("Document JSON"))), { name: "Ada", city: "London" });
  await seeText(page.getByRole("definition").nth(0), reverted.changeVector);
  await seeText(table, "of 13");
  const kept = await http(server(), "GET", `/db/${db}/docs/people/ada/revisions?take=1`);
  assert.equal(kept.json.total, 13);
  assert.equal(kept.json.items[0].change_vector, reverted.changeVector);

  // Its own write is no one else's: no banner.
  assert.equal(await page.getByText("Changed by someone else").count(), 0);
  assertNoPageErrors(page);
});

test("reverting is refused when the document changed meanwhile: the conflict dialog shows what is stored now", async () => {
  const db = uniqueName("revert");
  await seed(server(), db, []);
  await keepRevisions(server(), db, "people", 10);
  const changeVectors = await versions(db, "grace", [{ name: "Grace" }, { name: "Grace Hopper" }]);
  const page = await person(browser);
  await open(page, db, "grace");
  const history = page.getByRole("region", { name: "History" });
  await history.getByRole("button", { name: "Revision 1", exact: true }).click();
  const version = history.getByRole("region", { name: "Revision 1" });
  const revert = version.getByRole("button", { name: "Revert to this version" });
  await revert.waitFor();

  // Someone else saves first.
  const theirs = await putVersion(server(), db, "people", "grace", { name: "Grace Hopper", rank: "Commodore" }, changeVectors[1]);
  const refused = await requestOf(page, isPut, () => revert.click());
  assert.equal(refused.headers["if-match"], `"${changeVectors[1]}"`, "only over the version shown");
  assert.equal((await refused.request.response()).status(), 412);
  const dialog = page.getByRole("dialog", { name: "Conflict: someone else saved people #grace" });
  await seeText(dialog.getByRole("region", { name: "Stored now" }), '"rank": "Commodore"');
  await seeText(dialog.getByRole("region", { name: "Your edit" }), '"name": "Grace"');
  await screenshot(page, "history-revert-refused");
  const now = await stored(server(), db, "people", "grace");
  assert.equal(now.changeVector, theirs, "nothing written");
  assert.deepEqual(now.document, { name: "Grace Hopper", rank: "Commodore" });

  // Take theirs: the page shows what is stored, and the list has it.
  await dialog.getByRole("button", { name: "Take theirs" }).click();
  await dialog.waitFor({ state: "detached" });
  assert.deepEqual(JSON.parse(await editorText(page.getByLabel("Document JSON"))), {
    name: "Grace Hopper",
    rank: "Commodore",
  });
  await seeText(history.getByRole("table", { name: /^Kept versions/ }), "1–3 of 3");
  assertNoPageErrors(page);
});

test("a deleted document's history: its deletion is listed, and reverting creates it again (If-None-Match: *)", async () => {
  const db = uniqueName("undelete");
  await seed(server(), db, []);
  await keepRevisions(server(), db, "people", 10);
  const changeVectors = await versions(db, "linus", [{ name: "Linus" }, { name: "Linus Torvalds" }]);
  const removed = await http(server(), "DELETE", `/db/${db}/docs/people/linus`, {
    headers: { "if-match": `"${changeVectors[1]}"` },
  });
  assert.equal(removed.status, 204, removed.text);
  const page = await person(browser);
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/linus`));
  await seeText(page.getByRole("status").first(), "No document people #linus");

  const history = page.getByRole("region", { name: "History" });
  const rows = history.getByRole("table", { name: /^Kept versions/ }).getByRole("row");
  await seeText(rows.nth(1), "deleted");
  assert.equal(await rows.count(), 4, "a header, the deletion and the 2 versions");
  await rows.nth(1).getByRole("button").click();
  await seeText(history.getByRole("region", { name: "Revision 2 (deleted)" }), "The document was deleted here");
  assert.equal(await history.getByRole("button", { name: "Revert to this version" }).count(), 0);

  await rows.nth(2).getByRole("button").click();
  const version = history.getByRole("region", { name: "Revision 2" });
  await seeText(version.getByRole("region", { name: "This version" }), '"name": "Linus Torvalds"');
  const revert = await requestOf(page, isPut, () => version.getByRole("button", { name: "Revert to this version" }).click());
  assert.equal(revert.headers["if-none-match"], "*");
  assert.equal(revert.headers["if-match"], undefined);
  await seeText(page.getByRole("status"), "Reverted to revision 2");
  const restored = await stored(server(), db, "people", "linus");
  assert.equal(restored.status, 200);
  assert.deepEqual(restored.document, { name: "Linus Torvalds" });
  assert.deepEqual(JSON.parse(await editorText(page.getByLabel("Document JSON"))), { name: "Linus Torvalds" });
  await page.locator('[data-feed-state="live"]').waitFor();
  assertNoPageErrors(page);
});

test("a collection that keeps no revisions: the History panel says so, and how an admin turns them on", async () => {
  const db = uniqueName("norevisions");
  await seed(server(), db, [["people", "linus", { name: "Linus" }]]);
  const page = await person(browser);
  await open(page, db, "linus");
  const history = page.getByRole("region", { name: "History" });
  await seeText(history, "people keeps no revisions");
  await seeText(history, `PUT /db/${db}/collections/people/config`);
  await seeText(history, `folio config --db ${db} people '{"revisions":{"keep":100}}'`);
  assert.equal(await history.getByRole("table").count(), 0);
  assertNoPageErrors(page);
});
