"""The tree the Markdown parsers build, and its HTML: fixed, attribute-free tags over text.

Text leaves are escaped when serialized, so the output is well-formed by construction.
:mod:`.markdown_inline` and :mod:`.markdown` build the tree; the web page's twin
(``securechat/server/static/markdown.js``) builds DOM nodes from the same tree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

# The only tags the renderer ever makes; none of them carries an attribute.
TAGS = frozenset({"p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote"})


@dataclass
class Element:
    """One tag of the output (from :data:`TAGS`) with its children: elements or plain text."""

    tag: str
    children: list[Element | str] = field(default_factory=list)


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
