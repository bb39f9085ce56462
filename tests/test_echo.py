"""The offline echo responder: deterministic, verbatim, streamable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.backends import EchoResponder, Turn

from .helpers import AuthActions


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


def test_send_decrypts_only_what_the_responder_uses(
    auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Echo needs the last message only: a long history is not decrypted on every send."""
    from securechat import crypto

    auth.signup()
    conv = auth.new_conversation()
    for i in range(10):
        assert auth.send(conv["id"], f"earlier {i}").status_code == 201
    opened: list[int] = []
    real = crypto.open_

    def spy(key: bytes, blob: bytes, ad: bytes) -> bytes:
        opened.append(len(blob))
        return real(key, blob, ad)

    monkeypatch.setattr(crypto, "open_", spy)
    assert auth.send(conv["id"], "latest").get_json()["reply"]["content"] == "Echo: latest"
    assert len(opened) == 2  # the session's data key, then the one message echoed
