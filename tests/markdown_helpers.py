"""Markdown output as a comparable tree, checked for well-formedness on the way.

A tree is a list of nodes; a node is text or ``[tag, *children]``. The Python renderer's
HTML and the page's DOM (through :data:`DOM_TREE_JS`) both turn into one, so a shared
corpus (``markdown_cases.json``) can be run against each.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from securechat.widgets.markdown import TAGS

CASES = json.loads((Path(__file__).with_name("markdown_cases.json")).read_text("utf-8"))

# JavaScript: the tree of a DOM node's children (adjacent text joined), as domTree(node).
DOM_TREE_FUNCTION = """
function domTree(node) {
  const out = [];
  for (const child of node.childNodes) {
    if (child.nodeType === Node.TEXT_NODE) {
      if (!child.data) continue;
      if (typeof out[out.length - 1] === "string") out[out.length - 1] += child.data;
      else out.push(child.data);
    } else {
      out.push([child.localName, ...domTree(child)]);
    }
  }
  return out;
}
"""
# For locator.evaluate: the tree of that element's children.
DOM_TREE_JS = f"(root) => {{ {DOM_TREE_FUNCTION} return domTree(root); }}"


class _TreeBuilder(HTMLParser):
    """Builds the tree; fails on any tag outside TAGS, any attribute, any mis-nesting."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list[Any] = []
        self.open: list[list[Any]] = []  # the elements not closed yet, innermost last

    def _children(self) -> list[Any]:
        return self.open[-1] if self.open else self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in TAGS, f"unexpected tag <{tag}>"
        assert attrs == [], f"attributes on <{tag}>: {attrs}"
        node: list[Any] = [tag]
        self._children().append(node)
        if tag != "br":  # a void element: nothing to close
            self.open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise AssertionError(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1][0] == tag, f"</{tag}> closes <{self.open[-1][0]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        children = self._children()
        # An element's first item is its tag name, never text to join.
        first_child = 0 if children is self.root else 1
        if len(children) > first_child and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    def unknown_decl(self, data: str) -> None:
        raise AssertionError(f"declaration {data!r}")

    def handle_decl(self, decl: str) -> None:
        raise AssertionError(f"declaration {decl!r}")

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"comment {data!r}")

    def handle_pi(self, data: str) -> None:
        raise AssertionError(f"processing instruction {data!r}")


def html_tree(markup: str) -> list[Any]:
    """The tree of ``markup``; AssertionError unless it is well-formed and uses only TAGS."""
    builder = _TreeBuilder()
    builder.feed(markup)
    builder.close()
    assert not builder.open, f"never closed: {[node[0] for node in builder.open]}"
    return builder.root


def text_of(tree: list[Any]) -> str:
    """The text of a tree, in order (what a reader sees, without the tags)."""
    return "".join(node if isinstance(node, str) else text_of(node[1:]) for node in tree)
