// The Studio's three-way merge passes every case that the server
// (`Prefer: merge`) and the Rust crates pass too:
// crates/folio-core/tests/merge_cases.json. The merge tested is
// src/diff.ts itself, built by Vite as the Studio's build compiles it.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "vite";

const studio = fileURLToPath(new URL("..", import.meta.url));
const fixture = new URL("../../../folio-core/tests/merge_cases.json", import.meta.url);

/** src/diff.ts as an ES module in a temporary directory. */
async function buildDiff() {
  const outDir = mkdtempSync(join(tmpdir(), "folio-studio-diff-"));
  after(() => rmSync(outDir, { recursive: true, force: true }));
  await build({
    root: studio,
    configFile: false,
    publicDir: false,
    logLevel: "silent",
    build: {
      outDir,
      emptyOutDir: true,
      minify: false,
      lib: { entry: join(studio, "src/diff.ts"), formats: ["es"], fileName: () => "diff.mjs" },
    },
  });
  return import(pathToFileURL(join(outDir, "diff.mjs")).href);
}

const { merge3, pointerPath } = await buildDiff();
const cases = JSON.parse(readFileSync(fixture, "utf8"));

test("the fixture holds the shared cases", () => {
  assert.ok(cases.length >= 10, `${cases.length} cases`);
  for (const { name, merged, overlaps } of cases) {
    assert.ok((merged === undefined) !== (overlaps === undefined), `${name}: merged or overlaps`);
  }
});

for (const { name, base, theirs, mine, merged, overlaps } of cases) {
  test(`merge: ${name}`, () => {
    const outcome = merge3(base, mine, theirs);
    if (overlaps !== undefined) {
      assert.deepEqual(outcome.conflicts, overlaps);
    } else {
      assert.deepEqual(outcome.conflicts, []);
      assert.deepEqual(outcome.value, merged);
      // Keys in document order: theirs first, then the edit's own.
      assert.equal(JSON.stringify(outcome.value), JSON.stringify(merged));
    }
  });
}

test("an overlap keeps the edit's value in the merge, for the person to review", () => {
  const outcome = merge3({ city: "Oslo", n: 1 }, { city: "Tromsø", n: 1 }, { city: "Bergen", n: 2 });
  assert.deepEqual(outcome.conflicts, ["/city"]);
  assert.deepEqual(outcome.value, { city: "Tromsø", n: 2 });
});

test('"__proto__" and "constructor" are fields like any other', () => {
  const base = JSON.parse('{"__proto__": {"city": "London"}, "name": "Ada"}');
  const mine = JSON.parse('{"__proto__": {"city": "Paris"}, "name": "Ada", "constructor": "Babbage"}');
  const theirs = JSON.parse('{"__proto__": {"city": "London"}, "name": "Ada Lovelace"}');
  const outcome = merge3(base, mine, theirs);
  assert.deepEqual(outcome.conflicts, []);
  assert.equal(
    JSON.stringify(outcome.value),
    '{"__proto__":{"city":"Paris"},"name":"Ada Lovelace","constructor":"Babbage"}',
  );
});

test("overlaps are shown as readable paths", () => {
  assert.equal(pointerPath(""), "(document)");
  assert.equal(pointerPath("/tags"), "tags");
  assert.equal(pointerPath("/address/city"), "address.city");
  assert.equal(pointerPath("/a~1b/c~0d"), '["a/b"]["c~d"]');
});
