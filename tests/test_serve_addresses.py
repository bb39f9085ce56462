"""`serve --host NAME` where NAME has several addresses refuses cleanly (found by mypy).

waitress opens one listening server per address of a host name (``localhost`` on a
dual-stack machine has two). securechat's connection caps and JSON error pages are set on
a single server's channel class, so that case used to crash with an AttributeError after
binding; it now refuses to start with one line, like every other unsafe setting.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from securechat.__main__ import serve
from securechat.errors import ConfigError
from securechat.server.production import make_server

TWO_ADDRESSES = "two-addresses.test"


@pytest.fixture
def two_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name that resolves to 127.0.0.1 and 127.0.0.2 (both loopback)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == TWO_ADDRESSES:
            return real("127.0.0.1", *args, **kwargs) + real("127.0.0.2", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_make_server_refuses_a_host_with_several_addresses(two_addresses: None,
                                                           app: Flask) -> None:
    with pytest.raises(ConfigError, match="several addresses") as info:
        make_server(app, TWO_ADDRESSES, 0, threads=32)
    addresses = re.findall(r"127\.0\.0\.[12]:\d+", str(info.value))
    assert len(addresses) == 2
    # The sockets it had bound are closed again: nothing is left listening.
    assert all(_refused(address) for address in addresses)


def test_make_server_with_one_address_serves(app: Flask) -> None:
    server = make_server(app, "127.0.0.1", 0, threads=32)
    try:
        host, port = server.getsockname()
        assert host == "127.0.0.1" and int(port) > 0
    finally:
        server.close()


def test_serve_says_so_in_one_line(two_addresses: None, instance: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # serve() forbids core dumps for its process: not for the test runner's.
    monkeypatch.setattr("securechat.server.production.no_core_dumps", lambda: None)
    assert serve(TWO_ADDRESSES, 0, str(instance), threads=32) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"securechat: refusing to start: --host {TWO_ADDRESSES} resolves to "
                          "several addresses")
    assert "Traceback" not in err
