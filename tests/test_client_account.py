"""ChatClient's account methods over real HTTP: what a script or notebook calls."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from securechat import ChatClient, recovery
from securechat.errors import ApiError

from .helpers import PASSWORD, unique_name

pytestmark = pytest.mark.every_store

NEW = "a brand new passphrase"


def test_register_returns_the_recovery_code(client: ChatClient) -> None:
    answer = client.register(unique_name(), PASSWORD)
    assert len(recovery.parse_code(answer["recovery_code"])) == 16


def test_change_password_keeps_this_session_and_ends_the_others(
        make_client: Callable[[], ChatClient]) -> None:
    name = unique_name()
    here, there = make_client(), make_client()
    here.register(name, PASSWORD)
    here.login(name, PASSWORD)
    there.login(name, PASSWORD)
    conv = here.new_conversation("kept")
    here.send(conv["id"], "still mine")
    code = here.change_password(PASSWORD, NEW)
    recovery.parse_code(code)
    assert [m["content"] for m in here.history(conv["id"])][0] == "still mine"
    with pytest.raises(ApiError) as ended:
        there.conversations()
    assert ended.value.status == 401 and ended.value.code == "unauthorized"
    with pytest.raises(ApiError) as old:
        make_client().login(name, PASSWORD)
    assert old.value.code == "invalid_credentials"
    make_client().login(name, NEW)


def test_a_wrong_password_is_invalid_credentials_and_the_client_stays_logged_in(
        alice: ChatClient) -> None:
    with pytest.raises(ApiError) as wrong:
        alice.change_password("not the password", NEW)
    assert (wrong.value.status, wrong.value.code) == (401, "invalid_credentials")
    assert alice.csrf_token is not None and alice.username == "alice"
    assert alice.session()["username"] == "alice"


def test_recover_logs_in_and_the_code_is_single_use(
        make_client: Callable[[], ChatClient]) -> None:
    name = unique_name()
    first = make_client()
    code = first.register(name, PASSWORD)["recovery_code"]
    first.login(name, PASSWORD)
    conv = first.new_conversation("before")
    first.send(conv["id"], "remember me")
    rescued = make_client()
    next_code = rescued.recover(name, code.lower().replace("-", " "), NEW)
    assert next_code != code and rescued.username == name
    assert rescued.history(conv["id"])[0]["content"] == "remember me"
    with pytest.raises(ApiError) as ended:
        first.conversations()
    assert ended.value.code == "unauthorized"
    with pytest.raises(ApiError) as used:
        make_client().recover(name, code, "yet another passphrase")
    assert used.value.code == "invalid_credentials"
    make_client().recover(name, next_code, "yet another passphrase")


def test_a_typo_in_the_code_is_a_400_saying_so(client: ChatClient) -> None:
    name = unique_name()
    code = client.register(name, PASSWORD)["recovery_code"]
    typo = ("0" if code[0] != "0" else "1") + code[1:]
    with pytest.raises(ApiError) as bad:
        client.recover(name, typo, NEW)
    assert (bad.value.status, bad.value.code) == (400, "invalid_recovery_code")
    assert "typo" in str(bad.value)


def test_new_recovery_code_kills_the_old_one(make_client: Callable[[], ChatClient]) -> None:
    name = unique_name()
    c = make_client()
    old = c.register(name, PASSWORD)["recovery_code"]
    c.login(name, PASSWORD)
    new = c.new_recovery_code(PASSWORD)
    assert new != old
    with pytest.raises(ApiError):
        make_client().recover(name, old, NEW)
    make_client().recover(name, new, NEW)


def test_sessions_revoke_one_and_all_others(make_client: Callable[[], ChatClient]) -> None:
    name = unique_name()
    clients = [make_client() for _ in range(3)]
    clients[0].register(name, PASSWORD)
    for c in clients:
        c.login(name, PASSWORD)
    listed = clients[0].sessions()
    assert len(listed) == 3 and [s["current"] for s in listed].count(True) == 1
    assert {"id", "created_at", "last_seen", "current", "label", "address"} <= set(listed[0])
    mine = next(s for s in clients[1].sessions() if s["current"])
    clients[0].revoke_session(mine["id"])
    with pytest.raises(ApiError):
        clients[1].conversations()
    clients[0].revoke_other_sessions()
    with pytest.raises(ApiError):
        clients[2].conversations()
    assert [s["current"] for s in clients[0].sessions()] == [True]
    with pytest.raises(ApiError) as gone:
        clients[0].revoke_session(mine["id"])
    assert gone.value.status == 404


def test_events_page_and_settings(alice: ChatClient) -> None:
    for _ in range(3):
        alice.login("alice", PASSWORD)
    first = alice.events(limit=2)
    assert [e["type"] for e in first["events"]] == ["login", "login"]
    rest = alice.events(limit=50, before=first["next_before"])
    assert rest["next_before"] is None
    assert [e["type"] for e in rest["events"]][-1] == "login"
    assert alice.settings() == {"retention_days": None}
    assert alice.update_settings(retention_days=30) == {"retention_days": 30}
    assert alice.events(limit=1)["events"][0]["type"] == "settings_changed"


def test_delete_account_logs_out_and_frees_the_name(
        make_client: Callable[[], ChatClient]) -> None:
    name = unique_name()
    c = make_client()
    c.register(name, PASSWORD)
    c.login(name, PASSWORD)
    with pytest.raises(ApiError) as wrong:
        c.delete_account("not the password")
    assert wrong.value.code == "invalid_credentials"
    # A refused deletion leaves the session as it was.
    assert c.session()["username"] == name
    c.delete_account(PASSWORD)
    assert c.csrf_token is None and c.username is None
    with pytest.raises(ApiError):
        make_client().login(name, PASSWORD)
    make_client().register(name, PASSWORD)
