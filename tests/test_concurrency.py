"""Several clients sending at once lose no message and keep each sender's order."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from securechat import ChatClient

from .helpers import PASSWORD

# The contract holds on either database.
pytestmark = pytest.mark.every_store

SENDERS, EACH = 6, 15


@pytest.fixture
def settings(settings: dict[str, Any]) -> dict[str, Any]:
    """One user on six devices, all sending at once: above the default per-user cap."""
    return {**settings, "MAX_STREAMS_PER_USER": SENDERS}


def test_concurrent_senders_one_conversation(make_client: Callable[[], ChatClient]) -> None:
    owner = make_client()
    owner.register("olga", PASSWORD)
    owner.login("olga", PASSWORD)
    conv = owner.new_conversation("busy")
    devices = []
    for _ in range(SENDERS):
        device = make_client()
        device.login("olga", PASSWORD)  # each its own session, like several tabs
        devices.append(device)

    def run(index: int) -> list[str]:
        sent = []
        for i in range(EACH):
            text = f"s{index}-m{i}"
            devices[index].send(conv["id"], text)
            sent.append(text)
        return sent

    with ThreadPoolExecutor(SENDERS) as pool:
        results = list(pool.map(run, range(SENDERS)))

    history = owner.history(conv["id"], page_size=37)
    contents = [m["content"] for m in history]
    assert len(contents) == 2 * SENDERS * EACH
    assert len({m["id"] for m in history}) == len(history)
    for sent in results:
        mine = [c for c in contents if c in sent]
        assert mine == sent  # nothing lost, in the order this sender sent them
        for text in sent:  # and each reply comes after its message
            assert contents.index("Echo: " + text) > contents.index(text)


def test_concurrent_users_stay_separate(make_client: Callable[[], ChatClient]) -> None:
    def run(index: int) -> tuple[str, list[str]]:
        c = make_client()
        name = f"par{index}"
        c.register(name, PASSWORD)
        c.login(name, PASSWORD)
        conv = c.new_conversation(name)
        for i in range(EACH):
            c.send(conv["id"], f"{name}-{i}")
        return name, [m["content"] for m in c.history(conv["id"])]

    with ThreadPoolExecutor(SENDERS) as pool:
        for name, contents in pool.map(run, range(SENDERS)):
            assert contents == [
                x for i in range(EACH) for x in (f"{name}-{i}", f"Echo: {name}-{i}")
            ]
