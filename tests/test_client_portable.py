"""ChatClient over real HTTP: conversations, regenerate, edit, ghosts, export, import, search."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from securechat import ApiError, ChatClient, TransportError, archive, client_portable


def test_rename_and_star(alice: ChatClient) -> None:
    conv = alice.new_conversation("old")
    renamed = alice.update_conversation(conv["id"], title="new")
    assert renamed["title"] == "new" and not renamed["starred"]
    starred = alice.update_conversation(conv["id"], starred=True)
    assert starred["title"] == "new" and starred["starred"]
    with pytest.raises(ApiError) as info:
        alice.update_conversation(conv["id"])
    assert (info.value.status, info.value.code) == (400, "invalid_field")


def test_regenerate_and_edit_last(alice: ChatClient) -> None:
    conv = alice.new_conversation()["id"]
    sent = alice.send(conv, "first")
    again = alice.regenerate(conv)["reply"]
    assert again["content"] == "Echo: first" and again["id"] != sent["reply"]["id"]
    with alice.regenerate_stream(conv) as stream:
        assert "".join(stream) == "Echo: first"
    assert stream.message is not None and stream.message["role"] == "assistant"
    edited = alice.edit_last(conv, sent["message"]["id"], "second")
    assert edited["message"]["content"] == "second"
    assert edited["reply"]["content"] == "Echo: second"
    assert [m["content"] for m in alice.history(conv)] == ["second", "Echo: second"]
    with pytest.raises(ApiError) as info:
        alice.edit_last(conv, edited["reply"]["id"], "x")
    assert info.value.code == "not_last_user_message"


def test_ghosts(alice: ChatClient) -> None:
    turns = [{"role": "user", "content": "unstored"}]
    assert alice.ghost(turns) == {"reply": {"role": "assistant", "content": "Echo: unstored"}}
    with alice.ghost_stream(turns) as stream:
        assert "".join(stream) == "Echo: unstored"
    assert stream.message == {"role": "assistant", "content": "Echo: unstored"}
    assert alice.conversations() == []
    with pytest.raises(ApiError) as info:
        alice.ghost([{"role": "assistant", "content": "x"}])
    assert info.value.status == 400


def _fill(client: ChatClient) -> None:
    conv = client.new_conversation("Kept")["id"]
    client.send(conv, "remember the milk")
    client.update_conversation(conv, starred=True)


def test_export_to_a_file_and_as_bytes(alice: ChatClient, tmp_path: Path) -> None:
    _fill(alice)
    path = alice.export(tmp_path / "mine.json")
    assert path == tmp_path / "mine.json" and not (tmp_path / "mine.json.part").exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # plaintext: the owner's only
    doc = json.loads(path.read_text("utf-8"))
    assert doc["conversations"][0]["messages"][0]["content"] == "remember the milk"
    markdown = b"".join(alice.iter_export("markdown")).decode()
    assert markdown.endswith("<!-- export complete: 1 conversations, 2 messages -->\n")
    with pytest.raises(ApiError) as info:
        alice.iter_export("xml")
    assert (info.value.status, info.value.code) == (400, "invalid_query")


def test_a_cut_export_is_an_error_and_leaves_no_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    class Cut:
        """A response whose body stops before the export's end."""

        def __enter__(self) -> Cut:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

    cut = [b'{"format":"securechat-export","conversations":[']
    monkeypatch.setattr(client_portable.protocol, "iter_body", lambda response: iter(cut))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TransportError) as info:
        client_portable._write_atomically(out / "x.json", client_portable._body(
            Cut(), b"]}\n"))  # type: ignore[arg-type]
    assert info.value.code == "stream_broken"
    assert list(out.iterdir()) == []


def test_round_trip_plain_and_archive(alice: ChatClient, bob: ChatClient,
                                      tmp_path: Path) -> None:
    _fill(alice)
    plain = alice.export(tmp_path / "alice.json")
    assert bob.import_export(plain) == {"imported": 1, "messages": 2}
    sealed = alice.export_archive(tmp_path / "alice.scarchive", "a long passphrase")
    assert b"milk" not in sealed.read_bytes()
    assert json.loads(b"".join(archive.decrypt([sealed.read_bytes()], "a long passphrase"))
                      )["username"] == "alice"
    assert bob.import_export(sealed, passphrase="a long passphrase") == {
        "imported": 1, "messages": 2}
    assert bob.import_export(json.loads(plain.read_bytes()))["imported"] == 1
    assert [c["title"] for c in bob.conversations()] == ["Kept"] * 3
    with pytest.raises(ApiError) as info:
        bob.import_export(sealed, passphrase="the wrong one")
    assert (info.value.status, info.value.code) == (400, "invalid_archive")
    with pytest.raises(ApiError) as info:
        bob.import_export(b'{"format": "securechat-export", "version": 2}')
    assert info.value.code == "invalid_export" and "version" in info.value.message


def test_search_pages(alice: ChatClient) -> None:
    _fill(alice)
    page = alice.search("MILK")
    assert [r["role"] for r in page["results"]] == ["assistant", "user"]
    assert page["next_before"] is None
    assert alice.search("milk", limit=1)["next_before"] is not None
    with pytest.raises(ApiError) as info:
        alice.search("  ")
    assert (info.value.status, info.value.code) == (400, "invalid_query")


def test_without_a_session_every_call_is_unauthorized(client: ChatClient,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for call in (lambda: client.search("x"), lambda: client.iter_export(),
                 lambda: client.export_archive(out / "a", "passphrase"),
                 lambda: client.import_export({"format": "securechat-export"}),
                 lambda: client.ghost([{"role": "user", "content": "x"}])):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 401
    assert list(out.iterdir()) == []
