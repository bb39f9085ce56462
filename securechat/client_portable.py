"""ChatClient's portable methods: export, import, search, and replies stored nowhere (ghost)."""

from __future__ import annotations

import base64
import json as jsonlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from . import protocol
from .client_http import ClientBase, ReplyStream, _decoded
from .errors import TransportError
from .protocol import CSRF_HEADER


class PortableMethods(ClientBase):
    """Your history, portable: what :class:`securechat.ChatClient` takes out, brings in, finds."""

    def ghost(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """A reply to a history kept here, stored nowhere: ``{"reply": ...}``."""
        return self.request("POST", "/api/ghost", json={"messages": messages})

    def ghost_stream(self, messages: list[dict[str, str]]) -> ReplyStream:
        """A reply to a history kept here, stored nowhere, streamed as it is generated."""
        return self._stream("/api/ghost", {"messages": messages})

    def iter_export(self, format: str = "json") -> Iterator[bytes]:
        """The whole history (``json`` or ``markdown``), as bytes while they arrive.

        Plaintext: whoever reads what this yields reads every conversation. A stream cut
        short raises :class:`TransportError` (``stream_broken``) at its end.
        """
        return self._download("GET", "/api/export", params={"format": format},
                              ending=_EXPORT_ENDINGS[format] if format in _EXPORT_ENDINGS
                              else b"")

    def export(self, path: str | os.PathLike[str], format: str = "json") -> Path:
        """Write the whole history (``json`` or ``markdown``) to ``path``; return it.

        Written to ``<path>.part`` first (owner-only) and renamed once whole, so a failed
        export leaves no file that looks complete. The file is plaintext: keep it safe.
        """
        return _write_atomically(Path(path), self.iter_export(format))

    def export_archive(self, path: str | os.PathLike[str], passphrase: str) -> Path:
        """Write the history sealed under ``passphrase`` (the encrypted archive) to ``path``."""
        chunks = self._download("POST", "/api/export/archive",
                                json={"passphrase": passphrase}, ending=b"")
        return _write_atomically(Path(path), chunks)

    def import_export(self, source: str | os.PathLike[str] | bytes | dict[str, Any],
                      passphrase: str | None = None) -> dict[str, int]:
        """Import an export (a file, its bytes or its JSON) or, with ``passphrase``, an archive.

        Returns ``{"imported": conversations, "messages": messages}``; the conversations
        are new ones of this account.
        """
        if isinstance(source, dict):
            data = jsonlib.dumps(source).encode("utf-8")
        elif isinstance(source, bytes):
            data = source
        else:
            data = Path(source).read_bytes()
        if passphrase is not None:
            data = jsonlib.dumps({"archive": base64.b64encode(data).decode("ascii"),
                                  "passphrase": passphrase}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.csrf_token:
            headers[CSRF_HEADER] = self.csrf_token
        return dict(_decoded(self._http("POST", "/api/import", data=data, headers=headers)))

    def search(self, q: str, limit: int = 20, before: str | None = None) -> dict[str, Any]:
        """One page of titles and messages holding ``q``: ``{"results", "next_before"}``."""
        body: dict[str, Any] = {"q": q, "limit": limit}
        if before is not None:
            body["before"] = before
        return self.request("POST", "/api/search", json=body)

    def _download(self, method: str, path: str, ending: bytes,
                  **kwargs: Any) -> Iterator[bytes]:
        """A streamed download's bytes; errors before it starts raise here, at once."""
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        response = self._http(method, path, headers=headers, stream=True, **kwargs)
        if not response.ok:
            with response:
                _decoded(response)
        return _body(response, ending)


# How a whole export ends; a stream that ends otherwise was cut.
_EXPORT_ENDINGS = {"json": b"]}\n", "markdown": b" messages -->\n"}


def _body(response: requests.Response, ending: bytes) -> Iterator[bytes]:
    """The bytes of a streamed download; TransportError if it breaks or ends early."""
    tail = b""
    try:
        with response:
            for chunk in protocol.iter_body(response):
                tail = (tail + chunk)[-64:]
                yield chunk
    except requests.Timeout as e:
        raise TransportError("timeout", "The server stopped sending the export.") from e
    except requests.RequestException as e:
        raise TransportError("stream_broken", "The connection broke mid-export.") from e
    if not tail.endswith(ending):
        raise TransportError("stream_broken", "The export ended before it was whole.")


def _write_atomically(path: Path, chunks: Iterator[bytes]) -> Path:
    """Write ``chunks`` to ``path`` (mode 0600) through ``<path>.part``; nothing on failure."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path
