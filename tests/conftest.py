"""Shared fixtures: compose the real config (shrunk by the test) and a temporary MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from harness.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def compose_cfg():
    """compose_cfg(*overrides) -> the composed DictConfig (no hydra node)."""
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking URI in tmp_path; MLFLOW_TRACKING_URI unset so nothing leaks in."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def harness_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONWARNINGS"] = "ignore"
    return env


POSTGRES_ENV = "HARNESS_TEST_POSTGRES_URI"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the whole session, as a ``postgresql://user:password@host:port/db`` URI whose role
    may create databases: ``$HARNESS_TEST_POSTGRES_URI`` (``.ci/run`` starts one), else a throwaway cluster
    started here when PostgreSQL's server programs are installed (``tests/servers.py``); else the test skips."""
    pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
    uri = os.environ.get(POSTGRES_ENV)
    if uri:
        yield uri
        return
    from servers import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip(
            f"no PostgreSQL server: set {POSTGRES_ENV}=postgresql://USER:PASSWORD@HOST:PORT/DB (a role with "
            "CREATEDB; .ci/run starts one), or install PostgreSQL (apt-get install -y postgresql) for a throwaway one"
        )
    server = PostgresServer().start()
    try:
        yield server.uri
    finally:
        server.stop()


def with_database(uri: str, database: str) -> str:
    """``uri`` with its database replaced by ``database`` (the password kept)."""
    from sqlalchemy.engine import make_url

    return make_url(uri).set(database=database).render_as_string(hide_password=False)


def libpq_uri(uri: str) -> str:
    """``uri`` as libpq (psycopg) reads it: without SQLAlchemy's ``+driver`` suffix."""
    from sqlalchemy.engine import make_url

    return make_url(uri).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_uri(postgres_server: str) -> Iterator[str]:
    """A FRESH, empty database (no MLflow schema yet) on the server of :func:`postgres_server`, made for this test
    alone and dropped after it (``WITH (FORCE)``: connections a killed worker left open must not keep it)."""
    import uuid

    import psycopg

    name = f"harness_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_uri(postgres_server), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_server, name)
    finally:
        with psycopg.connect(libpq_uri(postgres_server), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
