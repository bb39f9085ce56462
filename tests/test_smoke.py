"""The shortest path through the API works end to end."""

from securechat import ChatClient


def test_register_login_send_history(alice: ChatClient) -> None:
    conv = alice.new_conversation("first")
    result = alice.send(conv["id"], "hello there")
    assert result["message"]["content"] == "hello there"
    assert "hello there" in result["reply"]["content"]
    history = alice.history(conv["id"])
    assert [m["role"] for m in history] == ["user", "assistant"]
