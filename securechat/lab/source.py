"""Show the package's own source next to the notebook step it implements.

``show_source(seal)`` reads the real code with :mod:`inspect` (never a copy), and names
it by its path relative to the repository (``securechat/crypto.py``) with line numbers.
In JupyterLab it is syntax-highlighted (Pygments); its plain-text form, the one a
notebook check compares, is the numbered lines themselves.
"""

from __future__ import annotations

import html
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import securechat

_HEADER_STYLE = ("font-family:var(--jp-code-font-family,monospace);font-size:0.85em;"
                 "opacity:0.75;margin:0 0 2px")
# Dark text on the light background Pygments' default style draws, in any JupyterLab theme.
_BOX_STYLE = "font-size:var(--jp-code-font-size,13px);overflow-x:auto;color:#333"


@dataclass(frozen=True)
class Source:
    """Lines of one source file, from ``first_line`` on, and where the file is."""

    path: str  # relative to the repository, e.g. "securechat/crypto.py"
    first_line: int
    lines: tuple[str, ...]

    @property
    def last_line(self) -> int:
        """The number of the last line shown."""
        return self.first_line + len(self.lines) - 1

    @property
    def text(self) -> str:
        """The code itself, as in the file."""
        return "\n".join(self.lines) + "\n"

    @property
    def header(self) -> str:
        """Where the code lives, e.g. ``securechat/crypto.py, lines 97-103``."""
        return f"{self.path}, lines {self.first_line}-{self.last_line}"

    def __repr__(self) -> str:
        width = len(str(self.last_line))
        numbered = (f"{n:>{width}}  {line}".rstrip()
                    for n, line in enumerate(self.lines, self.first_line))
        return "\n".join([self.header, *numbered])

    def _repr_html_(self) -> str:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import get_lexer_for_filename
            from pygments.util import ClassNotFound
        except ImportError:  # no Pygments: the same lines, numbered, unhighlighted
            return f"<pre>{html.escape(repr(self))}</pre>"
        try:
            lexer = get_lexer_for_filename(self.path, stripnl=False)
        except ClassNotFound:
            from pygments.lexers.special import TextLexer

            lexer = TextLexer()
        # Inline styles: the output looks the same wherever the notebook is opened.
        formatter = HtmlFormatter(noclasses=True, linenos="inline",
                                  linenostart=self.first_line)
        code = highlight(self.text, lexer, formatter)
        return (f'<div class="securechat-source"><div style="{_HEADER_STYLE}">'
                f"{html.escape(self.header)}</div>"
                f'<div style="{_BOX_STYLE}">{code}</div></div>')


def repository_root() -> Path:
    """The folder holding the ``securechat`` package (the repository, in a checkout)."""
    return Path(securechat.__file__).resolve().parent.parent


def show_source(target: Any, *, start: str | None = None, end: str | None = None) -> Source:
    """The source of ``target``: a function, class, method or module, or a file's path.

    A path is relative to the repository, e.g. ``"securechat/server/static/app.js"``. ``start``
    narrows to the first line containing that text, plus the block it opens (the lines
    indented under it in Python, up to the matching ``}`` elsewhere); ``end`` instead
    stops at the next line containing that text. A marker that is not found is an error,
    so a renamed function breaks the notebook instead of showing the wrong code.
    """
    path, first_line, lines = _locate(target)
    if start is not None:
        i = _find(lines, start, 0, path)
        while i > 0 and lines[i - 1].strip().startswith("@"):
            i -= 1  # a decorator (a route, a login check) belongs to what it decorates
        opener = _find(lines, start, i, path)
        if end is not None:
            stop = _find(lines, end, opener + 1, path)
        else:
            stop = _block_end(lines, opener, path.endswith(".py"))
        first_line, lines = first_line + i, lines[i:stop + 1]
    elif end is not None:
        lines = lines[:_find(lines, end, 0, path) + 1]
    return Source(path, first_line, tuple(line.rstrip("\n") for line in lines))


def _locate(target: Any) -> tuple[str, int, list[str]]:
    """Relative path, first line number and lines of a Python object or a file."""
    if isinstance(target, (str, Path)):
        root = repository_root()
        file = (root / target).resolve()
        if Path(target).is_absolute() or not file.is_relative_to(root) or not file.is_file():
            raise ValueError(f"{target}: not a file of the repository (give a relative path)")
        lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
        return file.relative_to(root).as_posix(), 1, lines
    shown: Any = target.fget if isinstance(target, property) else target  # a getter, for a property
    obj = inspect.unwrap(shown)
    file = Path(inspect.getsourcefile(obj) or inspect.getfile(obj)).resolve()
    lines, first_line = inspect.getsourcelines(obj)
    return _relative(obj, file), max(first_line, 1), lines


def _relative(obj: Any, file: Path) -> str:
    """A file's path relative to the folder of its top-level package (never absolute)."""
    module = obj.__name__ if inspect.ismodule(obj) else obj.__module__
    top = sys.modules[module.split(".")[0]]
    base = Path(top.__file__ or "").resolve().parent
    if base.name == module.split(".")[0] and file.is_relative_to(base.parent):
        return file.relative_to(base.parent).as_posix()
    return file.name


def _find(lines: list[str], marker: str, begin: int, path: str) -> int:
    for i in range(begin, len(lines)):
        if marker in lines[i]:
            return i
    raise ValueError(f"{marker!r} not found in {path}")


def _block_end(lines: list[str], opener: int, python: bool) -> int:
    """Index of the last line of the block the line ``opener`` starts."""
    if python:
        indent = _indent(lines[opener])
        last = opener
        depth = _brackets(lines[opener])
        for i in range(opener + 1, len(lines)):
            if lines[i].strip() and depth <= 0 and _indent(lines[i]) <= indent:
                break
            depth += _brackets(lines[i])
            if lines[i].strip():
                last = i
        return last
    depth = 0
    for i in range(opener, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        if depth <= 0 and "}" in lines[i]:
            return i
    return len(lines) - 1


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _brackets(line: str) -> int:
    """Open minus closed brackets: a call continued on the next lines is one statement."""
    return sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
