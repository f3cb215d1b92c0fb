// JSON as text. A document is shown and sent as its text, re-indented
// token by token, never through JSON.parse and JSON.stringify: those would
// round integers beyond 2^53 and change escapes, and the Studio must not
// alter what it did not edit.

const TOKEN = /"(?:[^"\\]|\\.)*"|[{}[\],:]|[^\s{}[\],:"]+/g;
const NUMBER = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/;

/** The outcome of checking a document's text. */
export type Validation = { ok: true } | { ok: false; message: string };

/** Whether `text` is a JSON object, with a message saying where it is not. */
export function validateDocument(text: string): Validation {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, message: `Invalid JSON: ${describeSyntaxError(text, error)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, message: "A document is a JSON object: { … }" };
  }
  return { ok: true };
}

/** The parser's message, with the line and column when it gives a position. */
function describeSyntaxError(text: string, error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const position = /position (\d+)/.exec(message);
  if (!position || /line \d+/.test(message)) return message;
  const before = text.slice(0, Number(position[1]));
  const line = before.split("\n").length;
  const column = before.length - before.lastIndexOf("\n");
  return `${message} (line ${line}, column ${column})`;
}

/**
 * Re-indents valid JSON text: `indent` spaces per level, or none at all
 * (minified). Tokens (strings, numbers, literals) are kept exactly.
 */
export function reformat(text: string, indent: number): string {
  const tokens = text.match(TOKEN) ?? [];
  let out = "";
  let depth = 0;
  const newline = () => (indent > 0 ? `\n${" ".repeat(indent * depth)}` : "");
  for (let index = 0; index < tokens.length; index++) {
    const token = tokens[index];
    if (token === "{" || token === "[") {
      const close = token === "{" ? "}" : "]";
      if (tokens[index + 1] === close) {
        out += token + close;
        index++;
        continue;
      }
      depth++;
      out += token + newline();
    } else if (token === "}" || token === "]") {
      depth--;
      out += newline() + token;
    } else if (token === ",") {
      out += `,${newline()}`;
    } else if (token === ":") {
      out += indent > 0 ? ": " : ":";
    } else {
      out += token;
    }
  }
  return out;
}

/** Valid JSON text, indented by two spaces (other text as it is). */
export function pretty(text: string): string {
  return isJson(text) ? reformat(text, 2) : text;
}

/** Valid JSON text without any whitespace between tokens. */
export function minify(text: string): string {
  return reformat(text, 0);
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether JSON.parse would not keep a number of `text` exactly (integers
 * beyond 2^53, more than 15 significant digits): values taken apart and
 * put together again (a merge) would not be what was written.
 */
export function hasInexactNumbers(text: string): boolean {
  for (const token of text.match(TOKEN) ?? []) {
    if (!NUMBER.test(token)) continue;
    const digits = token.replace(/^-/, "").replace(/[eE].*$/, "").replace(".", "").replace(/^0+/, "");
    if (digits.replace(/0+$/, "").length > 15) return true;
    if (!Number.isFinite(Number(token))) return true;
  }
  return false;
}

/**
 * The text of the value at `path` (object keys and array indexes) in valid
 * JSON `text`, exactly as written there; `undefined` when there is none.
 * A document inside a problem body keeps its numbers this way.
 */
export function memberText(text: string, path: Array<string | number>): string | undefined {
  const tokens = [...text.matchAll(TOKEN)];
  const token = (index: number) => tokens[index]?.[0];
  /** The index of the token after the value that starts at `index`. */
  const skip = (index: number): number => {
    let depth = 0;
    do {
      const current = token(index);
      if (current === undefined) return index;
      if (current === "{" || current === "[") depth++;
      else if (current === "}" || current === "]") depth--;
      index++;
    } while (depth > 0);
    return index;
  };
  let start = 0;
  for (const step of path) {
    const inObject = typeof step === "string";
    if (token(start) !== (inObject ? "{" : "[")) return undefined;
    let found = -1;
    let position = 0;
    let index = start + 1;
    while (index < tokens.length && token(index) !== "}" && token(index) !== "]") {
      let value = index;
      if (inObject) {
        value = index + 2;
        // A name given twice: the last one counts, as for JSON.parse.
        if (JSON.parse(token(index) ?? '""') === step) found = value;
      } else if (position++ === step) {
        found = value;
      }
      index = skip(value);
      if (token(index) === ",") index++;
    }
    if (found < 0) return undefined;
    start = found;
  }
  const first = tokens[start];
  const last = tokens[skip(start) - 1];
  if (first?.index === undefined || last?.index === undefined) return undefined;
  return text.slice(first.index, last.index + last[0].length);
}
