"""Search over your own conversations: a query field, the results, *Open* on each.

The server decrypts your titles and messages inside the request only and answers with
snippets of plain text; each is shown escaped, its match marked with ``<mark>``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import ChatClient
from .conversations import Run

_AUTO = w.Layout(width="auto")


def result_html(result: dict[str, Any]) -> str:
    """One result as HTML: the conversation's title, who wrote it, the snippet (escaped)."""
    snippet = str(result.get("snippet") or "")
    start, end = (result.get("match") or [0, 0])[:2]
    marked = (html.escape(snippet[:start]) + "<mark>" + html.escape(snippet[start:end])
              + "</mark>" + html.escape(snippet[end:]))
    where = "title" if result.get("message_id") is None else {
        "user": "you", "assistant": "assistant"}.get(str(result.get("role")), "message")
    return (f"<b>{html.escape(str(result.get('title') or ''))}</b> "
            f"<small>({where})</small>: {marked}")


class Search:
    """The search row (:attr:`view`): type, *Search*, and results with *Open* and *More*.

    ``open(conversation_id)`` shows a conversation (the box's switch).
    """

    def __init__(self, client: ChatClient, run: Run, open: Callable[[str], object]) -> None:
        self.client, self._run, self._open = client, run, open
        self._query = ""
        self._next: str | None = None
        self.results: list[dict[str, Any]] = []
        self._rows: list[w.HBox] = []
        self.query = w.Text(placeholder="Search your conversations", description="Search",
                            layout=w.Layout(flex="1 1 auto"))
        self.search_button = w.Button(description="Search", icon="search", layout=_AUTO,
                                      tooltip="Search titles and messages")
        self.clear_button = w.Button(description="Clear", layout=_AUTO,
                                     tooltip="Close the results")
        self.summary = w.HTML()
        self.result_box = w.VBox()
        self.more_button = w.Button(description="More results", layout=_AUTO,
                                    tooltip="Older matches")
        self.view = w.VBox([w.HBox([self.query, self.search_button, self.clear_button]),
                            self.summary, self.result_box, self.more_button])
        self.more_button.layout.display = "none"
        self.search_button.on_click(lambda _b: self.search(self.query.value))
        self.clear_button.on_click(lambda _b: self.clear())
        self.more_button.on_click(lambda _b: self.search(self._query, more=True))

    def search(self, q: str, more: bool = False) -> list[dict[str, Any]] | None:
        """Show the matches of ``q`` (``more``: the next page too); return all shown."""
        def action() -> list[dict[str, Any]]:
            page = self.client.search(q, before=self._next if more else None)
            if not more:
                self._clear_rows()
                self.results = []
            self._query, self._next = q, page["next_before"]
            for result in page["results"]:
                self._add(result)
            self.results += page["results"]
            count = len(self.results)
            self.summary.value = html.escape(
                f"{count} match{'es' if count != 1 else ''} for ‘{q}’"
                + (" so far" if self._next else ""))
            self.more_button.layout.display = None if self._next else "none"
            return list(self.results)

        return self._run(action)

    def _add(self, result: dict[str, Any]) -> None:
        button = w.Button(description="Open", layout=_AUTO,
                          tooltip="Show this conversation")
        button.on_click(lambda _b, cid=str(result["conversation_id"]): self._open(cid))
        self._rows.append(w.HBox([w.HTML(result_html(result)), button],
                                 layout=w.Layout(align_items="center")))
        self.result_box.children = tuple(self._rows)

    def _clear_rows(self) -> None:
        for row in self._rows:
            text, button = row.children
            text.value = ""  # snippets are plaintext of the history: blank before closing
            for widget in (text, button, row):
                widget.close()
        self._rows = []
        self.result_box.children = ()

    def clear(self) -> None:
        """Take the results and the query away."""
        self._clear_rows()
        self.results, self._next, self._query = [], None, ""
        self.query.value = self.summary.value = ""
        self.more_button.layout.display = "none"

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons while an action runs."""
        for button in (self.search_button, self.clear_button, self.more_button,
                       *(row.children[1] for row in self._rows)):
            button.disabled = busy

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.query, self.search_button, self.clear_button, self.summary,
                self.result_box, self.more_button, *self.view.children, self.view]
