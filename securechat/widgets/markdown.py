"""A safe Markdown subset: text becomes a tree of fixed, attribute-free tags over plain text.

Nothing of the text is ever read as HTML: it is parsed into :class:`Element` nodes whose
text leaves are escaped when serialized, so the output is well-formed by construction.
The web page has the same parser in ``securechat/server/static/markdown.js`` (it builds DOM nodes
from the same tree); ``tests/markdown_cases.json`` runs one corpus through both.

Every step is linear in the length of the text (replies are re-rendered as they stream
in): lines are scanned once, code spans are paired through per-length queues, and
emphasis is resolved with a stack whose top is always the only candidate opener.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass, field

# The only tags the renderer ever makes; none of them carries an attribute.
TAGS = frozenset({"p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote"})
_TAB_SPACE = " \t"


@dataclass
class Element:
    """One tag of the output (from :data:`TAGS`) with its children: elements or plain text."""

    tag: str
    children: list[Element | str] = field(default_factory=list)


# --- characters ---------------------------------------------------------------------
# Defined explicitly (not with \s and \w) so the JavaScript twin classifies them the same.

def _is_space(char: str) -> bool:
    return char in " \t\f\v" or unicodedata.category(char) == "Zs"


def _is_word(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LN"


# --- inline: code spans, then emphasis ------------------------------------------------

class _Run:
    """A run of ``*`` that may open and/or close emphasis; ``count`` shrinks as it is used."""

    __slots__ = ("count", "can_open", "can_close")

    def __init__(self, count: int, can_open: bool, can_close: bool) -> None:
        self.count, self.can_open, self.can_close = count, can_open, can_close


def _backtick_runs(line: str) -> list[tuple[int, int]]:
    runs, i = [], 0
    while i < len(line):
        if line[i] == "`":
            start = i
            while i < len(line) and line[i] == "`":
                i += 1
            runs.append((start, i - start))
        else:
            i += 1
    return runs


def _code_spans(line: str) -> list[tuple[int, int, int]]:
    """(start, end, N) of each code span: a run of N backticks up to the next run of exactly N."""
    runs = _backtick_runs(line)
    by_length: dict[int, list[int]] = {}
    for index, (_, length) in enumerate(runs):
        by_length.setdefault(length, []).append(index)
    # Runs are visited left to right, so each queue pointer only moves forward (linear).
    pointer: dict[int, int] = {}
    spans, k = [], 0
    while k < len(runs):
        start, length = runs[k]
        queue, p = by_length[length], pointer.get(length, 0)
        while p < len(queue) and queue[p] <= k:
            p += 1
        pointer[length] = p
        if p < len(queue):
            end_start, _ = runs[queue[p]]
            spans.append((start, end_start + length, length))
            k = queue[p] + 1
        else:
            k += 1
    return spans


def _tokens(line: str) -> list[Element | str | _Run]:
    """Text, code elements and ``*`` runs (with what each run may do) of one line."""
    out: list[Element | str | _Run] = []
    spans = _code_spans(line)
    pos = 0
    for start, end, ticks in [*spans, (len(line), len(line), 0)]:
        i = text_from = pos
        while i < start:
            if line[i] != "*":
                i += 1
                continue
            if i > text_from:
                out.append(line[text_from:i])
            run_start = i
            while i < start and line[i] == "*":
                i += 1
            before = line[run_start - 1] if run_start else None
            after = line[i] if i < len(line) else None
            can_open = after is not None and not _is_space(after) and not (
                before is not None and _is_word(before))
            can_close = before is not None and not _is_space(before) and not (
                after is not None and _is_word(after))
            out.append(_Run(i - run_start, can_open, can_close))
            text_from = i
        if start > text_from:
            out.append(line[text_from:start])
        if end > start:
            out.append(Element("code", [line[start + ticks:end - ticks]]))
        pos = end
    return out


def _merged(nodes: list[Element | str | _Run]) -> list[Element | str]:
    """Unused runs become their ``*`` again; neighbouring text pieces are joined."""
    out: list[Element | str] = []
    text: list[str] = []  # joined once: repeated += would copy the text over and over
    for node in [*nodes, None]:
        if isinstance(node, str | _Run):
            text.append("*" * node.count if isinstance(node, _Run) else node)
            continue
        joined = "".join(text)
        if joined:
            out.append(joined)
        text = []
        if node is not None:
            out.append(node)
    return out


def inline(line: str) -> list[Element | str]:
    """Code spans, **strong** and *em* of one line, always properly nested."""
    out: list[Element | str | _Run] = []
    openers: list[tuple[int, _Run]] = []  # every run in ``out`` (all may open), with its place
    for token in _tokens(line):
        if not isinstance(token, _Run):
            out.append(token)
            continue
        count = token.count
        if token.can_close:
            # The innermost opener is the only candidate (no rule excludes a pair), so each
            # step is constant work plus the nodes it wraps, which leave ``out``: linear.
            while count and openers:
                at, opener = openers[-1]
                use = 2 if opener.count >= 2 and count >= 2 else 1
                wrapped = Element("strong" if use == 2 else "em", _merged(out[at + 1:]))
                del out[at + 1:]
                out.append(wrapped)
                opener.count -= use
                count -= use
                if not opener.count:
                    openers.pop()
                    del out[at]
        if count:
            if token.can_open:
                opener = _Run(count, True, False)
                openers.append((len(out), opener))
                out.append(opener)
            else:
                out.append("*" * count)
    return _merged(out)


# --- blocks --------------------------------------------------------------------------

def _fence_open(line: str) -> tuple[int, int] | None:
    """(indent, backticks) when ``line`` opens a code fence: 3+ backticks, info without any."""
    stripped = line.lstrip(_TAB_SPACE)
    ticks = len(stripped) - len(stripped.lstrip("`"))
    if ticks < 3 or "`" in stripped[ticks:]:
        return None
    return len(line) - len(stripped), ticks


def _fence_closes(line: str, ticks: int) -> bool:
    stripped = line.lstrip(_TAB_SPACE)
    run = len(stripped) - len(stripped.lstrip("`"))
    return run >= ticks and not stripped[run:].strip(_TAB_SPACE)


def _dedent(line: str, indent: int) -> str:
    kept = line[:indent].lstrip(_TAB_SPACE)
    return kept + line[indent:]


def _after_marker(rest: str) -> str | None:
    """The item text after a list marker, which must be followed by a space or tab."""
    if not rest or rest[0] not in _TAB_SPACE:
        return None
    return rest.lstrip(_TAB_SPACE)


def _bullet(line: str) -> str | None:
    stripped = line.lstrip(_TAB_SPACE)
    if stripped[:1] in ("-", "*", "+") and stripped:
        return _after_marker(stripped[1:])
    return None


def _numbered(line: str) -> str | None:
    stripped = line.lstrip(_TAB_SPACE)
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    if 1 <= digits <= 9 and stripped[digits:digits + 1] in (".", ")"):
        return _after_marker(stripped[digits + 1:])
    return None


def _quote(line: str) -> str | None:
    if not line.startswith(">"):
        return None
    return line[2:] if line[1:2] in (" ", "\t") else line[1:]


def _heading(line: str) -> str | None:
    hashes = len(line) - len(line.lstrip("#"))
    if 1 <= hashes <= 6:
        return _after_marker(line[hashes:])
    return None


# Checked in this order; the first that matches decides the line's kind.
_KINDS = (("ul", _bullet), ("ol", _numbered), ("quote", _quote), ("heading", _heading))


def _classify(line: str) -> tuple[str, str]:
    for kind, match in _KINDS:
        content = match(line)
        if content is not None:
            return kind, content
    return "text", line


def _with_breaks(lines: list[str]) -> list[Element | str]:
    children: list[Element | str] = []
    for i, line in enumerate(lines):
        if i:
            children.append(Element("br"))
        children.extend(inline(line))
    return children


def _block(lines: list[str]) -> list[Element]:
    """One block between blank lines: runs of list items, quote lines, headings, text."""
    out: list[Element] = []
    kind, run = "", []
    for line in [*lines, None]:
        line_kind, content = _classify(line) if line is not None else ("end", "")
        if line_kind == kind and kind != "heading":
            run.append(content)
            continue
        if kind in ("ul", "ol"):
            out.append(Element(kind, [Element("li", inline(item)) for item in run]))
        elif kind == "quote":
            out.append(Element("blockquote", _with_breaks(run)))
        elif kind == "heading":
            out.append(Element("p", [Element("strong", inline(run[0]))]))
        elif kind == "text":
            out.append(Element("p", _with_breaks(run)))
        kind, run = line_kind, [content]
    return out


def _paragraphs(lines: list[str]) -> list[Element]:
    out: list[Element] = []
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip(_TAB_SPACE):
            block.append(line)
        elif block:
            out.extend(_block(block))
            block = []
    return out


def parse(text: str) -> list[Element]:
    """The block elements of ``text``: code fences first, then paragraphs of the rest.

    A fence runs to its closing line (``` or longer, alone on its line) or, while a reply
    is still streaming in, to the end of the text.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[Element] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        fence = _fence_open(lines[i])
        if fence is None:
            pending.append(lines[i])
            i += 1
            continue
        out.extend(_paragraphs(pending))
        pending = []
        indent, ticks = fence
        body: list[str] = []
        i += 1
        while i < len(lines) and not _fence_closes(lines[i], ticks):
            body.append(_dedent(lines[i], indent))
            i += 1
        i += 1  # the closing line
        out.append(Element("pre", [Element("code", ["\n".join(body)] if body else [])]))
    out.extend(_paragraphs(pending))
    return out


def to_html(nodes: list[Element | str]) -> str:
    """Serialize nodes: text escaped (quotes too), tags from :data:`TAGS` without attributes."""
    parts: list[str] = []
    stack: list[tuple[list[Element | str], int, str]] = [(nodes, 0, "")]
    # Iterative, so deeply nested emphasis cannot exhaust Python's recursion limit.
    while stack:
        children, index, closing = stack.pop()
        if index == len(children):
            parts.append(closing)
            continue
        stack.append((children, index + 1, closing))
        node = children[index]
        if isinstance(node, str):
            parts.append(html.escape(node, quote=True))
        elif node.tag == "br":
            parts.append("<br>")
        else:
            parts.append(f"<{node.tag}>")
            stack.append((node.children, 0, f"</{node.tag}>"))
    return "".join(parts)


def render_markdown(text: str) -> str:
    """Render a safe Markdown subset to HTML; no HTML of ``text`` survives.

    Supported: paragraphs, line breaks, fenced code, `code`, **bold**, *italics* (nested in
    any combination), lists, quotes and headings (shown as bold paragraphs). Links and
    images are left as plain text. The output holds only attribute-free tags from
    :data:`TAGS`, every one closed in order.
    """
    return to_html(list(parse(text)))
