// The page's Markdown renderer: the safe subset of securechat/widgets/markdown.py (the
// ChatBox's; with markdown_inline.py and markdown_tree.py), step for step, so both show a
// reply the same way (tests/markdown_cases.json runs one corpus through both). Text is
// never parsed as HTML: the parser makes a tree of tags from a fixed, attribute-free set,
// and toNodes builds it with createElement and text nodes. Every step is linear in the
// text, because a streaming reply is re-rendered as it grows.

export const TAGS = Object.freeze(["p", "br", "strong", "em", "code", "pre", "ul", "ol", "li",
  "blockquote"]);
const TAB_SPACE = " \t";
// Explicit classes (not \s and \w), defined as the Python twin defines them.
const SPACE = /^[ \t\f\v\p{Zs}]$/u;
const WORD = /^[\p{L}\p{N}_]$/u;

const element = (tag, children = []) => ({ tag, children });

// Strings are indexed in UTF-16 units; Python sees code points, so the character next to
// a run of "*" is read whole (an astral letter is a word character in both).
function charBefore(s, i) {
  if (i <= 0) return null;
  const low = s.charCodeAt(i - 1);
  if (i >= 2 && low >= 0xdc00 && low <= 0xdfff) {
    const high = s.charCodeAt(i - 2);
    if (high >= 0xd800 && high <= 0xdbff) return s.slice(i - 2, i);
  }
  return s[i - 1];
}

function charAt(s, i) {
  return i < s.length ? String.fromCodePoint(s.codePointAt(i)) : null;
}

// How many characters at the start of s (from index from) are in chars.
function leading(s, chars, from = 0) {
  let i = from;
  while (i < s.length && chars.includes(s[i])) i++;
  return i - from;
}

function trailing(s, chars) {
  let i = s.length;
  while (i > 0 && chars.includes(s[i - 1])) i--;
  return s.length - i;
}

// --- inline: code spans, then emphasis ----------------------------------------------

function backtickRuns(line) {
  const runs = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === "`") {
      const start = i;
      while (i < line.length && line[i] === "`") i++;
      runs.push([start, i - start]);
    } else {
      i++;
    }
  }
  return runs;
}

// [start, end, N] of each code span: a run of N backticks up to the next run of exactly N.
function codeSpans(line) {
  const runs = backtickRuns(line);
  const byLength = new Map();
  runs.forEach(([, length], index) => {
    if (!byLength.has(length)) byLength.set(length, []);
    byLength.get(length).push(index);
  });
  // Runs are visited left to right, so each queue pointer only moves forward (linear).
  const pointer = new Map();
  const spans = [];
  let k = 0;
  while (k < runs.length) {
    const [start, length] = runs[k];
    const queue = byLength.get(length);
    let p = pointer.get(length) || 0;
    while (p < queue.length && queue[p] <= k) p++;
    pointer.set(length, p);
    if (p < queue.length) {
      spans.push([start, runs[queue[p]][0] + length, length]);
      k = queue[p] + 1;
    } else {
      k++;
    }
  }
  return spans;
}

// A run of "*" that may open and/or close emphasis; count shrinks as it is used.
class Run {
  constructor(count, canOpen, canClose) {
    this.count = count;
    this.canOpen = canOpen;
    this.canClose = canClose;
  }
}

function tokens(line) {
  const out = [];
  let pos = 0;
  for (const [start, end, ticks] of [...codeSpans(line), [line.length, line.length, 0]]) {
    let i = pos;
    let textFrom = pos;
    while (i < start) {
      if (line[i] !== "*") {
        i++;
        continue;
      }
      if (i > textFrom) out.push(line.slice(textFrom, i));
      const runStart = i;
      while (i < start && line[i] === "*") i++;
      const before = charBefore(line, runStart);
      const after = charAt(line, i);
      const canOpen = after !== null && !SPACE.test(after) && !(before !== null && WORD.test(before));
      const canClose = before !== null && !SPACE.test(before) && !(after !== null && WORD.test(after));
      out.push(new Run(i - runStart, canOpen, canClose));
      textFrom = i;
    }
    if (start > textFrom) out.push(line.slice(textFrom, start));
    if (end > start) out.push(element("code", [line.slice(start + ticks, end - ticks)]));
    pos = end;
  }
  return out;
}

// Unused runs become their "*" again; neighbouring text pieces are joined.
function merged(nodes) {
  const out = [];
  let text = [];
  for (const node of [...nodes, null]) {
    if (typeof node === "string" || node instanceof Run) {
      text.push(node instanceof Run ? "*".repeat(node.count) : node);
      continue;
    }
    const joined = text.join("");
    if (joined) out.push(joined);
    text = [];
    if (node !== null) out.push(node);
  }
  return out;
}

// Code spans, **strong** and *em* of one line, always properly nested.
export function inline(line) {
  const out = [];
  const openers = []; // every run in out (all may open), with its place: [index, run]
  for (const token of tokens(line)) {
    if (!(token instanceof Run)) {
      out.push(token);
      continue;
    }
    let count = token.count;
    if (token.canClose) {
      // The innermost opener is the only candidate, so each step is constant work plus
      // the nodes it wraps, which leave out: linear.
      while (count && openers.length) {
        const [at, opener] = openers[openers.length - 1];
        const use = opener.count >= 2 && count >= 2 ? 2 : 1;
        const wrapped = element(use === 2 ? "strong" : "em", merged(out.splice(at + 1)));
        out.push(wrapped);
        opener.count -= use;
        count -= use;
        if (!opener.count) {
          openers.pop();
          out.splice(at, 1);
        }
      }
    }
    if (count) {
      if (token.canOpen) {
        const opener = new Run(count, true, false);
        openers.push([out.length, opener]);
        out.push(opener);
      } else {
        out.push("*".repeat(count));
      }
    }
  }
  return merged(out);
}

// --- blocks ----------------------------------------------------------------------------

// [indent, backticks] when line opens a code fence: 3+ backticks, an info string without any.
function fenceOpen(line) {
  const indent = leading(line, TAB_SPACE);
  const ticks = leading(line, "`", indent);
  if (ticks < 3 || line.indexOf("`", indent + ticks) >= 0) return null;
  return [indent, ticks];
}

function fenceCloses(line, ticks) {
  const indent = leading(line, TAB_SPACE);
  const run = leading(line, "`", indent);
  return run >= ticks && leading(line, TAB_SPACE, indent + run) === line.length - indent - run;
}

function dedent(line, indent) {
  return line.slice(leading(line.slice(0, indent), TAB_SPACE));
}

// The item text after a list marker, which must be followed by a space or tab.
function afterMarker(line, from) {
  if (from >= line.length || !TAB_SPACE.includes(line[from])) return null;
  return line.slice(from + leading(line, TAB_SPACE, from));
}

function bullet(line) {
  const indent = leading(line, TAB_SPACE);
  return "-*+".includes(line[indent] || "x") ? afterMarker(line, indent + 1) : null;
}

function numbered(line) {
  const indent = leading(line, TAB_SPACE);
  const digits = leading(line, "0123456789", indent);
  const mark = line[indent + digits];
  return digits >= 1 && digits <= 9 && (mark === "." || mark === ")")
    ? afterMarker(line, indent + digits + 1) : null;
}

function quote(line) {
  if (!line.startsWith(">")) return null;
  return line[1] === " " || line[1] === "\t" ? line.slice(2) : line.slice(1);
}

function heading(line) {
  const hashes = leading(line, "#");
  return hashes >= 1 && hashes <= 6 ? afterMarker(line, hashes) : null;
}

// Checked in this order; the first that matches decides the line's kind.
const KINDS = [["ul", bullet], ["ol", numbered], ["quote", quote], ["heading", heading]];

function classify(line) {
  for (const [kind, match] of KINDS) {
    const content = match(line);
    if (content !== null) return [kind, content];
  }
  return ["text", line];
}

function withBreaks(lines) {
  const children = [];
  lines.forEach((line, i) => {
    if (i) children.push(element("br"));
    children.push(...inline(line));
  });
  return children;
}

// One block between blank lines: runs of list items, quote lines, headings, text.
function block(lines) {
  const out = [];
  let kind = "";
  let run = [];
  for (const line of [...lines, null]) {
    const [lineKind, content] = line === null ? ["end", ""] : classify(line);
    if (lineKind === kind && kind !== "heading") {
      run.push(content);
      continue;
    }
    if (kind === "ul" || kind === "ol") {
      out.push(element(kind, run.map((item) => element("li", inline(item)))));
    } else if (kind === "quote") {
      out.push(element("blockquote", withBreaks(run)));
    } else if (kind === "heading") {
      out.push(element("p", [element("strong", inline(run[0]))]));
    } else if (kind === "text") {
      out.push(element("p", withBreaks(run)));
    }
    kind = lineKind;
    run = [content];
  }
  return out;
}

function paragraphs(lines) {
  const out = [];
  let current = [];
  for (const line of [...lines, ""]) {
    if (leading(line, TAB_SPACE) < line.length) {
      current.push(line);
    } else if (current.length) {
      out.push(...block(current));
      current = [];
    }
  }
  return out;
}

// The block elements of text: code fences first, then paragraphs of the rest. A fence runs
// to its closing line or, while a reply is still streaming in, to the end of the text.
export function parseMarkdown(text) {
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let pending = [];
  let i = 0;
  while (i < lines.length) {
    const fence = fenceOpen(lines[i]);
    if (fence === null) {
      pending.push(lines[i]);
      i++;
      continue;
    }
    out.push(...paragraphs(pending));
    pending = [];
    const [indent, ticks] = fence;
    const body = [];
    i++;
    while (i < lines.length && !fenceCloses(lines[i], ticks)) {
      body.push(dedent(lines[i], indent));
      i++;
    }
    i++; // the closing line
    out.push(element("pre", [element("code", body.length ? [body.join("\n")] : [])]));
  }
  out.push(...paragraphs(pending));
  return out;
}

// DOM nodes for a tree: elements made by createElement (from TAGS only), text as text
// nodes. Iterative, so deeply nested emphasis cannot exhaust the call stack.
export function toNodes(nodes) {
  const fragment = document.createDocumentFragment();
  const stack = [[fragment, nodes]];
  while (stack.length) {
    const [parent, children] = stack.pop();
    for (const node of children) {
      if (typeof node === "string") {
        parent.append(document.createTextNode(node));
      } else if (TAGS.includes(node.tag)) {
        const el = document.createElement(node.tag);
        parent.append(el);
        stack.push([el, node.children]);
      }
    }
  }
  return fragment;
}

// A reply as DOM nodes (a DocumentFragment) in the safe Markdown subset.
export function renderMarkdown(text) {
  return toNodes(parseMarkdown(text));
}
