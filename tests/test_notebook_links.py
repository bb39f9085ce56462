"""Every link in every notebook opens something under the JupyterLab that `make lab` starts.

Relative links (Markdown, and ``href``/``src`` in a markdown cell's HTML) must name an
existing file inside the folder `make lab` serves, read from the Makefile; external http(s)
links are allowed, and listed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.lab_helpers import NOTEBOOKS, make_lab_root

NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?((?:[^\s<>()]|\([^\s()]*\))+)>?"
                     r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")
_HTML_ATTR = re.compile(r"<[A-Za-z][^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)


def links(markdown: str) -> list[str]:
    """Every link target in a markdown text, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    return [m.group(1) for pattern in (_INLINE, _REFERENCE, _AUTOLINK, _HTML_ATTR)
            for m in pattern.finditer(text)]


def _cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "markdown"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading (where README.md and SECURITY.md are read too)."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[`*_]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text))
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(file: Path) -> set[str]:
    if file.suffix == ".md":
        headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$",
                              _FENCE.sub("", file.read_text(encoding="utf-8")), re.M)
    elif file.suffix == ".ipynb":
        headings = [h for cell in _cells(file)
                    for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", cell, re.M)]
    else:
        return set()
    return {_slug(h) for h in headings}


def problems(notebook: Path, root: Path) -> tuple[list[str], list[str]]:
    """(broken links, external links) of one notebook, served from ``root``."""
    broken, external = [], []
    for target in (t for cell in _cells(notebook) for t in links(cell)):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https", "mailto"):
            external.append(target)
            continue
        if parts.scheme or parts.netloc or target.startswith("/"):
            broken.append(f"{target}: not a relative link (it would not open under the lab)")
            continue
        file = (notebook.parent / unquote(parts.path)).resolve() if parts.path else notebook
        if not file.is_relative_to(root):
            broken.append(f"{target}: outside the folder `make lab` serves ({root.name})")
        elif not file.is_file():
            broken.append(f"{target}: no such file")
        elif parts.fragment and file.suffix in (".md", ".ipynb") \
                and unquote(parts.fragment).lower() not in _anchors(file):
            broken.append(f"{target}: no heading #{parts.fragment} in {file.name}")
    return broken, external


@pytest.mark.parametrize("notebook", NOTEBOOK_FILES, ids=[p.name for p in NOTEBOOK_FILES])
def test_every_link_opens_under_make_lab(notebook: Path) -> None:
    broken, external = problems(notebook, make_lab_root())
    print(f"\n{notebook.name}: external links: {external or 'none'}")
    assert broken == []


def test_the_notebooks_link_outside_their_folder() -> None:
    # Links to ../README.md, ../SECURITY.md and the package's files: a root of notebooks/
    # would break them, which is why `make lab` serves the repository.
    targets = {t for nb in NOTEBOOK_FILES for cell in _cells(nb) for t in links(cell)}
    assert any(t.startswith("../SECURITY.md") for t in targets)
    assert any(t.startswith("../securechat/") for t in targets)
    assert any(t.endswith(".ipynb") for t in targets)
    outside = NOTEBOOKS  # what the old `make lab` served
    assert any(problems(nb, outside)[0] for nb in NOTEBOOK_FILES)


def test_link_finder() -> None:
    text = """See [a](a.md), ![img](pic.png "title"), [ref]: ref.md and <https://x.org>.
`[not](code.md)` stays code, and so does this:

```python
[also](not-a-link.md)
```
<a href="page.html">x</a> [nested [b]](n.md) [paren](file_(1).md)"""
    assert sorted(links(text)) == sorted(["a.md", "pic.png", "https://x.org", "page.html",
                                          "n.md", "file_(1).md"])
    assert links("[ref]: ref.md") == ["ref.md"]


def test_problems_are_found(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "doc.md").write_text("# Title\n## Using it\n")
    nb = tmp_path / "sub" / "nb.ipynb"
    cells = ["[ok](../doc.md#using-it) [web](https://example.org)",
             "[gone](missing.md) [abs](/etc/passwd) [out](../../x.md) [anchor](../doc.md#nope)"]
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": c}
                                        for c in cells]}))
    (tmp_path.parent / "x.md").write_text("outside")
    broken, external = problems(nb, tmp_path)
    assert external == ["https://example.org"]
    assert [b.split(":")[0] for b in broken] == ["missing.md", "/etc/passwd", "../../x.md",
                                                "../doc.md#nope"]
