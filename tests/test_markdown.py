"""The Markdown renderer: well-formed output in every case, only its own tags, the text kept.

The shared corpus (markdown_cases.json) is also run against the page's renderer in
Chromium (tests/test_browser_web.py), so the two agree on the subset.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.widgets.markdown import TAGS, Element, inline, parse, render_markdown
from tests.markdown_helpers import CASES, html_tree, text_of


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_corpus(case: dict[str, Any]) -> None:
    assert html_tree(render_markdown(case["source"])) == case["expected"]


# --- emphasis nests properly, whatever the combination ------------------------------

# Every way of putting one or two delimiters of one to three stars around two words.
DELIMITERS = ["*", "**", "***"]
COMBINATIONS = [f"{a}x{b} y{c}" for a in DELIMITERS for b in ["", *DELIMITERS]
                for c in DELIMITERS] + [f"{a}x {b}y{c} z{d}" for a in DELIMITERS
                                        for b in DELIMITERS for c in DELIMITERS
                                        for d in ["", *DELIMITERS]]


@pytest.mark.parametrize("source", COMBINATIONS)
def test_emphasis_combinations_are_well_formed(source: str) -> None:
    tree = html_tree(render_markdown(source))  # asserts the nesting on the way
    # Only stars are syntax here: the words are all still there, in order.
    assert re.sub(r"[*\s]", "", text_of(tree)) == re.sub(r"[*\s]", "", source)


@pytest.mark.parametrize(("source", "html"), [
    ("***x***", "<p><em><strong>x</strong></em></p>"),
    ("**a *b* c**", "<p><strong>a <em>b</em> c</strong></p>"),
    ("*a **b** c*", "<p><em>a <strong>b</strong> c</em></p>"),
    ("***a** b*", "<p><em><strong>a</strong> b</em></p>"),
    ("***a* b**", "<p><strong><em>a</em> b</strong></p>"),
    ("**a*", "<p>*<em>a</em></p>"),
    ("*a**", "<p><em>a</em>*</p>"),
    ("***a*", "<p>**<em>a</em></p>"),
    ("*a***", "<p><em>a</em>**</p>"),
])
def test_emphasis_html(source: str, html: str) -> None:
    assert render_markdown(source) == html


def test_a_fence_closed_on_the_next_line_is_an_empty_block() -> None:
    # The fence itself used to be shown as the block's code.
    assert render_markdown("```\n```") == "<pre><code></code></pre>"
    assert render_markdown("```py\n```\nafter") == "<pre><code></code></pre><p>after</p>"
    assert render_markdown("```\ncode\n```") == "<pre><code>code</code></pre>"


def test_deep_nesting_is_not_recursive() -> None:
    depth = 5_000  # beyond Python's recursion limit
    out = render_markdown("*a " * depth + "b" + " c*" * depth)
    assert out.count("<em>") == out.count("</em>") == depth
    assert html_tree(out)  # the test's own parser is iterative too


def test_tree_api() -> None:
    assert parse("**x**") == [Element("p", [Element("strong", ["x"])])]
    assert inline("`a` *b*") == [Element("code", ["a"]), " ", Element("em", ["b"])]


# --- properties ------------------------------------------------------------------------

SYNTAX = set("*`#>-+.)0123456789")
_OWN_TAG = re.compile("</?(?:" + "|".join(sorted(TAGS)) + ")>")
_ESCAPE = re.compile(r"&(?:amp|lt|gt|quot|#x27);")
MARKDOWNISH = st.text(
    alphabet=st.sampled_from(list("<>&\"'`*_-+#> \t\n\r=/abc1.)[]()!\u00e9\u00a0")), max_size=120)


def _squash(text: str) -> str:
    return re.sub(r"\s", "", text)


def _is_subsequence(short: str, long: str) -> bool:
    chars = iter(long)
    return all(c in chars for c in short)


def check_properties(text: str) -> None:
    out = render_markdown(text)
    tree = html_tree(out)  # well-formed; only TAGS; no attributes
    # Nothing of the input is markup: with our own tags removed, no < > or quote is left
    # and every & starts one of the escapes html.escape makes.
    rest = _OWN_TAG.sub("", out)
    assert not set(rest) & set("<>\"'"), rest
    assert _ESCAPE.sub("", rest).count("&") == 0, rest
    # What a reader sees is the input's own characters, in order (syntax dropped).
    shown = text_of(tree)
    assert _is_subsequence(_squash(shown), _squash(text))
    if "`" not in text:
        # Without fences (whose info string is dropped), only syntax characters go.
        assert [c for c in _squash(shown) if c not in SYNTAX] == \
               [c for c in _squash(text) if c not in SYNTAX]


@given(MARKDOWNISH)
def test_markdownish_text_properties(text: str) -> None:
    check_properties(text)


@given(st.text(max_size=300))
def test_any_text_properties(text: str) -> None:
    check_properties(text)


@given(st.lists(st.sampled_from(["*", "**", "***", "a", " ", "`", "\n", "``", "- ", "```\n"]),
                max_size=40).map("".join))
def test_delimiter_soup_properties(text: str) -> None:
    check_properties(text)
