"""A safe Markdown subset: text becomes a tree of fixed, attribute-free tags over plain text.

Nothing of the text is ever read as HTML. :func:`parse` splits it into blocks (code
fences, paragraphs, lists, quotes, headings), each line of them parsed by
:func:`~.markdown_inline.inline`, into :class:`~.markdown_tree.Element` nodes whose text
leaves are escaped when serialized (:func:`~.markdown_tree.to_html`), so the output is
well-formed by construction. The web page has the same parser in
``securechat/server/static/markdown.js`` (it builds DOM nodes from the same tree);
``tests/markdown_cases.json`` runs one corpus through both.

Every step is linear in the length of the text (replies are re-rendered as they stream
in): lines are scanned once here, and once more each by the inline parser.
"""

from __future__ import annotations

from .markdown_inline import inline
from .markdown_tree import TAGS, Element, to_html

__all__ = ["TAGS", "Element", "inline", "parse", "render_markdown", "to_html"]
_TAB_SPACE = " \t"


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


def render_markdown(text: str) -> str:
    """Render a safe Markdown subset to HTML; no HTML of ``text`` survives.

    Supported: paragraphs, line breaks, fenced code, `code`, **bold**, *italics* (nested in
    any combination), lists, quotes and headings (shown as bold paragraphs). Links and
    images are left as plain text. The output holds only attribute-free tags from
    :data:`TAGS`, every one closed in order.
    """
    return to_html(list(parse(text)))
