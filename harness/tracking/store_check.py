"""Is the tracking store usable? One check before any run is created, one paragraph when it is not.

:func:`check_store` looks at ``tracking.uri`` the way MLflow will use it and raises :class:`StoreError`, whose
message is one paragraph naming the key, the URI (its password masked), what is wrong and what to do:

- a server (PostgreSQL, MySQL, an MLflow tracking server over HTTP) that nothing answers at ``host:port``;
- a SQL URI whose driver is not installed (PostgreSQL: ``pip install "harness[postgres]"``);
- a SQLite path in a directory that does not exist or is not writable, or a file that is not writable;
- a file that is not a SQLite database, or a database that is not an MLflow store;
- a store whose schema (alembic revision) this MLflow cannot use: older (``mlflow db upgrade``) or unknown.

Quick on the happy path (a few ms: no MLflow import, one socket or one file read): it runs before every job and
sweep. A SQLite path that does not exist yet is fine (MLflow creates it), and so is an empty database.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from harness.tracking.uri import redact_uri

KEY = "tracking.uri"
CONNECT_TIMEOUT = 3.0  # seconds for a TCP connect or an HTTP answer: a healthy local server answers in ms
SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = {"experiments", "runs"}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "http": 80, "https": 443}
DRIVER_HINTS = {
    "postgresql": 'pip install "harness[postgres]" (PostgreSQL\'s driver, psycopg 3)',
    "mysql": "pip install mysqlclient (or use mysql+pymysql:// with pip install pymysql)",
}


class StoreError(Exception):
    """The tracking store cannot be used; the message is one paragraph naming ``tracking.uri`` and the fix."""


def _fail(uri: str, what: str, todo: str) -> StoreError:
    return StoreError(f"{KEY}={redact_uri(uri)}: {what}. {todo}")


def check_store(uri: str) -> None:
    """Raise :class:`StoreError` if the store at ``uri`` (an absolute URI, as ``resolve_uri`` gives it) cannot be
    used: unreachable, unwritable, not an MLflow store, a schema this MLflow cannot use, or a missing driver.
    Other schemes (``file:``, ``databricks``, ...) are left to MLflow."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_http(uri, scheme)
    elif scheme in ("postgresql", "mysql", "mssql"):
        _check_sql_server(uri, scheme)


def _check_sqlite(uri: str) -> None:
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    file = Path(path)
    folder = file.parent
    if not folder.is_dir():
        raise _fail(uri, f"the directory {folder} does not exist", "Create it, or point tracking.uri elsewhere")
    if not file.exists():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _fail(uri, f"the directory {folder} is not writable, so the store cannot be created there",
                        "Point tracking.uri at a writable directory")  # fmt: skip
        return
    if file.is_dir():
        raise _fail(uri, f"{file} is a directory, not a SQLite file", "Point tracking.uri at a .db file")
    if not os.access(file, os.R_OK | os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(uri, f"{file} is not writable (SQLite also needs to write its journal next to it in {folder})",
                    "Fix the permissions, or point tracking.uri at a writable copy")  # fmt: skip
    with open(file, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise _fail(uri, f"{file} is not a SQLite database", "Point tracking.uri at an MLflow store or a new file")
    if not header:
        return  # an empty file is an empty database: MLflow creates its tables
    try:
        with sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = _revision(db.execute, tables)
        db.close()
    except sqlite3.DatabaseError as err:
        raise _fail(uri, f"{file} cannot be read as a SQLite database ({err})",
                    "Point tracking.uri at an MLflow store or a new file") from err  # fmt: skip
    if tables and revision is None and not MLFLOW_TABLES <= tables:
        raise _fail(uri, f"{file} is a SQLite database but not an MLflow store (its tables: "
                    f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''})",
                    "Point tracking.uri at an MLflow store or a new file")  # fmt: skip
    _check_revision(uri, revision)


def _revision(execute, tables: set[str]) -> str | None:
    """The store's alembic revision (None without an ``alembic_version`` table)."""
    if "alembic_version" not in tables:
        return None
    row = execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


@functools.cache
def _migrations() -> tuple[frozenset[str], str | None]:
    """Every alembic revision this MLflow knows, and its head (read from its migration scripts, without alembic:
    ≈ 5 ms instead of ≈ 0.3 s)."""
    spec = importlib.util.find_spec("mlflow")
    folder = Path(spec.origin).parent / "store" / "db_migrations" / "versions"  # type: ignore[union-attr, arg-type]
    revisions, parents = set(), set()
    for script in folder.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.MULTILINE)
        down = re.search(r"^down_revision\s*=\s*['\"](\w+)['\"]", text, re.MULTILINE)
        if rev:
            revisions.add(rev.group(1))
        if down:
            parents.add(down.group(1))
    heads = revisions - parents
    return frozenset(revisions), (next(iter(heads)) if len(heads) == 1 else None)


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def _check_revision(uri: str, revision: str | None) -> None:
    if revision is None:
        return
    known, head = _migrations()
    if revision not in known:
        raise _fail(uri, f"the store's schema (alembic revision {revision}) was made by another MLflow than this "
                    f"one ({_mlflow_version()}, which knows no such revision)",
                    "Use the MLflow that made the store, or point tracking.uri at another store")  # fmt: skip
    if head is not None and revision != head:
        raise _fail(uri, f"the store's schema (alembic revision {revision}) is older than this MLflow's "
                    f"({_mlflow_version()}: {head})",
                    f"Back it up, then run: mlflow db upgrade {redact_uri(uri)}")  # fmt: skip


def _host_port(uri: str, scheme: str) -> tuple[str | None, int]:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port or DEFAULT_PORTS[scheme]


def _reachable(uri: str, host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise _fail(uri, f"nothing answers at {host}:{port} ({reason})",
                    f"Start {what} there, or point tracking.uri at a running one") from err  # fmt: skip


def _check_http(uri: str, scheme: str) -> None:
    host, port = _host_port(uri, scheme)
    if not host:
        raise _fail(uri, "the URI names no host", "Write it as http://HOST:PORT")
    _reachable(uri, host, port, "the MLflow tracking server (mlflow server --host HOST --port PORT)")


def _check_sql_server(uri: str, scheme: str) -> None:
    """The driver, the port, then (PostgreSQL with psycopg) the login and the schema."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(uri)
        url.get_dialect().import_dbapi()
    except ImportError as err:
        hint = DRIVER_HINTS.get(scheme, "Install the database driver SQLAlchemy names")
        raise _fail(uri, f"the database driver is not installed ({err})", f"Install it: {hint}") from None
    except Exception as err:  # noqa: BLE001  (SQLAlchemy's own words for a URI it cannot read)
        raise _fail(uri, f"the URI cannot be read as a database URL ({err})",
                    "Write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None  # fmt: skip
    host = url.host or url.query.get("host")
    if isinstance(host, str) and host and not host.startswith("/"):  # a TCP host (not a Unix socket directory)
        _reachable(uri, host, url.port or DEFAULT_PORTS[scheme], "the database server")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        _check_postgres(uri, url)


def _check_postgres(uri: str, url) -> None:
    """Log in as MLflow will, and read the schema's revision (one connection, ≈ 10 ms)."""
    import psycopg

    params = {k: v for k, v in url.translate_connect_args(username="user", database="dbname").items() if v}
    params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    try:
        with psycopg.connect(connect_timeout=int(CONNECT_TIMEOUT), **params) as db:
            tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            revision = _revision(db.execute, tables)
    except psycopg.OperationalError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(uri, f"PostgreSQL refused the connection ({redact_uri(first)})",
                    "Check the user, password and database name in tracking.uri") from None  # fmt: skip
    _check_revision(uri, revision)
