// Two people edit the same document in two browsers. The second sees the
// banner as soon as the first saves, saves anyway, gets the conflict
// dialog, and resolves it: merge, keep mine or take theirs. What is stored
// is checked over HTTP.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import {
  answerConfirm,
  assertNoPageErrors,
  editorText,
  fillEditor,
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

/** Replaces the editor's text with `document`, pretty-printed. */
async function edit(page, document) {
  await fillEditor(page.getByLabel("Document JSON"), JSON.stringify(document, null, 2));
}

async function save(page) {
  return requestOf(page, isPut, () => page.getByRole("button", { name: "Save", exact: true }).click());
}

test("the second editor sees the banner, saves anyway, merges in the conflict dialog; the merge is stored", async () => {
  const db = uniqueName("conflict");
  await seed(server(), db, [["people", "ada", { name: "Ada", city: "London", born: 1815, tags: ["math"] }]]);
  const start = await stored(server(), db, "people", "ada");
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");

  // Bob starts editing: the city, and a tag.
  await edit(bob, { name: "Ada", city: "Paris", born: 1815, tags: ["math", "poetry"] });

  // Alice saves first: her name change, and her own tag.
  await edit(alice, { name: "Ada Lovelace", city: "London", born: 1815, tags: ["math", "engines"] });
  const alicePut = await save(alice);
  assert.equal(alicePut.headers["if-match"], `"${start.changeVector}"`);
  await seeText(alice.getByRole("status"), "Saved — revision 2");
  const afterAlice = await stored(server(), db, "people", "ada");

  // Bob is told before he presses save; Alice, who saved it, is not.
  const banner = bob.getByRole("alert").filter({ hasText: "Changed by someone else" });
  await seeText(banner, "Changed by someone else — revision 2");
  await screenshot(bob, "conflict-banner");
  assert.equal(await alice.getByText("Changed by someone else").count(), 0);

  // He saves anyway, with the version he started from: refused.
  const bobPut = await save(bob);
  assert.equal(bobPut.headers["if-match"], `"${start.changeVector}"`);
  const dialog = bob.getByRole("dialog", { name: "Conflict: someone else saved people #ada" });
  await dialog.waitFor();
  await seeText(dialog.getByRole("region", { name: "Started from" }), '"city": "London"');
  await seeText(dialog.getByRole("region", { name: "Your edit" }), '"city": "Paris"');
  await seeText(dialog.getByRole("region", { name: "Stored now" }), '"name": "Ada Lovelace"');
  const diff = dialog.getByRole("table", { name: "Changes since revision 1" });
  await seeText(diff.getByRole("row", { name: /^name/ }), "Ada Lovelace");
  await seeText(diff.getByRole("row", { name: /^city/ }), "Paris");
  await seeText(diff.getByRole("row", { name: /^tags\[1\]/ }), "both changed");
  // Marked in his column: the lines he changed or added, not "math", which
  // only gained a comma when "poetry" came after it.
  const marked = await dialog
    .getByRole("region", { name: "Your edit" })
    .locator(".line.changed")
    .allTextContents();
  assert.deepEqual(
    marked.map((line) => line.trim()),
    ['"city": "Paris",', '"poetry"'],
  );
  await screenshot(bob, "conflict-dialog");
  // The dialog alone: the README's picture (FOLIO_E2E_README_SCREENSHOT=docs/studio-conflict.png).
  const picture = await screenshot(dialog, "conflict-dialog-only");
  if (process.env.FOLIO_E2E_README_SCREENSHOT) {
    mkdirSync(dirname(process.env.FOLIO_E2E_README_SCREENSHOT), { recursive: true });
    copyFileSync(picture, process.env.FOLIO_E2E_README_SCREENSHOT);
  }
  assert.deepEqual((await stored(server(), db, "people", "ada")).document, afterAlice.document, "nothing written");
  assert.equal(
    await dialog.getByRole("button", { name: "Merge on the server" }).count(),
    0,
    "people keeps no revisions: the server cannot merge",
  );

  // Merge: both changes, and for the tag both changed, Bob's, to review.
  await dialog.getByRole("button", { name: "Merge…" }).click();
  await seeText(dialog.getByText(/^Both sides changed/), "Both sides changed tags");
  const merged = dialog.getByLabel("Merged document");
  assert.deepEqual(JSON.parse(await editorText(merged)), {
    name: "Ada Lovelace",
    city: "Paris",
    born: 1815,
    tags: ["math", "poetry"],
  });
  await screenshot(bob, "conflict-merge");
  await fillEditor(
    merged,
    JSON.stringify({ name: "Ada Lovelace", city: "Paris", born: 1815, tags: ["math", "engines", "poetry"] }, null, 2),
  );
  const mergePut = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Save merge" }).click());
  assert.equal(mergePut.headers["if-match"], `"${afterAlice.changeVector}"`, "against the current version");
  await dialog.waitFor({ state: "detached" });
  await seeText(bob.getByRole("status"), "Saved — revision 3");

  const final = await stored(server(), db, "people", "ada");
  assert.equal(final.revision, 3);
  assert.deepEqual(final.document, {
    name: "Ada Lovelace",
    city: "Paris",
    born: 1815,
    tags: ["math", "engines", "poetry"],
  });
  assert.equal(await bob.getByText("Changed by someone else").count(), 0, "the banner is gone");
  // And now Alice is the one told.
  await seeText(alice.getByRole("alert"), "Changed by someone else — revision 3");
  assertNoPageErrors(alice);
  assertNoPageErrors(bob);
});

test("keep mine overwrites against the current version; take theirs reloads the stored one", async () => {
  const db = uniqueName("resolve");
  await seed(server(), db, [["people", "grace", { name: "Grace", rank: "Lieutenant" }]]);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "grace");
  await open(bob, db, "grace");

  await edit(alice, { name: "Grace Hopper", rank: "Lieutenant" });
  await save(alice);
  await seeText(alice.getByRole("status"), "Saved — revision 2");
  const afterAlice = await stored(server(), db, "people", "grace");
  await edit(bob, { name: "Grace", rank: "Rear Admiral" });
  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  await dialog.waitFor();
  const keep = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Keep mine" }).click());
  assert.equal(keep.headers["if-match"], `"${afterAlice.changeVector}"`);
  await dialog.waitFor({ state: "detached" });
  await seeText(bob.getByRole("status"), "Saved — revision 3");
  assert.deepEqual((await stored(server(), db, "people", "grace")).document, { name: "Grace", rank: "Rear Admiral" });

  // Alice, now behind, edits and saves: she takes Bob's version instead.
  await seeText(alice.getByRole("alert"), "Changed by someone else — revision 3");
  await edit(alice, { name: "Grace Hopper", rank: "Commodore" });
  await save(alice);
  const aliceDialog = alice.getByRole("dialog", { name: /Conflict/ });
  await aliceDialog.waitFor();
  await aliceDialog.getByRole("button", { name: "Take theirs" }).click();
  await aliceDialog.waitFor({ state: "detached" });
  assert.deepEqual(JSON.parse(await editorText(alice.getByLabel("Document JSON"))), {
    name: "Grace",
    rank: "Rear Admiral",
  });
  await seeText(alice.getByRole("definition").nth(1), "3");
  assert.equal(await alice.getByText("Changed by someone else").count(), 0);
  assert.deepEqual((await stored(server(), db, "people", "grace")).document, { name: "Grace", rank: "Rear Admiral" });
  assertNoPageErrors(alice);
  assertNoPageErrors(bob);
});

test("a document deleted by someone else: the banner says so, and keep mine creates it again", async () => {
  const db = uniqueName("deleted");
  await seed(server(), db, [["people", "linus", { name: "Linus" }]]);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "linus");
  await open(bob, db, "linus");

  await edit(bob, { name: "Linus Torvalds" });
  await alice.getByRole("button", { name: "Delete", exact: true }).click();
  await alice.getByRole("button", { name: "Delete for good" }).click();
  await alice.getByRole("heading", { name: "people", level: 1 }).waitFor();

  await seeText(bob.getByRole("alert"), "Deleted by someone else");
  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  await seeText(dialog.getByRole("region", { name: "Stored now" }), "Deleted by someone else");
  assert.equal(await dialog.getByRole("button", { name: "Merge…" }).isDisabled(), true);
  const recreate = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: /Keep mine/ }).click());
  assert.equal(recreate.headers["if-none-match"], "*");
  await dialog.waitFor({ state: "detached" });
  const final = await stored(server(), db, "people", "linus");
  assert.equal(final.status, 200);
  assert.deepEqual(final.document, { name: "Linus Torvalds" });
  assertNoPageErrors(bob);
});

/** Alice saves `document` over the version both opened; Bob is shown the banner. */
async function aliceSaves(alice, bob, document) {
  await edit(alice, document);
  await save(alice);
  await seeText(alice.getByRole("status"), "Saved — revision");
  const banner = bob.getByRole("alert").filter({ hasText: "Changed by someone else" });
  await banner.waitFor();
  return banner;
}

/** A database whose people keep revisions, with `document` as people #`id`; its change vector. */
async function keptDocument(db, id, document) {
  await seed(server(), db, []);
  await keepRevisions(server(), db, "people", 10);
  return putVersion(server(), db, "people", id, document, null);
}

test("merge on the server: the edit is sent again from the version it started from, and the server merges it", async () => {
  const db = uniqueName("servermerge");
  const start = await keptDocument(db, "ada", { name: "Ada", city: "London", born: 1815 });
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");
  await edit(bob, { name: "Ada", city: "Paris", born: 1815 });
  await aliceSaves(alice, bob, { name: "Ada Lovelace", city: "London", born: 1815 });
  const afterAlice = await stored(server(), db, "people", "ada");

  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  const merge = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Merge on the server" }).click());
  assert.equal(merge.headers["if-match"], `"${start}"`, "the version the edit started from");
  assert.equal(merge.headers.prefer, "merge");
  const answer = await merge.request.response();
  assert.equal(answer.status(), 200);
  assert.equal((await answer.allHeaders())["preference-applied"], "merge");
  await dialog.waitFor({ state: "detached" });
  await seeText(bob.getByRole("status"), "Merged on the server — revision 3");

  // Both changes are stored, over Alice's version, and Bob's page shows them.
  const final = await stored(server(), db, "people", "ada");
  assert.equal(final.revision, 3);
  assert.deepEqual(final.document, { name: "Ada Lovelace", city: "Paris", born: 1815 });
  const kept = await http(server(), "GET", `/db/${db}/docs/people/ada/revisions?take=2`);
  assert.equal(kept.json.items[1].change_vector, afterAlice.changeVector, "written over Alice's version");
  assert.deepEqual(JSON.parse(await editorText(bob.getByLabel("Document JSON"))), final.document);
  await seeText(bob.getByRole("definition").nth(0), final.changeVector);
  assert.equal(await bob.getByText("Changed by someone else").count(), 0, "his own write: no banner");
  await seeText(alice.getByRole("alert"), "Changed by someone else — revision 3");
  assertNoPageErrors(alice);
  assertNoPageErrors(bob);
});

test("merge on the server of a value both changed: the dialog shows the overlap, nothing is written, and merging here still works", async () => {
  const db = uniqueName("overlap");
  await keptDocument(db, "ada", { name: "Ada", city: "London" });
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");
  await edit(bob, { name: "Ada King", city: "Paris" });
  await aliceSaves(alice, bob, { name: "Ada Lovelace", city: "London" });
  const afterAlice = await stored(server(), db, "people", "ada");

  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  const serverMerge = dialog.getByRole("button", { name: "Merge on the server" });
  const merge = await requestOf(bob, isPut, () => serverMerge.click());
  assert.equal((await merge.request.response()).status(), 409);
  await seeText(dialog.getByText(/^The server did not merge/), "both sides changed name. Nothing was written.");
  await seeText(dialog.getByRole("region", { name: "Stored now" }), '"name": "Ada Lovelace"');
  assert.equal(await serverMerge.isDisabled(), true, "it would be refused again");
  await screenshot(bob, "conflict-server-merge-overlap");
  const now = await stored(server(), db, "people", "ada");
  assert.equal(now.changeVector, afterAlice.changeVector, "nothing written");

  // Merged here instead: the same overlap, Bob's value to review.
  await dialog.getByRole("button", { name: "Merge…" }).click();
  await seeText(dialog.getByText(/^Both sides changed/), "Both sides changed name");
  const merged = dialog.getByLabel("Merged document");
  assert.deepEqual(JSON.parse(await editorText(merged)), { name: "Ada King", city: "Paris" });
  await fillEditor(merged, JSON.stringify({ name: "Ada Lovelace King", city: "Paris" }, null, 2));
  const save2 = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Save merge" }).click());
  assert.equal(save2.headers["if-match"], `"${afterAlice.changeVector}"`);
  assert.equal(save2.headers.prefer, undefined);
  await dialog.waitFor({ state: "detached" });
  assert.deepEqual((await stored(server(), db, "people", "ada")).document, { name: "Ada Lovelace King", city: "Paris" });
  assertNoPageErrors(bob);
});

test("show differences without an edit, or with invalid JSON, does not offer keep mine", async () => {
  const db = uniqueName("noedit");
  await seed(server(), db, [["people", "grace", { name: "Grace", rank: "Lieutenant" }]]);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "grace");
  await open(bob, db, "grace");
  const banner = await aliceSaves(alice, bob, { name: "Grace", rank: "Commodore" });

  // Bob has changed nothing: keeping "his" version would undo Alice's save.
  await banner.getByRole("button", { name: "Show differences" }).click();
  const dialog = bob.getByRole("dialog", { name: "Someone else saved people #grace" });
  await dialog.waitFor();
  assert.equal(await dialog.getByRole("button", { name: "Keep mine" }).isDisabled(), true);
  await seeText(dialog.getByText(/^You have not changed anything/), "since revision 1");
  await dialog.getByRole("button", { name: "Back to editing" }).click();
  await dialog.waitFor({ state: "detached" });

  // Invalid JSON: shown as it is, not replaced by the version it started from.
  const invalid = '{"name": "Grace", "rank": ';
  await fillEditor(bob.getByLabel("Document JSON"), invalid);
  await banner.getByRole("button", { name: "Show differences" }).click();
  await dialog.waitFor();
  const mine = dialog.getByRole("region", { name: "Your edit" });
  await seeText(mine, invalid);
  await seeText(mine.getByRole("heading"), "not valid JSON");
  assert.equal(await dialog.getByRole("button", { name: "Keep mine" }).isDisabled(), true);
  assert.equal(await dialog.getByRole("button", { name: "Merge…" }).isDisabled(), true);
  await seeText(dialog.getByText(/^Your edit is not a document/), "Invalid JSON");
  await screenshot(bob, "conflict-dialog-invalid-edit");

  // Take theirs still works, and Alice's save was never undone.
  await dialog.getByRole("button", { name: "Take theirs" }).click();
  await dialog.waitFor({ state: "detached" });
  assert.deepEqual(JSON.parse(await editorText(bob.getByLabel("Document JSON"))), {
    name: "Grace",
    rank: "Commodore",
  });
  assert.deepEqual((await stored(server(), db, "people", "grace")).document, { name: "Grace", rank: "Commodore" });
  assertNoPageErrors(alice);
  assertNoPageErrors(bob);
});

test("the banner's reload asks before dropping an unsaved edit; cancelled, the edit stays", async () => {
  const db = uniqueName("reload");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");
  await edit(bob, { name: "Ada", city: "London" });
  const banner = await aliceSaves(alice, bob, { name: "Ada Lovelace" });
  const reload = banner.getByRole("button", { name: "Reload" });

  const question = await answerConfirm(bob, false, () => reload.click());
  assert.match(question, /Your unsaved edit of people #ada will be lost/);
  assert.deepEqual(JSON.parse(await editorText(bob.getByLabel("Document JSON"))), { name: "Ada", city: "London" });
  await seeText(banner, "Changed by someone else — revision 2");

  await answerConfirm(bob, true, () => reload.click());
  await banner.waitFor({ state: "detached" });
  assert.deepEqual(JSON.parse(await editorText(bob.getByLabel("Document JSON"))), { name: "Ada Lovelace" });
  assertNoPageErrors(bob);
});

test("a refused write shows what is stored now from the refusal itself, without reading the document again", async () => {
  const db = uniqueName("reread");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");
  await edit(bob, { name: "Ada", city: "Paris" });
  await aliceSaves(alice, bob, { name: "Ada Lovelace" });

  // From now on, reading the document fails: the dialog must not need it.
  const reads = [];
  await bob.route(
    (url) => url.pathname === `/db/${db}/docs/people/ada`,
    (route) => {
      if (route.request().method() !== "GET") return route.fallback();
      reads.push(route.request().url());
      return route.fulfill({
        status: 503,
        contentType: "application/problem+json",
        body: JSON.stringify({ title: "Service Unavailable", status: 503, detail: "the store is restarting" }),
      });
    },
  );
  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  await seeText(dialog.getByRole("region", { name: "Stored now" }), '"name": "Ada Lovelace"');

  // Someone saves again, so Bob's keep mine is refused too: the dialog
  // shows that version, as the refusal tells it.
  const current = await stored(server(), db, "people", "ada");
  const again = await http(server(), "PUT", `/db/${db}/docs/people/ada`, {
    body: { name: "Ada King" },
    headers: { "if-match": `"${current.changeVector}"` },
  });
  assert.equal(again.status, 200, again.text);
  const king = await stored(server(), db, "people", "ada");
  const refused = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Keep mine" }).click());
  assert.equal(refused.headers["if-match"], `"${current.changeVector}"`);
  await seeText(dialog.getByRole("region", { name: "Stored now" }), '"name": "Ada King"');
  await seeText(dialog.locator("#conflict-summary"), "the document is now at revision 3");
  assert.equal(await dialog.getByRole("alert").count(), 0, "no failure told");
  assert.deepEqual(reads, [], "the document was not read again");

  // Keep mine, again: now over the version the refusal named.
  const keep = await requestOf(bob, isPut, () => dialog.getByRole("button", { name: "Keep mine" }).click());
  assert.equal(keep.headers["if-match"], `"${king.changeVector}"`);
  await dialog.waitFor({ state: "detached" });
  assert.deepEqual((await stored(server(), db, "people", "ada")).document, { name: "Ada", city: "Paris" });
  assert.deepEqual(reads, []);
  assertNoPageErrors(bob);
});

test('merging keeps "__proto__" and "constructor" as fields of the document', async () => {
  const db = uniqueName("proto");
  await seed(server(), db, []);
  const created = await http(server(), "PUT", `/db/${db}/docs/people/ada`, {
    body: '{"name": "Ada", "__proto__": {"city": "London"}}',
    headers: { "if-none-match": "*" },
  });
  assert.equal(created.status, 201, created.text);
  const alice = await person(browser);
  const bob = await person(browser);
  await open(alice, db, "ada");
  await open(bob, db, "ada");

  await fillEditor(
    bob.getByLabel("Document JSON"),
    '{"name": "Ada", "__proto__": {"city": "Paris"}, "constructor": "Babbage"}',
  );
  await fillEditor(alice.getByLabel("Document JSON"), '{"name": "Ada Lovelace", "__proto__": {"city": "London"}}');
  await save(alice);
  await seeText(alice.getByRole("status"), "Saved — revision 2");
  await save(bob);
  const dialog = bob.getByRole("dialog", { name: /Conflict/ });
  await dialog.getByRole("button", { name: "Merge…" }).click();

  // Written as text: an object literal's "__proto__" would set the prototype.
  const expected = JSON.parse('{"name": "Ada Lovelace", "__proto__": {"city": "Paris"}, "constructor": "Babbage"}');
  assert.deepEqual(JSON.parse(await editorText(dialog.getByLabel("Merged document"))), expected);
  await dialog.getByRole("button", { name: "Save merge" }).click();
  await dialog.waitFor({ state: "detached" });
  const raw = await http(server(), "GET", `/db/${db}/docs/people/ada`);
  assert.deepEqual(JSON.parse(raw.text), expected);
  assertNoPageErrors(bob);
});

test("the feed shows the server's error event and resumes from the last change it read, not past an unreadable one", async () => {
  const db = uniqueName("feed");
  await seed(server(), db, [["people", "ada", { name: "Ada" }]]);
  const start = await stored(server(), db, "people", "ada");
  const page = await person(browser);

  // The first two connections are answered here, each when the test is ready for it.
  const resumedFrom = [];
  const answers = [
    "event: error\ndata: the changes could not be read: disk I/O error\n\n",
    "id: 999999\nevent: put\ndata: {not json\n\n",
  ];
  const turns = answers.map(() => {
    let resolve;
    const promise = new Promise((resolved) => (resolve = resolved));
    return { promise, resolve };
  });
  turns[0].resolve();
  await page.route(
    (url) => url.pathname === `/db/${db}/changes`,
    async (route) => {
      const turn = resumedFrom.length;
      resumedFrom.push(route.request().headers()["last-event-id"]);
      if (turn >= answers.length) return route.continue();
      await turns[turn].promise;
      return route.fulfill({ status: 200, contentType: "text/event-stream", body: answers[turn] });
    },
  );
  await page.goto(studio(server(), `/db/${db}/collections/people/docs/ada`));
  const feed = page.locator("[data-feed-state]");

  await seeText(feed, "interrupted (the server ended the feed: the changes could not be read: disk I/O error)");
  turns[1].resolve();
  await seeText(feed, "Changes feed interrupted (a put event could not be read");
  await page.locator('[data-feed-state="live"]').waitFor();
  const etag = (await http(server(), "GET", `/db/${db}/docs/people/ada`)).headers.get("folio-etag");
  assert.deepEqual(resumedFrom, [etag, etag, etag], "every reconnection resumes from the version loaded");

  // The real feed, resumed from there, still reports someone else's save.
  const update = await http(server(), "PUT", `/db/${db}/docs/people/ada`, {
    body: { name: "Ada Lovelace" },
    headers: { "if-match": `"${start.changeVector}"` },
  });
  assert.equal(update.status, 200, update.text);
  await seeText(page.getByRole("alert"), "Changed by someone else — revision 2");
  assertNoPageErrors(page);
});
