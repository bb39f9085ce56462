"""Findings of the issue 13/14 security review: each test failed before its fix."""

from __future__ import annotations

import pytest

from .helpers import AuthActions, assert_error


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_import_time_out_of_range_is_a_400(auth: AuthActions, at: str) -> None:
    auth.signup()
    doc = {"format": "securechat-export", "version": 1, "conversations": [
        {"title": "t", "created_at": "2026-01-01T00:00:00Z", "starred": False,
         "messages": [{"role": "user", "content": "hi", "created_at": at}]}]}
    response = auth.http.post("/api/import", json=doc, headers=auth.csrf)
    assert_error(response, 400, "invalid_export")
    assert "conversations[0].messages[0].created_at" in response.get_json()["error"]["message"]
