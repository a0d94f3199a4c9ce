"""check_store: each way a tracking store can be unusable gives one paragraph naming tracking.uri (password
masked), what is wrong and what to do; usable stores pass."""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from harness.tracking import StoreError, check_store, ensure_experiment
from harness.tracking.store_check import _migrations


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def paragraph(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith("tracking.uri=")
    return text


def sqlite_db(path, *statements: str) -> str:
    with sqlite3.connect(path) as db:
        for sql in statements:
            db.execute(sql)
    db.close()
    return f"sqlite:///{path}"


def test_usable_sqlite_stores_pass(tmp_path):
    check_store(f"sqlite:///{tmp_path / 'new.db'}")  # not there yet: MLflow creates it
    (tmp_path / "empty.db").touch()
    check_store(f"sqlite:///{tmp_path / 'empty.db'}")  # an empty file is an empty database
    check_store("sqlite:///:memory:")
    real = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(real, "harness")  # a store MLflow made: its schema is this MLflow's head
    check_store(real)


def test_a_missing_directory(tmp_path):
    with pytest.raises(StoreError) as err:
        check_store(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")
    assert f"the directory {tmp_path / 'nope'} does not exist" in paragraph(err)


def test_an_unwritable_directory(tmp_path):
    """A read-only directory; root writes anywhere it may, so as root one the kernel refuses (/proc/sys)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root
        folder = Path("/proc/sys")
    if os.access(folder, os.W_OK):
        pytest.skip("no directory here is read-only for this user")
    with pytest.raises(StoreError) as err:
        check_store(f"sqlite:///{folder}/mlflow.db")
    assert f"the directory {folder} is not writable" in paragraph(err)


def test_a_file_that_is_not_a_database(tmp_path):
    (tmp_path / "notes.db").write_text("hello, I am a text file\n")
    with pytest.raises(StoreError) as err:
        check_store(f"sqlite:///{tmp_path / 'notes.db'}")
    assert "is not a SQLite database" in paragraph(err)


def test_a_database_that_is_not_an_mlflow_store(tmp_path):
    uri = sqlite_db(tmp_path / "shop.db", "CREATE TABLE customers (id INTEGER)", "CREATE TABLE orders (id INTEGER)")
    with pytest.raises(StoreError) as err:
        check_store(uri)
    assert "is a SQLite database but not an MLflow store (its tables: customers, orders)" in paragraph(err)


def test_a_schema_from_a_newer_mlflow(tmp_path):
    uri = sqlite_db(tmp_path / "future.db", "CREATE TABLE alembic_version (version_num VARCHAR(32))",
                    "INSERT INTO alembic_version VALUES ('ffffeeee0000')")  # fmt: skip
    with pytest.raises(StoreError) as err:
        check_store(uri)
    assert "alembic revision ffffeeee0000" in paragraph(err) and "Use the MLflow that made the store" in str(err.value)


def test_an_older_schema_says_how_to_upgrade(tmp_path):
    known, head = _migrations()
    old = sorted(known - {head})[0]
    uri = sqlite_db(tmp_path / "old.db", "CREATE TABLE alembic_version (version_num VARCHAR(32))",
                    f"INSERT INTO alembic_version VALUES ('{old}')")  # fmt: skip
    with pytest.raises(StoreError) as err:
        check_store(uri)
    assert "is older than this MLflow's" in paragraph(err) and f"mlflow db upgrade {uri}" in str(err.value)


def test_the_migrations_are_read_right():
    """The head found by reading the scripts is alembic's own (MLflow's _get_latest_schema_revision)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    known, head = _migrations()
    assert head == _get_latest_schema_revision() and head in known and len(known) > 50


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "http"])
def test_nothing_answers(scheme):
    if scheme.startswith("postgresql"):  # without the driver the check stops earlier, on the missing driver
        pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
    port = closed_port()
    uri = f"{scheme}://harness:secret@127.0.0.1:{port}/mlflow"
    with pytest.raises(StoreError) as err:
        check_store(uri)
    text = paragraph(err)
    assert f"nothing answers at 127.0.0.1:{port}" in text and "secret" not in text and "harness:***@" in text


def test_postgres_without_its_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(StoreError) as err:
        check_store("postgresql://harness:secret@127.0.0.1:5432/mlflow")
    text = paragraph(err)
    assert 'pip install "harness[postgres]"' in text and "secret" not in text
