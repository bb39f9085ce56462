"""Inline Markdown of one line: code spans, then **strong** and *em*, always properly nested.

Linear in the length of the line (replies are re-rendered as they stream in): code spans
are paired through per-length queues, and emphasis is resolved with a stack whose top is
always the only candidate opener. The JavaScript twin (``static/markdown.js``) does the
same, step for step.
"""

from __future__ import annotations

import unicodedata

from .markdown_tree import Element

# --- characters ---------------------------------------------------------------------
# Defined explicitly (not with \s and \w) so the JavaScript twin classifies them the same.

def _is_space(char: str) -> bool:
    return char in " \t\f\v" or unicodedata.category(char) == "Zs"


def _is_word(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LN"


# --- code spans, then emphasis ------------------------------------------------------

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
