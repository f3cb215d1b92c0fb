// The JSON editor: CodeMirror 6 with JSON highlighting, folding of objects
// and arrays, bracket matching, undo and line numbers. It edits text: what
// it hands back is the text as typed, never parsed and written again.
//
// It lives in a shadow root. There CodeMirror puts its styles in a
// constructed stylesheet, which the Studio's Content-Security-Policy
// (style-src 'self') allows; in the page itself they would go in a <style>
// element, which it refuses. Its label, outside, names it by `aria-label`
// (an id does not reach into a shadow root); its description is linked as
// an element.

import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { json } from "@codemirror/lang-json";
import {
  HighlightStyle,
  bracketMatching,
  foldGutter,
  foldKeymap,
  indentUnit,
  syntaxHighlighting,
} from "@codemirror/language";
import { Annotation, Compartment, EditorState, Transaction } from "@codemirror/state";
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  highlightActiveLineGutter,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { tags } from "@lezer/highlight";
import { useEffect, useLayoutEffect, useRef } from "preact/hooks";

export interface JsonEditorProps {
  /** The id of the editable element. */
  id: string;
  /** Its label (its accessible name). */
  label: string;
  value: string;
  onChange: (text: string) => void;
  /** Marks the text as invalid (`aria-invalid`). */
  invalid?: boolean;
  /** The id of the element that describes it (its validation). */
  describedBy?: string;
  /** How many lines it shows at least. */
  rows?: number;
}

/** Marks a change that came from the props (`value`), not from typing. */
const fromProps = Annotation.define<boolean>();

const highlighting = HighlightStyle.define([
  { tag: tags.propertyName, color: "#1f4e79" },
  { tag: tags.string, color: "#1e6b3a" },
  { tag: tags.number, color: "#8a3ffc" },
  { tag: [tags.bool, tags.null], color: "#b3261e" },
  { tag: [tags.brace, tags.squareBracket, tags.separator], color: "#5d6b7a" },
]);

const theme = EditorView.theme({
  "&": { backgroundColor: "var(--paper)", fontSize: "0.9rem", maxHeight: "70vh" },
  "&.cm-focused": { outline: "none" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.4" },
  ".cm-content": { tabSize: "2" },
  ".cm-content, .cm-gutter": { minHeight: "calc(var(--rows) * 1.4em)" },
  ".cm-gutters": { backgroundColor: "var(--wash)", color: "var(--muted)", borderRight: "1px solid var(--line)" },
  ".cm-activeLine": { backgroundColor: "rgba(31, 78, 121, 0.05)" },
  ".cm-activeLineGutter": { backgroundColor: "rgba(31, 78, 121, 0.1)" },
  ".cm-foldPlaceholder": { backgroundColor: "var(--changed)", border: "1px solid var(--warn-line)", color: "var(--ink)" },
});

/** The attributes of the editable element, as the props say. */
function attributes(props: JsonEditorProps) {
  return EditorView.contentAttributes.of({
    id: props.id,
    "aria-label": props.label,
    "aria-invalid": props.invalid ? "true" : "false",
  });
}

/** A labelled JSON text editor; the text is the caller's (`value`, `onChange`). */
export function JsonEditor(props: JsonEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const attributesSlot = useRef(new Compartment());
  const onChange = useRef(props.onChange);
  onChange.current = props.onChange;

  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const shadow = element.shadowRoot ?? element.attachShadow({ mode: "open" });
    const editor = new EditorView({
      parent: shadow,
      root: shadow,
      state: EditorState.create({
        doc: props.value,
        extensions: [
          lineNumbers(),
          foldGutter(),
          highlightActiveLineGutter(),
          history(),
          drawSelection(),
          highlightActiveLine(),
          bracketMatching(),
          json(),
          syntaxHighlighting(highlighting),
          indentUnit.of("  "),
          EditorState.tabSize.of(2),
          EditorView.lineWrapping,
          keymap.of([...defaultKeymap, ...historyKeymap, ...foldKeymap]),
          theme,
          attributesSlot.current.of(attributes(props)),
          EditorView.updateListener.of((update) => {
            const typed = update.transactions.some(
              (transaction) => transaction.docChanged && transaction.annotation(fromProps) !== true,
            );
            if (typed) onChange.current(update.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = editor;
    return () => {
      editor.destroy();
      view.current = null;
    };
  }, []);

  // The text changed from outside (loaded, discarded, reverted): shown as
  // it is. A layout effect runs as the render commits, before the next key
  // press: a plain effect, after the next frame, could find the editor
  // already past the text it was given, and set it back.
  useLayoutEffect(() => {
    const editor = view.current;
    if (!editor || editor.state.doc.toString() === props.value) return;
    editor.dispatch({
      changes: { from: 0, to: editor.state.doc.length, insert: props.value },
      annotations: [fromProps.of(true), Transaction.addToHistory.of(false)],
    });
  }, [props.value]);

  useEffect(() => {
    const editor = view.current;
    if (!editor) return;
    editor.dispatch({ effects: attributesSlot.current.reconfigure(attributes(props)) });
    const description = props.describedBy ? document.getElementById(props.describedBy) : null;
    editor.contentDOM.ariaDescribedByElements = description ? [description] : null;
  }, [props.id, props.label, props.invalid, props.describedBy]);

  return (
    <>
      <label onClick={() => view.current?.focus()}>{props.label}</label>
      <div
        ref={host}
        class="json-editor"
        data-invalid={props.invalid ? "true" : undefined}
        style={{ "--rows": String(props.rows ?? 12) }}
      />
    </>
  );
}
