"""A recovery code shown once in the ChatBox: masked until *Show*, gone at *I saved it*.

Shown at registration, after a password change or a recovery, and on request (the account
panel's *New recovery code*).
"""

from __future__ import annotations

import html

import ipywidgets as w

from ..recovery import RecoveryCode

_AUTO = w.Layout(width="auto")


class RecoveryCodeView:
    """A recovery code shown once (:attr:`view`): masked until *Show*; *I saved it* ends it.

    The code reaches the browser only while revealed; hidden or dismissed, the widget holds
    its masked shape alone.
    """

    def __init__(self) -> None:
        self.code: RecoveryCode | None = None
        self.intro = w.HTML()
        self.text = w.HTML()
        self.reveal_button = w.ToggleButton(description="Show", icon="eye", layout=_AUTO,
                                            tooltip="Show or hide the recovery code")
        self.done_button = w.Button(description="I saved it", layout=_AUTO,
                                    tooltip="Hide the code; it is not shown again")
        self.view = w.VBox([self.intro, w.HBox([self.text, self.reveal_button,
                                                self.done_button],
                                               layout=w.Layout(align_items="center"))],
                           layout=w.Layout(display="none", padding="4px",
                                           border="1px solid var(--jp-warn-color1, #c80)"))
        self.reveal_button.observe(lambda _c: self._draw(), names="value")
        self.done_button.on_click(lambda _b: self.dismiss())

    def show(self, code: RecoveryCode, why: str) -> None:
        """Show ``code`` masked, with ``why`` it is new and what to do with it."""
        self.code = code
        self.intro.value = (f"<b>{html.escape(why)}</b> Write it down or keep it in a "
                            "password manager now: it is shown only this once, and it is the "
                            "only way back in if you forget your password.")
        self.reveal_button.value = False
        self._draw()
        self.view.layout.display = None

    @property
    def revealed(self) -> bool:
        """True while the code itself is on screen."""
        return self.code is not None and self.reveal_button.value

    def _draw(self) -> None:
        if self.code is None:
            self.text.value = ""
            return
        shown = self.code.reveal() if self.reveal_button.value else self.code.masked
        label = "Recovery code" if self.reveal_button.value else "Recovery code (hidden)"
        self.text.value = (f'<code aria-label="{label}" style="font-size:1.1em;'
                           f'letter-spacing:0.05em">{html.escape(shown)}</code>')
        self.reveal_button.description = "Hide" if self.reveal_button.value else "Show"

    def dismiss(self) -> None:
        """Take the code away (blanked in the widgets too)."""
        self.code = None
        self.reveal_button.value = False
        self.intro.value = self.text.value = ""
        self.view.layout.display = "none"

    def widgets(self) -> list[w.Widget]:
        """Every widget of the view, for closing."""
        return [self.intro, self.text, self.reveal_button, self.done_button,
                *self.view.children, self.view]
