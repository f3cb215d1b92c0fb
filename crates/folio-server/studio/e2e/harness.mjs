// What the end-to-end tests share: the servers started by scripts/e2e, a
// real headless Chromium driven by playwright-core, plain HTTP to set up
// and to check what is stored, waiting for the page, and screenshots.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests with scripts/e2e`);
  return value;
}

/** The server without keys. */
export const server = () => required("FOLIO_E2E_URL");
/** The server started with --keys, and its admin and read-only keys. */
export const keyedServer = () => required("FOLIO_E2E_KEYED_URL");
export const adminKey = () => required("FOLIO_E2E_ADMIN_KEY");
export const readerKey = () => required("FOLIO_E2E_READER_KEY");

const artifacts = process.env.FOLIO_E2E_ARTIFACTS ?? "e2e-artifacts";
const executablePath = process.env.FOLIO_CHROMIUM ?? "/usr/bin/chromium";

/** How long to wait for the page to show something. */
const WAIT_MS = 10_000;

/**
 * Chromium, headless. playwright-core gives each launch a fresh temporary
 * profile (its own --user-data-dir) and removes it on close.
 */
export async function launch() {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A new page in its own context (its own storage: another person). */
export async function person(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.errors = errors;
  return page;
}

/** Writes a screenshot of a page or an element as a test artifact; its path. */
export async function screenshot(pageOrLocator, name) {
  mkdirSync(artifacts, { recursive: true });
  const path = join(artifacts, `${name}.png`);
  await pageOrLocator.screenshot({ path });
  return path;
}

/** A fresh database name, so that every test has its own. */
export function uniqueName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/** One HTTP request; the status, headers, text and (if any) JSON. */
export async function http(base, method, path, { body, headers = {}, key } = {}) {
  const response = await fetch(base + path, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** Creates a database and puts documents into it (one batch). */
export async function seed(base, db, documents, key) {
  const created = await http(base, "PUT", `/db/${db}`, { key });
  assert.equal(created.status, 201, created.text);
  if (documents.length === 0) return;
  const commands = documents.map(([collection, id, document]) => ({ op: "put", collection, id, document }));
  const batch = await http(base, "POST", `/db/${db}/batch`, { body: { commands }, key });
  assert.equal(batch.status, 200, batch.text);
}

/** Makes `collection` keep `keep` versions of each document (its configuration, admin). */
export async function keepRevisions(base, db, collection, keep, key) {
  const configured = await http(base, "PUT", `/db/${db}/collections/${collection}/config`, {
    body: { revisions: { keep } },
    key,
  });
  assert.equal(configured.status, 200, configured.text);
}

/**
 * Writes `document` over the version `changeVector` (`null`: creates it),
 * as someone else would; the change vector of the version written.
 */
export async function putVersion(base, db, collection, id, document, changeVector, key) {
  const written = await http(base, "PUT", `/db/${db}/docs/${collection}/${encodeURIComponent(id)}`, {
    body: document,
    headers: changeVector === null ? { "if-none-match": "*" } : { "if-match": `"${changeVector}"` },
    key,
  });
  assert.ok(written.status === 200 || written.status === 201, written.text);
  return written.headers.get("etag").replace(/^"|"$/g, "");
}

/** The stored document and its version, read over HTTP. */
export async function stored(base, db, collection, id, key) {
  const response = await http(base, "GET", `/db/${db}/docs/${collection}/${encodeURIComponent(id)}`, { key });
  return {
    status: response.status,
    document: response.json,
    changeVector: response.headers.get("etag")?.replace(/^"|"$/g, ""),
    revision: Number(response.headers.get("folio-revision")),
  };
}

/** The Studio's URL for a page of `base` (`fragment` without the `#`). */
export function studio(base, fragment = "/") {
  return `${base}/studio#${fragment}`;
}

/** Waits until `locator`'s text contains `expected` (or times out, saying what it saw). */
export async function seeText(locator, expected) {
  const deadline = Date.now() + WAIT_MS;
  let seen = "";
  for (;;) {
    seen = (await locator.first().textContent({ timeout: WAIT_MS }).catch(() => "")) ?? "";
    if (seen.includes(expected)) return;
    if (Date.now() > deadline) assert.fail(`expected ${JSON.stringify(expected)} in ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * The text in a JSON editor (CodeMirror; `locator` is its editable
 * element, as getByLabel finds it): its lines as shown, which for the
 * short documents of these tests is all of them.
 */
export async function editorText(locator) {
  return locator.evaluate((content) =>
    [...content.querySelectorAll(":scope > .cm-line")].map((line) => line.textContent).join("\n"),
  );
}

/**
 * Replaces the text in a JSON editor with `text`, as a person pastes it:
 * select all (a key press, which counts as interacting with the page),
 * then a paste. (Typing would indent the new lines again, and `fill`'s
 * text insertion turns the spaces that indent them into no-break spaces.)
 */
export async function fillEditor(locator, text) {
  await locator.focus();
  await locator.press("ControlOrMeta+a");
  await locator.evaluate((content, value) => {
    const clipboardData = new DataTransfer();
    clipboardData.setData("text/plain", value);
    content.dispatchEvent(new ClipboardEvent("paste", { clipboardData, bubbles: true, cancelable: true }));
  }, text);
}

/** Runs `action` and returns the first request it sends that `matches`. */
export async function requestOf(page, matches, action) {
  const [request] = await Promise.all([page.waitForRequest(matches), action()]);
  return { request, headers: await request.allHeaders() };
}

/**
 * Runs `action`, which must ask a question with window.confirm(), and
 * answers it: OK when `accept`, Cancel otherwise. Returns the question.
 */
export async function answerConfirm(page, accept, action) {
  const asked = page.waitForEvent("dialog").then(async (dialog) => {
    assert.equal(dialog.type(), "confirm");
    const question = dialog.message();
    await (accept ? dialog.accept() : dialog.dismiss());
    return question;
  });
  const [question] = await Promise.all([asked, action()]);
  return question;
}

/** Fails the test when the page threw an uncaught error. */
export function assertNoPageErrors(page) {
  assert.deepEqual(
    page.errors.map((error) => String(error)),
    [],
    "the page threw",
  );
}
