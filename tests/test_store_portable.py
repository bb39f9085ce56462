"""One set of queries and one migration numbering for SQLite and PostgreSQL: the rules that
keep them portable, checked without a PostgreSQL server."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

from securechat import create_app, store
from securechat.errors import ConfigError
from securechat.store import postgres

from .helpers import FAST

# The module (store.migrate is the function the package exports).
migrate = importlib.import_module("securechat.store.migrate")
STORE = Path(store.__file__).parent
# The modules whose SQL runs on either database; the rest are one store's own (PRAGMA, BEGIN).
ONE_STORE_ONLY = {"__init__", "connection", "postgres", "migrate", "scrub", "writers"}
QUERIES = sorted(p for p in STORE.glob("*.py") if p.stem not in ONE_STORE_ONLY)

# What SQLite accepts and PostgreSQL refuses or reads otherwise (store/database.py's docstring).
SQLITE_ONLY = [
    r"\bPRAGMA\b", r"\bRETURNING\b", r"\bINSERT\s+OR\b", r"\bREPLACE\s+INTO\b", r"\browid\b",
    r"\bifnull\s*\(", r"\bgroup_concat\s*\(", r"\bjulianday\s*\(", r"\bstrftime\s*\(",
    r"\bdatetime\s*\(", r"\bprintf\s*\(", r"\binstr\s*\(", r"\blast_insert_rowid\s*\(",
    r"\bchanges\s*\(", r"\bIS\s+\?", r"\bBEGIN\b", r"\bGLOB\b",
]


def sql_strings(path: Path) -> list[str]:
    """Every string constant in a module that looks like SQL (docstrings aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    keyword = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|FROM|VALUES|SET)\b")
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and keyword.search(node.value)]


def portability_problems(sql: str) -> list[str]:
    found = [p for p in SQLITE_ONLY if re.search(p, sql, re.IGNORECASE)]
    # A '?' or '%' inside a string literal would be taken for a placeholder.
    found += [f"literal {lit}" for lit in re.findall(r"'[^']*'", sql) if "?" in lit or "%" in lit]
    if re.search(r":[a-z_]+\b|\$\d", sql):
        found.append("named or numbered placeholder")
    return found


def test_the_queries_are_found() -> None:
    assert {p.stem for p in QUERIES} == {"accounts", "conversations", "database", "events",
                                         "portable", "users"}
    found = {p.stem: sql_strings(p) for p in QUERIES}
    assert all(found[stem] for stem in {"accounts", "conversations", "events", "portable",
                                        "users"}), "a query module without SQL was not read"
    assert any("INSERT INTO messages" in s for s in found["conversations"])
    assert any("INSERT INTO users" in s for s in found["users"])
    assert sum(map(len, found.values())) >= 40


@pytest.mark.parametrize("module", QUERIES, ids=lambda p: p.name)
def test_every_query_keeps_to_the_portable_rules(module: Path) -> None:
    problems = {sql[:60]: portability_problems(sql) for sql in sql_strings(module)}
    assert {sql: p for sql, p in problems.items() if p} == {}


@pytest.mark.parametrize("sql", [
    "PRAGMA user_version", "INSERT INTO t (a) VALUES (?) RETURNING id",
    "INSERT OR IGNORE INTO t VALUES (?)", "SELECT ifnull(a, 0) FROM t",
    "SELECT group_concat(a) FROM t", "SELECT a FROM t WHERE b IS ?",
    "SELECT a FROM t WHERE b LIKE 'x%'", "SELECT a FROM t WHERE b = :name",
    "SELECT rowid FROM t", "SELECT strftime('%s', 'now') FROM t",
])
def test_the_check_catches_sqlite_only_sql(sql: str) -> None:
    assert portability_problems(sql)


@pytest.mark.parametrize("module", QUERIES, ids=lambda p: p.name)
def test_queries_import_no_database_driver(module: Path) -> None:
    # A driver's own exception (sqlite3.IntegrityError) would tie a query to one store:
    # the connection names it (db.IntegrityError) on both.
    tree = ast.parse(module.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"sqlite3", "psycopg", "psycopg_pool"}


# --- placeholders, in one place -----------------------------------------------------------


@pytest.mark.parametrize("sql,expected", [
    ("SELECT a FROM t WHERE b = ? AND c < ?", "SELECT a FROM t WHERE b = %s AND c < %s"),
    ("SELECT a % 2 FROM t WHERE b = ?", "SELECT a %% 2 FROM t WHERE b = %s"),
    ("SELECT 1", "SELECT 1"),
])
def test_placeholders_are_translated(sql: str, expected: str) -> None:
    assert postgres.translate(sql) == expected


@pytest.mark.parametrize("url,shown", [
    ("postgresql://app:s3cret@db.example:5432/chat", "postgresql://app:***@db.example:5432/chat"),
    ("postgresql://app@db/chat?password=s3cret&sslmode=require",
     "postgresql://app@db/chat?password=***&sslmode=require"),
    ("postgres://db/chat", "postgres://db/chat"),
])
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert postgres.shown(url) == shown and "s3cret" not in postgres.shown(url)


@pytest.mark.parametrize("database,is_url", [
    ("postgresql://u@h/db", True), ("postgres://h/db", True), ("/srv/chat.sqlite3", False),
    (":memory:", False), ("postgresql.sqlite3", False),
])
def test_which_store_a_setting_names(database: str, is_url: bool) -> None:
    assert postgres.is_url(database) is is_url


# --- migrations: one numbering, a PostgreSQL variant where the DDL differs --------------------


MIGRATIONS = Path(migrate.__file__).parent / "migrations"


def test_both_dialects_have_every_version() -> None:
    assert len(migrate.scripts("sqlite")) == len(migrate.scripts("postgres")) == \
        migrate.SCHEMA_VERSION


def test_a_variant_has_the_name_of_the_migration_it_replaces() -> None:
    common = {p.name for p in MIGRATIONS.glob("*.sql")}
    variants = {p.name for p in (MIGRATIONS / "postgres").glob("*.sql")}
    assert variants and variants <= common


def test_a_variant_for_an_unknown_migration_is_refused(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(MIGRATIONS, copy / "migrations")
    (copy / "migrations" / "postgres" / "0099_stray.sql").write_text("SELECT 1;")
    monkeypatch.setattr(migrate.resources, "files", lambda _package: copy)
    with pytest.raises(RuntimeError, match="0099_stray"):
        migrate.scripts("postgres")
    assert len(migrate.scripts("sqlite")) == migrate.SCHEMA_VERSION  # SQLite reads no variant


# SQLite's words for types PostgreSQL lacks, and PostgreSQL's that SQLite would misread.
SQLITE_TYPES = re.compile(r"\b(BLOB|REAL|AUTOINCREMENT|PRAGMA|WITHOUT\s+ROWID|DATETIME)\b",
                          re.IGNORECASE)
POSTGRES_TYPES = re.compile(r"\b(BYTEA|DOUBLE\s+PRECISION|SERIAL|BIGSERIAL|JSONB|TIMESTAMPTZ)\b"
                            r"|\$\$", re.IGNORECASE)


def _code(script: str) -> str:
    return "\n".join(line.split("--")[0] for line in script.splitlines())


@pytest.mark.parametrize("version", range(1, migrate.SCHEMA_VERSION + 1))
def test_each_dialect_gets_ddl_it_understands(version: int) -> None:
    """A new BLOB or REAL column needs a migrations/postgres/ variant: this says so."""
    sqlite, pg = migrate.scripts("sqlite")[version - 1], migrate.scripts("postgres")[version - 1]
    assert not POSTGRES_TYPES.search(_code(sqlite)), f"version {version}: PostgreSQL DDL"
    assert not SQLITE_TYPES.search(_code(pg)), \
        f"version {version}: add migrations/postgres/ with bytea / double precision"
    # Text sorts byte by byte on both, as SQLite sorts it: pages and cursors agree.
    for column in re.findall(r"\bTEXT\b[^,\n]*", _code(pg), re.IGNORECASE):
        assert 'COLLATE "C"' in column, f"version {version}: {column.strip()} needs COLLATE \"C\""


# --- what a PostgreSQL setting needs, and what does not apply to it ---------------------------


def test_a_postgresql_url_without_psycopg_is_a_clear_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'securechat\[postgres\]'"):
        create_app({**FAST, "DATABASE": "postgresql://app:s3cret@127.0.0.1:1/chat"},
                   instance_path=tmp_path / "instance")


def test_scrub_does_nothing_without_a_wal_file() -> None:
    class NotSqlite:
        def execute(self, *args: object) -> None:
            raise AssertionError("scrub ran a statement on a PostgreSQL handle")

    store.scrub.now(NotSqlite())  # no app context needed either: it returns at once
