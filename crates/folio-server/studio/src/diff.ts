// Comparing and merging JSON documents for the conflict dialog: a diff by
// path (what each side changed from the version the edit started from), a
// line diff (to mark changed lines in the side-by-side columns), and a
// three-way merge.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Structural equality of JSON values (object key order does not matter). */
export function deepEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a === null || b === null) return false;
  if (typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, index) => deepEqual(item, b[index]));
  }
  const left = a as Record<string, Json>;
  const right = b as Record<string, Json>;
  const keys = Object.keys(left);
  return (
    keys.length === Object.keys(right).length &&
    keys.every((key) => Object.hasOwn(right, key) && deepEqual(left[key], right[key]))
  );
}

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `a.b`, `a["odd key"]`, `a[0]`: a readable path. */
function childPath(parent: string, key: string | number): string {
  if (typeof key === "number") return `${parent}[${key}]`;
  if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key)) return parent ? `${parent}.${key}` : key;
  return `${parent}[${JSON.stringify(key)}]`;
}

/** The leaves of a document by path (empty objects and arrays are leaves). */
function leaves(value: Json | undefined, path = "", into = new Map<string, Json>()): Map<string, Json> {
  if (value === undefined) return into;
  if (Array.isArray(value) && value.length > 0) {
    value.forEach((item, index) => leaves(item, childPath(path, index), into));
  } else if (isObject(value) && Object.keys(value).length > 0) {
    for (const [key, item] of Object.entries(value)) leaves(item, childPath(path, key), into);
  } else {
    into.set(path || "(document)", value);
  }
  return into;
}

/** One path where the edit or the stored version differs from the start. */
export interface PathDifference {
  path: string;
  /** `undefined`: absent on that side. */
  base: Json | undefined;
  mine: Json | undefined;
  theirs: Json | undefined;
  /** Both sides changed it, differently. */
  conflict: boolean;
}

/** Every path that either side changed, in document order. */
export function diffByPath(base: Json | undefined, mine: Json | undefined, theirs: Json | undefined): PathDifference[] {
  const [b, m, t] = [leaves(base), leaves(mine), leaves(theirs)];
  const paths = [...new Set([...b.keys(), ...m.keys(), ...t.keys()])];
  const differences: PathDifference[] = [];
  for (const path of paths) {
    const row = { path, base: b.get(path), mine: m.get(path), theirs: t.get(path) };
    const mineChanged = !deepEqual(row.base, row.mine);
    const theirsChanged = !deepEqual(row.base, row.theirs);
    if (!mineChanged && !theirsChanged) continue;
    differences.push({ ...row, conflict: mineChanged && theirsChanged && !deepEqual(row.mine, row.theirs) });
  }
  return differences;
}

/** A line of a side-by-side column and whether it differs from the start. */
export interface Line {
  text: string;
  changed: boolean;
}

/** The largest product of line counts diffed exactly; beyond it lines are compared in place. */
const LCS_LIMIT = 4_000_000;

/**
 * The lines of `text`, each marked when it is not part of the longest
 * common subsequence with `base` (an added or changed line). A line that
 * only gained or lost its trailing comma (a value after it was added or
 * removed) is not a change.
 */
export function markChangedLines(base: string, text: string): Line[] {
  const withoutComma = (line: string) => (line.endsWith(",") ? line.slice(0, -1) : line);
  const a = base.split("\n").map(withoutComma);
  const shown = text.split("\n");
  const b = shown.map(withoutComma);
  if (a.length * b.length > LCS_LIMIT) {
    return shown.map((line, index) => ({ text: line, changed: b[index] !== a[index] }));
  }
  // lengths[i][j]: the LCS length of a[i..] and b[j..].
  const lengths = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i][j] = a[i] === b[j] ? lengths[i + 1][j + 1] + 1 : Math.max(lengths[i + 1][j], lengths[i][j + 1]);
    }
  }
  const lines: Line[] = [];
  let i = 0;
  let j = 0;
  while (j < b.length) {
    if (i < a.length && a[i] === b[j]) {
      lines.push({ text: shown[j], changed: false });
      i++;
      j++;
    } else if (i < a.length && lengths[i + 1][j] >= lengths[i][j + 1]) {
      i++; // a line of the start that this side removed
    } else {
      lines.push({ text: shown[j], changed: true });
      j++;
    }
  }
  return lines;
}

// A document's keys are data, never the object's machinery: `"__proto__"`
// and `"constructor"` are fields like any other. Read only own properties
// (`object[key]` would find `constructor` on the prototype) and define
// fields rather than assign them (`object["__proto__"] = …` would replace
// the prototype, and the field would be lost).

/** The field `key` of a JSON object; `undefined` when it has none. */
function field(object: { [key: string]: Json }, key: string): Json | undefined {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** Sets the field `key` of a JSON object, as JSON.parse would. */
function setField(object: { [key: string]: Json }, key: string, value: Json): void {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}

/** The result of a three-way merge. */
export interface Merge {
  value: Json | undefined;
  /**
   * The JSON Pointers (RFC 6901) of the values both sides changed
   * differently, in document order; the edit's value was kept there.
   */
  conflicts: string[];
}

/**
 * Merges the edit (`mine`) and the stored version (`theirs`), both made
 * from `base`, by the rules the server (`Prefer: merge`) and the Rust
 * crates follow too (crates/folio-core/tests/merge_cases.json): objects
 * merge key by key; any other value, arrays included, is replaced whole; a
 * key absent from a side is that side's deletion of it; what only one side
 * changed is taken from that side, and the same change on both sides is no
 * conflict. Keys come in document order: theirs first, then those only in
 * the edit, then those only in `base`.
 */
export function merge3(base: Json | undefined, mine: Json | undefined, theirs: Json | undefined, pointer = ""): Merge {
  if (deepEqual(mine, base) || deepEqual(mine, theirs)) return { value: theirs, conflicts: [] };
  if (deepEqual(theirs, base)) return { value: mine, conflicts: [] };
  if (isObject(base) && isObject(mine) && isObject(theirs)) {
    const keys = [...new Set([...Object.keys(theirs), ...Object.keys(mine), ...Object.keys(base)])];
    const value: { [key: string]: Json } = {};
    const conflicts: string[] = [];
    for (const key of keys) {
      const merged = merge3(field(base, key), field(mine, key), field(theirs, key), `${pointer}/${pointerToken(key)}`);
      if (merged.value !== undefined) setField(value, key, merged.value);
      conflicts.push(...merged.conflicts);
    }
    return { value, conflicts };
  }
  return { value: mine, conflicts: [pointer] };
}

/** A key as a JSON Pointer reference token (RFC 6901: `~` is `~0`, `/` is `~1`). */
function pointerToken(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** A JSON Pointer as a readable path (`/address/city`: `address.city`; `""`: the whole document). */
export function pointerPath(pointer: string): string {
  if (pointer === "") return "(document)";
  const keys = pointer
    .slice(1)
    .split("/")
    .map((token) => token.replace(/~1/g, "/").replace(/~0/g, "~"));
  return keys.reduce(childPath, "");
}

/** A JSON value in one short line, for tables; `—` when absent. */
export function preview(value: Json | undefined, max = 80): string {
  if (value === undefined) return "—";
  const text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
