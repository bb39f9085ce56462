"""Concurrency caps: a few requests cannot hold every worker (backend calls, KDF runs, sessions).

Past a cap the answer comes at once: 429 for one user's own excess (nothing stored), 503 +
``Retry-After`` when the server is full (the message stored, "Try again" answers it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from securechat import ApiError, BackgroundServer, ChatClient
from securechat.backends import Turn
from securechat.server.capacity import PerKey, Slots

from .fake_backend import wait_for
from .helpers import PASSWORD


class Gate:
    """A responder whose replies wait until the gate opens; counts calls in progress."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.inside += 1
        try:
            self.open.wait(30)
        finally:
            with self._lock:
                self.inside -= 1

    def reply(self, history: list[Turn]) -> str:
        self._enter()
        return "Gated: " + history[-1]["content"]

    def stream(self, history: list[Turn]) -> Iterator[str]:
        self._enter()
        yield "Gated: " + history[-1]["content"]


@pytest.fixture
def settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {**settings, "MAX_STREAMS": 4, "MAX_STREAMS_PER_USER": 2}


@pytest.fixture
def gate(app: Flask) -> Iterator[Gate]:
    gate = Gate()
    app.extensions["securechat.responder"] = gate
    yield gate
    gate.open.set()


def _slots(app: Flask) -> tuple[int, int]:
    overall = app.extensions["securechat.backend_slots"]
    per_user = app.extensions["securechat.backend_per_user"]
    return overall.held, sum(per_user._held.values())


class Pending:
    """Sends in background threads (each waits at the gate); joined at the end."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.results: list[Any] = []

    def send(self, client: ChatClient, conv: str, text: str) -> None:
        def run() -> None:
            try:
                self.results.append(client.send(conv, text))
            except ApiError as e:
                self.results.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def _device(make_client: Callable[[], ChatClient], name: str) -> ChatClient:
    client = make_client()
    client.login(name, PASSWORD)
    return client


def test_one_user_gets_429_past_their_cap_and_nothing_is_stored(
        app: Flask, gate: Gate, make_user: Callable[..., ChatClient],
        make_client: Callable[[], ChatClient]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    conv = alice.new_conversation()["id"]
    pending = Pending()
    for i in range(2):
        pending.send(_device(make_client, "alice"), conv, f"waiting {i}")
    wait_for(lambda: gate.inside == 2)
    with pytest.raises(ApiError) as refused:
        alice.send(conv, "one too many")
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    # Another user is not held back by alice's calls.
    bob_conv = bob.new_conversation()["id"]
    pending.send(bob, bob_conv, "bob's turn")
    wait_for(lambda: gate.inside == 3)
    gate.open.set()
    pending.join()
    contents = [m["content"] for m in alice.history(conv)]
    assert "one too many" not in contents and len(contents) == 4
    assert _slots(app) == (0, 0)
    assert alice.send(conv, "after")["reply"]["content"] == "Gated: after"


def test_a_full_server_answers_503_at_once_keeping_the_message(
        app: Flask, gate: Gate, make_user: Callable[..., ChatClient]) -> None:
    users = [make_user(f"user{i}") for i in range(5)]
    convs = [u.new_conversation()["id"] for u in users]
    pending = Pending()
    for user, conv in zip(users[:4], convs[:4], strict=True):
        pending.send(user, conv, "holding a slot")
    wait_for(lambda: gate.inside == 4)
    late = requests.post(f"{users[4].base_url}/api/conversations/{convs[4]}/messages",
                         json={"content": "stored, not answered"}, timeout=10,
                         cookies=users[4].http.cookies,
                         headers={"X-CSRF-Token": users[4].csrf_token or ""})
    assert late.status_code == 503 and late.json()["error"]["code"] == "unavailable"
    assert late.headers["Retry-After"] == "5"
    gate.open.set()
    pending.join()
    assert [m["content"] for m in users[4].history(convs[4])] == ["stored, not answered"]
    assert users[4].retry(convs[4])["reply"]["content"] == "Gated: stored, not answered"
    assert _slots(app) == (0, 0)


def test_a_stream_holds_its_slot_until_closed_even_when_the_client_leaves(
        app: Flask, gate: Gate, server: BackgroundServer, alice: ChatClient) -> None:
    conv = alice.new_conversation()["id"]
    response = requests.post(f"{server.url}/api/conversations/{conv}/messages",
                             json={"content": "leaving early"}, stream=True, timeout=10,
                             cookies=alice.http.cookies,
                             headers={"X-CSRF-Token": alice.csrf_token or "",
                                      "Accept": "text/event-stream"})
    assert response.status_code == 200
    wait_for(lambda: gate.inside == 1)
    assert _slots(app) == (1, 1)
    response.close()  # the client goes away mid-reply ...
    time.sleep(0.3)
    assert _slots(app) == (1, 1)  # ... the reply is still being made: the slot stays taken
    gate.open.set()
    wait_for(lambda: _slots(app) == (0, 0))


def test_a_refused_start_frees_the_users_slot(app: Flask, gate: Gate,
                                              make_user: Callable[..., ChatClient]) -> None:
    app.extensions["securechat.backend_slots"] = Slots(0)  # the server is full
    alice = make_user("alice")
    conv = alice.new_conversation()["id"]
    for _ in range(3):  # more than her per-user cap: each refusal gave her slot back
        with pytest.raises(ApiError) as refused:
            alice.send(conv, "no room")
        assert refused.value.status == 503
    assert _slots(app) == (0, 0)


# --- password KDF runs ------------------------------------------------------------------


def test_kdf_waits_briefly_then_503(settings: dict[str, Any], instance: Any) -> None:
    from securechat import create_app

    app = create_app({**settings, "KDF_CONCURRENCY": 1, "KDF_MAX_WAIT": 0.05},
                     instance_path=instance)
    http = app.test_client()
    assert http.post("/api/register", json={"username": "alice", "password": PASSWORD}
                     ).status_code == 201
    slots: Slots = app.extensions["securechat.kdf_slots"]
    assert slots.acquire()  # a long KDF run elsewhere
    try:
        busy = http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    finally:
        slots.release()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert busy.get_json()["error"]["code"] == "unavailable"
    assert http.post("/api/login", json={"username": "alice", "password": PASSWORD}
                     ).status_code == 200


def test_slots_queue_is_bounded() -> None:
    slots = Slots(1, wait=30, queue=1)
    assert slots.acquire()
    waiter_got: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_got.append(slots.acquire()))
    waiter.start()
    wait_for(lambda: slots._waiting == 1)
    # The queue is full: a third caller is refused without waiting its 30 s.
    assert slots.acquire() is False
    assert waiter.is_alive()
    slots.release()
    waiter.join(10)
    assert waiter_got == [True] and slots.held == 1
    slots.release()


def test_per_key_forgets_idle_keys() -> None:
    caps = PerKey(2)
    held = [caps.acquire("a"), caps.acquire("a")]
    assert all(held) and caps.acquire("a") is None
    held.append(caps.acquire("b"))
    for lease in held:
        assert lease is not None
        lease.release()
        lease.release()  # a second release gives nothing back twice
    assert caps._held == {}


# --- live sessions per user ---------------------------------------------------------------


def test_sessions_per_user_are_capped_least_recent_first(
        settings: dict[str, Any], instance: Any) -> None:
    from securechat import create_app

    app = create_app({**settings, "MAX_SESSIONS_PER_USER": 3}, instance_path=instance)
    with BackgroundServer(app) as server:
        clients = [ChatClient(server.url) for _ in range(5)]
        clients[0].register("alice", PASSWORD)
        for client in clients:
            client.login("alice", PASSWORD)
        alive = []
        for client in clients:
            try:
                client.session()
                alive.append(True)
            except ApiError as e:
                assert e.code == "unauthorized"
                alive.append(False)
        for client in clients:
            client.close()
    assert alive == [False, False, True, True, True]


def test_a_failure_after_the_view_frees_a_streams_slot(app: Flask, gate: Gate,
                                                       server: BackgroundServer,
                                                       alice: ChatClient) -> None:
    # An after_request hook that raises (a limiter store down, say) replaces the streamed
    # response, which is then never closed: the teardown must free its slots.
    def broken(response: Any) -> Any:
        if response.mimetype == "text/event-stream":
            raise RuntimeError("a hook failed after the view")
        return response

    app.after_request_funcs.setdefault(None, []).insert(0, broken)
    conv = alice.new_conversation()["id"]
    gate.open.set()
    failed = requests.post(f"{server.url}/api/conversations/{conv}/messages", timeout=10,
                           json={"content": "x"}, cookies=alice.http.cookies,
                           headers={"X-CSRF-Token": alice.csrf_token or "",
                                    "Accept": "text/event-stream"})
    assert failed.status_code == 500
    wait_for(lambda: _slots(app) == (0, 0))
