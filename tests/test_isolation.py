"""Another user of the same server sees nothing of yours; moved ciphertext fails to open."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from .helpers import AuthActions, assert_error, open_database

# The contract holds on either database.
pytestmark = pytest.mark.every_store


@pytest.fixture
def alice(auth: AuthActions) -> AuthActions:
    """Alice, logged in on the test client (this module needs no live server)."""
    auth.signup("alice")
    return auth


@pytest.fixture
def bob(make_auth: Callable[[], AuthActions]) -> AuthActions:
    """Bob, logged in on a test client of his own."""
    bob = make_auth()
    bob.signup("bob")
    return bob


@pytest.fixture
def alice_conv(alice: AuthActions) -> str:
    conv = alice.new_conversation("alice private title")
    assert alice.send(conv["id"], "alice private message").status_code == 201
    return conv["id"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/api/conversations/{id}/messages", None),
        ("POST", "/api/conversations/{id}/messages", {"content": "intrusion"}),
        ("DELETE", "/api/conversations/{id}", None),
    ],
)
def test_other_users_conversation_is_404_for_every_verb(
    alice: AuthActions, bob: AuthActions, alice_conv: str, method: str, path: str, body: object
) -> None:
    response = bob.http.open(path.format(id=alice_conv), method=method, json=body,
                             headers=bob.csrf)
    assert_error(response, 404, "not_found")
    # Same answer as for an id that does not exist at all.
    missing = bob.http.open(path.format(id="0" * 32), method=method, json=body,
                            headers=bob.csrf)
    assert missing.get_json() == response.get_json()
    # And alice's conversation is untouched.
    assert alice.history(alice_conv) == [
        "alice private message",
        "Echo: alice private message",
    ]


def test_conversation_lists_are_per_user(
    alice: AuthActions, bob: AuthActions, alice_conv: str
) -> None:
    bob.new_conversation("bob's")
    assert [c["title"] for c in bob.conversations()] == ["bob's"]
    assert [c["id"] for c in alice.conversations()] == [alice_conv]


def test_ciphertext_copied_to_another_user_does_not_open(
    app: Flask, alice: AuthActions, bob: AuthActions, alice_conv: str
) -> None:
    bob_conv = bob.new_conversation("bob")
    assert bob.send(bob_conv["id"], "bob message").status_code == 201
    with open_database(app) as db:
        stolen = db.execute(
            "SELECT content FROM messages WHERE conversation_id = ? AND position = 0", (alice_conv,)
        ).fetchone()[0]
        db.execute(
            "UPDATE messages SET content = ? WHERE conversation_id = ? AND position = 0",
            (stolen, bob_conv["id"]),
        )
    response = bob.http.get(f"/api/conversations/{bob_conv['id']}/messages")
    assert_error(response, 500, "integrity_error")
    assert "alice private message" not in response.text


def test_ciphertext_moved_within_a_conversation_does_not_open(
    app: Flask, alice: AuthActions, alice_conv: str
) -> None:
    # Swap the user's message and the reply: positions and roles are in the AD.
    with open_database(app) as db:
        rows = dict(
            db.execute(
                "SELECT position, content FROM messages WHERE conversation_id = ?", (alice_conv,)
            ).fetchall()
        )
        db.execute(
            "UPDATE messages SET content = ? WHERE conversation_id = ? AND position = 0",
            (rows[1], alice_conv),
        )
    assert_error(
        alice.http.get(f"/api/conversations/{alice_conv}/messages"), 500, "integrity_error"
    )


def test_title_moved_to_another_conversation_does_not_open(
    app: Flask, alice: AuthActions, alice_conv: str
) -> None:
    other = alice.new_conversation("other")
    with open_database(app) as db:
        title = db.execute(
            "SELECT title FROM conversations WHERE id = ?", (alice_conv,)
        ).fetchone()[0]
        db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, other["id"]))
    assert_error(alice.http.get("/api/conversations"), 500, "integrity_error")
