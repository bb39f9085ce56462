"""The offline echo responder: deterministic, verbatim, streamable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.responders import EchoResponder, Turn


def history(*texts: str) -> list[Turn]:
    return [
        Turn(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts)
    ]


def test_reply_contains_last_user_message_verbatim() -> None:
    echo = EchoResponder()
    reply = echo.reply(history("first", "Echo: first", "second <b>x</b>\n  y"))
    assert "second <b>x</b>\n  y" in reply and "first" not in reply
    assert reply == echo.reply(history("first", "Echo: first", "second <b>x</b>\n  y"))


@given(st.text(min_size=1, max_size=500))
def test_stream_joins_to_reply(text: str) -> None:
    echo = EchoResponder()
    turns = history(text)
    assert "".join(echo.stream(turns)) == echo.reply(turns)
    assert text in echo.reply(turns)


@pytest.mark.parametrize("text,chunks", [("one two three", 4), ("solo", 2)])
def test_stream_is_word_by_word(text: str, chunks: int) -> None:
    assert len(list(EchoResponder().stream(history(text)))) == chunks
