"""securechat.lab.show_source: the real code, by a relative path, with line numbers."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import securechat
from securechat import crypto
from securechat.lab import Source, show_source
from securechat.server import auth, sessions
from securechat.widgets import ChatBox

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "securechat"


def test_a_function_is_its_real_source_with_its_file_and_lines() -> None:
    source = show_source(crypto.seal)
    lines, first = inspect.getsourcelines(crypto.seal)
    assert source.path == "securechat/crypto.py"
    assert source.first_line == first and source.last_line == first + len(lines) - 1
    assert source.text == "".join(lines)
    file_lines = (PACKAGE / "crypto.py").read_text().splitlines()
    assert file_lines[source.first_line - 1].startswith("def seal(")
    # The plain-text form (what nbval compares): the header, then each line numbered.
    plain = repr(source).splitlines()
    assert plain[0] == f"securechat/crypto.py, lines {source.first_line}-{source.last_line}"
    assert plain[1].split(None, 1) == [str(first), "def seal(key: bytes, plaintext: bytes, "
                                       "associated_data: bytes) -> bytes:"]
    assert "/work" not in repr(source) and str(ROOT) not in source._repr_html_()


def test_html_is_highlighted_and_escaped() -> None:
    markup = show_source(crypto.open_)._repr_html_()
    assert "securechat/crypto.py, lines" in markup
    assert 'style="color:' in markup  # Pygments' inline colours
    assert "-&gt;" in markup and "->" not in markup  # the code's own "<", ">" are escaped


def test_methods_classes_properties_and_decorated_views() -> None:
    assert show_source(ChatBox.send).path == "securechat/widgets/chatbox.py"
    assert show_source(ChatBox).lines[0].startswith("class ChatBox")
    assert show_source(Source.header).lines[0].strip() == "@property"
    # A blueprint route keeps its decorator; the view itself is not a copy.
    route = show_source(auth.register)
    assert route.lines[0] == '@bp.post("/register")'


def test_a_marker_narrows_to_the_block_it_opens() -> None:
    login = show_source(auth, start="def login(")
    assert login.lines[0] == '@bp.post("/login")'  # with its decorator
    assert login.lines[1].startswith("def login(") and login.lines[-1] == "    return response"
    one = show_source(auth.register, start="kdf, salt, wrapped =")
    wrap = "    kdf, salt, wrapped = keys.wrap_password(user_id, password, data_key)"
    assert one.lines == (wrap,)
    assert one.first_line == show_source(auth.register).first_line + \
        show_source(auth.register).lines.index(one.lines[0])


def test_a_statement_continued_on_the_next_lines_is_kept_whole() -> None:
    call = show_source(sessions, start="response.set_cookie(")
    assert call.lines[-1].strip().endswith("secure=bool(cfg[\"HTTPS\"]))")
    assert len(call.lines) == 2


def test_start_and_end_markers() -> None:
    path = "securechat/store/migrations/0001_initial.sql"
    schema = show_source(path, start="CREATE TABLE sessions", end=");")
    assert schema.lines[0] == "CREATE TABLE sessions (" and schema.lines[-1] == ");"
    assert "wrapped_key BLOB NOT NULL," in schema.text
    assert schema.text == "".join((ROOT / path).read_text().splitlines(keepends=True)[
        schema.first_line - 1:schema.last_line])


def test_a_file_by_path_and_a_javascript_function_by_name() -> None:
    js = show_source("securechat/server/static/app.js", start="function messageItem(")
    assert js.path == "securechat/server/static/app.js"
    assert js.lines[0].strip().startswith("function messageItem(")
    assert js.lines[-1].strip() == "}" and "textContent" in js.text
    header = f"securechat/server/static/app.js, lines {js.first_line}-{js.last_line}"
    assert header in js._repr_html_()


@pytest.mark.parametrize("marker", [{"start": "function noSuchThing("}, {"end": "no such end"}])
def test_a_missing_marker_is_an_error_not_other_code(marker: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not found in securechat/server/static/app.js"):
        show_source("securechat/server/static/app.js", **marker)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", "securechat/missing.py"])
def test_only_files_of_the_repository(path: str) -> None:
    with pytest.raises(ValueError, match="not a file of the repository"):
        show_source(path)


def test_plain_text_without_pygments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pygments", None)  # import fails
    markup = show_source(crypto.seal)._repr_html_()
    assert markup.startswith("<pre>securechat/crypto.py, lines") and "-&gt; bytes" in markup


# --- the product never imports the teaching props ----------------------------------

def _product_modules() -> list[str]:
    names = []
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(ROOT).with_suffix("").parts
        if "lab" in parts:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_product_never_imports_securechat_lab() -> None:
    modules = _product_modules()
    assert {"securechat", "securechat.server", "securechat.widgets", "securechat.store",
            "securechat.backends", "securechat.background"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "import securechat\n"
            "securechat.ChatBox\n"  # the lazily imported widget too
            "print(sorted(m for m in sys.modules if m.startswith('securechat.lab')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_the_check_would_see_an_import_of_securechat_lab() -> None:
    # The same probe after importing the props: it does report them.
    code = ("import sys, securechat.lab\n"
            "print(sorted(m for m in sys.modules if m.startswith('securechat.lab')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, cwd=ROOT)
    assert "securechat.lab.source" in done.stdout
    assert securechat.__file__  # the package under test is the repository's
