"""Your history, portable, in the ChatBox: export it (JSON, Markdown, an encrypted archive)
and import an export. Shown under the account panel, with a warning before a plain export.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..client import ChatClient
from .conversations import Run

_AUTO = w.Layout(width="auto")
_WIDE = {"description_width": "10em"}


class HistoryTools:
    """Export and import (:attr:`view`); ``on_imported()`` reloads the conversation list.

    Files are written and read where the kernel runs; a passphrase typed here is emptied
    from its field as soon as it is read.
    """

    def __init__(self, client: ChatClient, run: Run, on_imported: Callable[[], None]) -> None:
        self.client, self._run, self._on_imported = client, run, on_imported
        self.warning = w.HTML(
            "<b>Your history</b><br>An export is your history <b>in plain text</b>: whoever "
            "reads the file reads every conversation. For a backup, use the encrypted archive.")
        self.export_path = w.Text(value="securechat-export.json", description="Export to file",
                                  style=_WIDE)
        self.export_format = w.ToggleButtons(options=[("JSON", "json"), ("Markdown", "markdown")],
                                             value="json", description="Format", style=_WIDE)
        self.export_button = w.Button(description="Export", layout=_AUTO,
                                      tooltip="Write every conversation, in plain text")
        self.archive_path = w.Text(value="securechat-archive.bin", description="Archive file",
                                   style=_WIDE)
        self.archive_passphrase = w.Password(description="Passphrase", style=_WIDE)
        self.archive_button = w.Button(description="Export encrypted archive", layout=_AUTO)
        self.import_path = w.Text(description="Import file", style=_WIDE,
                                  placeholder="a securechat export or archive")
        self.import_passphrase = w.Password(description="Passphrase", style=_WIDE,
                                            placeholder="for an archive only")
        self.import_button = w.Button(description="Import", layout=_AUTO,
                                      tooltip="Add its conversations as new ones")
        self.note = w.HTML()
        # Buttons in rows of their own: directly in the column they would stretch across it.
        self._rows = [w.HBox([button]) for button in (self.export_button, self.archive_button,
                                                      self.import_button)]
        self.view = w.VBox([
            self.warning, self.export_path, self.export_format, self._rows[0],
            self.archive_path, self.archive_passphrase, self._rows[1],
            self.import_path, self.import_passphrase, self._rows[2], self.note,
        ], layout=w.Layout(display="none", padding="6px",
                           border="1px solid var(--jp-border-color2, #ddd)"))
        self.export_button.on_click(
            lambda _b: self.export(self.export_path.value, self.export_format.value))
        self.archive_button.on_click(lambda _b: self.export_archive(
            self.archive_path.value, self._take(self.archive_passphrase)))
        self.import_button.on_click(lambda _b: self.import_export(
            self.import_path.value, self._take(self.import_passphrase) or None))

    @staticmethod
    def _take(field: w.Password) -> str:
        value = str(field.value)
        field.value = ""
        return value

    def export(self, path: str | os.PathLike[str], format: str = "json") -> Path | None:
        """Write every conversation (``json`` or ``markdown``, plain text) to ``path``."""
        def action() -> Path:
            written = self.client.export(path, format)
            self.note.value = html.escape(
                f"Exported to {written}: plain text, keep it safe or delete it.")
            return written

        return self._run(action)

    def export_archive(self, path: str | os.PathLike[str], passphrase: str) -> Path | None:
        """Write every conversation, sealed under ``passphrase``, to ``path``."""
        def action() -> Path:
            written = self.client.export_archive(path, passphrase)
            self.note.value = html.escape(
                f"Encrypted archive written to {written}; it opens with its passphrase only.")
            return written

        return self._run(action)

    def import_export(self, source: str | os.PathLike[str] | bytes | dict[str, Any],
                      passphrase: str | None = None) -> dict[str, int] | None:
        """Add the conversations of an export (or, with ``passphrase``, an archive) as new ones."""
        def action() -> dict[str, int]:
            counts = self.client.import_export(source, passphrase)
            self.note.value = html.escape(
                f"Imported {counts['imported']} conversations ({counts['messages']} messages).")
            self._on_imported()
            return counts

        return self._run(action)

    def show(self, shown: bool) -> None:
        """Show or hide the tools (with the account panel)."""
        self.view.layout.display = None if shown else "none"

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons while an action runs."""
        for button in (self.export_button, self.archive_button, self.import_button):
            button.disabled = busy

    def blank(self) -> None:
        """Empty the note and the passphrases, and hide (before closing, or on logout)."""
        self.note.value = self.archive_passphrase.value = self.import_passphrase.value = ""
        self.show(False)

    def widgets(self) -> list[w.Widget]:
        """Every widget of the component, for closing."""
        return [self.export_button, self.archive_button, self.import_button,
                *self.view.children, self.view]
