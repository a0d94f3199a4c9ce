"""MLflow's internals, in one place: the fast SQL write path and the bulk history read.

MLflow's public API costs ≈ 75 µs per metric value on a SQL store (``log_batch`` adds one ORM object per value,
mlflow#3010) and builds one ``Metric`` object per value when reading histories back. This module writes and
reads MLflow's own tables directly instead, with its own validation and sanitation rules:

- :func:`create_runs`: the runs of a job's replicas, created in one transaction;
- :func:`write`: params, metric values, tags and a terminal status of one run in one transaction;
- :func:`history`: one row per (run, step) of many runs' histories, pivoted by the database.

It relies on MLflow's schema and store internals (``SqlAlchemyStore``, ``ManagedSessionMaker``, ``SqlMetric``,
...), every one of them listed and checked by :mod:`harness.tracking.guard`: ``mlflow`` is pinned ``<3.18`` in
pyproject.toml, and tests/test_tracking.py checks these functions against the public API value by value.
:func:`sql_store` returns None when any internal is missing or changed (one warning names it) or the store is not
a SQL store (HTTP), and callers then use the public API; ``tracking.fast_path=false`` does the same on purpose.
The classes and validators are used as the guard resolved them (``guard.internals()``).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.tracking import guard

HISTORY_CHUNK = 100  # run ids per history query (keeps the SQL IN (...) list short)


MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step: a buffered metric value


METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")  # of MLflow's ``metrics`` table
PRIMARY_KEY_ORDER = operator.itemgetter(0, 2, 3, 5)  # a row's (key, timestamp, step, run_uuid): the table's order
SQLITE_CACHE_KIB = 65536


def sql_store(mlflow_client: Any) -> Any | None:
    """MLflow's ``SqlAlchemyStore`` behind ``mlflow_client`` if the fast path can use it, else None (an HTTP
    ``RestStore``, a file store, or an MLflow whose internals changed: :func:`harness.tracking.guard.sql_store`
    checks every one this module uses, once per process, and warns once naming what changed)."""
    return guard.sql_store(mlflow_client)


def create_runs(store: Any, experiment_id: str, runs: Sequence[tuple[str, Mapping[str, str]]]) -> list[tuple[str, str]]:
    """Create one RUNNING run per ``(run_name, tags)`` in ``experiment_id``, in ONE transaction; returns each
    run's ``(run_id, artifact_uri)`` in order.

    What ``SqlAlchemyStore.create_run`` does, row for row (the same ``runs`` row: uuid4 hex id, source
    UNKNOWN, ``user_id`` from the ``mlflow.user`` tag else "unknown", as ``MlflowClient.create_run`` passes
    it; start time now; the artifact URI under the experiment's location; the tags plus ``mlflow.runName``),
    but for all runs at once: MLflow's version costs ≈ 100 ms a run on SQLite (a commit, a second read of
    the run and its inputs), 3 s of each 30-replica job. ``tests/test_tracking.py`` compares both field by field.
    """
    import uuid

    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER

    ix = guard.internals()
    SqlRun, SqlTag, append_to_uri_path = ix.SqlRun, ix.SqlTag, ix.append_to_uri_path  # noqa: N806
    start_time, created = int(time.time() * 1000), []
    with store.ManagedSessionMaker(read_only=False) as session:
        experiment = store.get_experiment(experiment_id)
        store._check_experiment_is_active(experiment)
        for run_name, tags in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, store.ARTIFACTS_FOLDER_NAME)
            run = SqlRun(
                name=run_name, artifact_uri=artifact_uri, run_uuid=run_id, experiment_id=experiment_id,
                source_type=SourceType.to_string(SourceType.UNKNOWN), source_name="", entry_point_name="",
                user_id=tags.get(MLFLOW_USER, "unknown"), status=RunStatus.to_string(RunStatus.RUNNING),
                start_time=start_time, end_time=None, deleted_time=None, source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE,
            )  # fmt: skip
            run.tags = [SqlTag(key=k, value=v) for k, v in {**tags, MLFLOW_RUN_NAME: run_name}.items()]
            session.add(run)
            created.append((run_id, artifact_uri))
    return created


def write(
    store: Any,
    run_id: str,
    metrics: list[MetricRow],
    tags: Mapping[str, str],
    status: str | None = None,
    params: Mapping[str, str] | None = None,
) -> None:
    """Write params, metric values and tags (and end the run with ``status``) on a SQL store in ONE
    transaction.

    Why: MLflow's ``SqlAlchemyStore.log_batch`` adds one ORM object per value to a session,
    and that unit of work costs ≈ 75 µs per value (measured, GC off), while the same rows as one Core
    ``executemany`` cost 4-10 µs; each ``log_batch`` also opens several sessions (one per kind of entity),
    and every transaction that writes pays a commit (2-15 ms on SQLite). So: params as ``_log_params``
    does them (a value may be logged again, not changed) but with one Core insert, one bulk insert into
    ``SqlMetric.__table__``, then MLflow's own ``_update_latest_metrics_if_necessary`` with one
    ``SqlMetric`` per key (the batch's latest by (step, timestamp, value), the first one on ties, as
    MLflow's loop keeps it), then the tags as ``SqlTag`` merges (what ``SqlAlchemyStore.set_tag`` does),
    then ``status`` and ``end_time`` on the run row (what ``set_terminated`` → ``update_run_info`` does).

    Same semantics as ``log_batch``: MLflow's validation (per distinct key; the values are floats and
    the steps ints by construction in ``Run.log_metrics``), its sanitation (NaN stored as is_nan/0, ±Inf
    as ±float max; only non-finite values need it), identical values within the batch written once, the
    run must exist and be active. A value already in the table raises (an ``MlflowException`` caused by
    an ``IntegrityError``): the caller then falls back to ``log_batch``, whose recovery skips such rows.

    Relies on MLflow's schema and store internals (``metrics`` / ``latest_metrics`` / ``tags`` tables,
    ``ManagedSessionMaker``, ``_get_run``): mlflow is pinned ``<3.18`` in pyproject.toml and
    tests/test_tracking.py checks the result against ``log_batch`` value by value.
    """
    write_many(store, [RunWrite(run_id, metrics, tags, status, params)])


@dataclass
class RunWrite:
    """What :func:`write` writes to one run."""

    run_id: str
    metrics: list[MetricRow]
    tags: Mapping[str, str]
    status: str | None = None
    params: Mapping[str, str] | None = None


def write_many(store: Any, writes: Sequence[RunWrite]) -> None:
    """:func:`write` for several runs (the replicas of a job) in ONE transaction: one commit (2-15 ms on
    SQLite) and one bulk insert of every run's metric values instead of one per run. All or nothing: a value
    already in the table rolls back every run's write (the caller then writes run by run)."""
    import sqlalchemy

    ix = guard.internals()
    prepared = [_prepare(store, w, ix) for w in writes]
    with store.ManagedSessionMaker(read_only=False) as session:
        runs = [store._get_run(session=session, run_uuid=w.run_id) for w in writes]
        for run in runs:
            store._check_run_is_active(run)
        rows = [row for p in prepared for row in p[0]]
        if rows:
            _insert_metrics(session, ix.SqlMetric.__table__, rows)
        for w, run, p in zip(writes, runs, prepared):
            _apply(session, store, ix, w, run, *p, sqlalchemy)


def _prepare(store: Any, w: RunWrite, ix: Any) -> tuple:
    """Validate and sanitise one run's write (outside the transaction): its metric rows, the latest value
    per key, its checked tags and params."""
    _validate_metric, _validate_param, _validate_tag = ix._validate_metric, ix._validate_param, ix._validate_tag
    run_id, metrics, tags, params = w.run_id, w.metrics, w.tags, w.params
    rows: list[tuple[str, float, int, int, bool, str]] = []  # in the order of METRIC_COLUMNS
    latest: dict[str, tuple[int, int, float, bool]] = {}  # key -> (step, timestamp, value, is_nan)
    seen: set[tuple[str, int, int, float, bool]] = set()
    for key, raw, timestamp, step in metrics:
        if key not in latest:
            _validate_metric(key, raw, timestamp, step)
        is_nan, value = (False, raw) if math.isfinite(raw) else store.sanitize_metric_value(raw)
        identity = (key, timestamp, step, value, is_nan)
        if identity in seen:
            continue
        seen.add(identity)
        rows.append((key, value, timestamp, step, is_nan, run_id))
        best = latest.get(key)
        if best is None or (step, timestamp, value) > best[:3]:
            latest[key] = (step, timestamp, value, is_nan)
    checked_tags = [_validate_tag(k, v) for k, v in tags.items()]
    checked_params = [_validate_param(k, v) for k, v in (params or {}).items()]
    return rows, latest, checked_tags, checked_params


def _apply(session: Any, store: Any, ix: Any, w: RunWrite, run: Any, rows: list, latest: dict, checked_tags: list,
           checked_params: list, sqlalchemy: Any) -> None:  # fmt: skip
    """One run's write inside ``session`` (its run row checked active, its metric rows already inserted)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    SqlMetric, SqlParam, SqlTag = ix.SqlMetric, ix.SqlParam, ix.SqlTag  # noqa: N806
    run_id, status = w.run_id, w.status
    if checked_params:
        query = sqlalchemy.select(SqlParam.key, SqlParam.value).where(SqlParam.run_uuid == run_id)
        existing = {key: value for key, value in session.execute(query)}
        changed = [
            {"key": p.key, "old_value": existing[p.key], "new_value": p.value}
            for p in checked_params
            if p.key in existing and existing[p.key] != p.value
        ]
        if changed:  # MLflow's own words
            raise MlflowException(
                f"Changing param values is not allowed. Params were already logged='{changed}' for run ID='{run_id}'.",
                INVALID_PARAMETER_VALUE,
            )
        new = [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in checked_params if p.key not in existing]
        if new:
            session.execute(sqlalchemy.insert(SqlParam.__table__), new)
    if rows:
        instances = [
            SqlMetric(run_uuid=run_id, key=k, step=s, timestamp=t, value=v, is_nan=n)
            for k, (s, t, v, n) in latest.items()
        ]
        store._update_latest_metrics_if_necessary(instances, session)
    for tag in checked_tags:
        session.merge(SqlTag(run_uuid=run_id, key=tag.key, value=tag.value))
    if status is not None:
        run.status, run.end_time = status, int(time.time() * 1000)


def _insert_metrics(session: Any, table: Any, rows: list[tuple[str, float, int, int, bool, str]],
                    method: str | None = None) -> None:  # fmt: skip
    """Insert ``rows`` (in the order of ``METRIC_COLUMNS``) into MLflow's ``metrics`` table in ``session``, with
    ``method`` (default: the fastest measured for the database, :data:`INSERT_METHODS`).

    - ``sqlite-driver`` (SQLite): straight to the driver's ``executemany`` (a loop in C): SQLAlchemy's per-row
      parameter processing cost ≈ 40 % of the insert (measured, 5,005 rows: 31-39 ms instead of 45-69 ms), and
      the columns' types need none there (sqlite3 stores a bool as 0/1, as SQLAlchemy's ``Boolean`` does).
    - ``copy`` (PostgreSQL with psycopg 3): ``COPY metrics (...) FROM STDIN``, one stream of rows
      (``benchmarks/bench_pg_insert.py``: 30 runs × 150 steps × 6 metrics, against Core's multi-row VALUES batches
      and psycopg's pipelined ``executemany``). A row already in the table fails the COPY with the driver's
      ``UniqueViolation``, raised as SQLAlchemy's ``IntegrityError`` like the other methods' (the caller falls back).
    - ``executemany``: psycopg's pipelined ``cursor.executemany`` (measured, not the default).
    - ``core``: SQLAlchemy Core (elsewhere: multi-row VALUES batches, which beat most drivers' ``executemany``).
    """
    connection = session.connection()
    method = method or INSERT_METHODS.get((connection.dialect.name, connection.dialect.driver), "core")
    if method == "sqlite-driver":
        _insert_sqlite(connection, table, rows)
    elif method in ("copy", "executemany"):
        _insert_psycopg(connection, table, rows, method)
    else:
        import sqlalchemy

        session.execute(sqlalchemy.insert(table), [dict(zip(METRIC_COLUMNS, row)) for row in rows])


# (dialect, driver) -> the insert method measured fastest there (see _insert_metrics); anything else: "core"
INSERT_METHODS = {("sqlite", "pysqlite"): "sqlite-driver", ("postgresql", "psycopg"): "copy"}


def _insert_sqlite(connection: Any, table: Any, rows: list) -> None:
    import sqlalchemy

    # In the order of MLflow's primary key (key, timestamp, step, run_uuid): each B-tree insert then lands
    # next to the previous one, and a 64 MB page cache (SQLite's default is 2 MB; this connection only) keeps
    # the other two indexes' pages. Measured on 30 runs × 1,001 steps × 6 metrics per insert, 10 inserts into
    # a growing file: 10 µs/row → 6.7 µs/row.
    rows = sorted(rows, key=PRIMARY_KEY_ORDER)
    connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    compiled = sqlalchemy.insert(table).compile(dialect=connection.dialect, column_keys=list(METRIC_COLUMNS))
    order = [METRIC_COLUMNS.index(name) for name in compiled.positiontup]
    if order != list(range(len(METRIC_COLUMNS))):
        rows = [tuple(row[i] for i in order) for row in rows]  # type: ignore[misc]
    connection.exec_driver_sql(str(compiled), rows)


def _insert_psycopg(connection: Any, table: Any, rows: list, method: str) -> None:
    """``rows`` through psycopg 3's own cursor on the session's connection (same transaction)."""
    import psycopg
    import sqlalchemy

    columns = ", ".join(METRIC_COLUMNS)
    raw = connection.connection.driver_connection  # the psycopg.Connection under SQLAlchemy's pool
    if method == "copy":
        statement = f"COPY {table.name} ({columns}) FROM STDIN"
    else:
        statement = f"INSERT INTO {table.name} ({columns}) VALUES ({', '.join(['%s'] * len(METRIC_COLUMNS))})"
    try:
        with raw.cursor() as cursor:
            if method == "copy":
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(statement, rows)
    except psycopg.IntegrityError as err:  # as SQLAlchemy raises it for the other methods: the caller falls back
        raise sqlalchemy.exc.IntegrityError(statement, None, err) from err


def history(mlflow_client: Any, run_ids: Sequence[str], metrics: Sequence[str]) -> list[tuple] | None:
    """Wide rows ``(run_id, step, value of metrics[0], value of metrics[1], ...)`` straight from a SQL store's
    ``metrics`` table, one row per (run, step) at which any of ``metrics`` was logged, a missing value as None;
    or None when ``mlflow_client`` has no SQL store (or MLflow moved its model), so the caller uses the public API.

    The database pivots (one ``GROUP BY run_uuid, step`` query per 100 runs, a ``MAX(CASE key ...)`` column
    per metric), so Python sees one row per epoch instead of one object per value. NaN, stored as value 0
    with ``is_nan`` set, comes back as None, as missing values do. Measured on a 720-run XOR study
    (4.3 million values, 718,722 epochs): ≈ 9.5 s, against ≈ 33 s for a four-column ORM query per (run, metric,
    step) plus a pandas pivot, and ≈ 60 s for MLflow's ``get_metric_history_bulk``. The query also does not
    filter on ``key``: SQLite would then scan the key index over every run in the store (the whole store's
    metrics, not this study's) instead of the run id index.

    A value logged twice at one step (MLflow allows it) reads as the larger of the two.
    """
    store = sql_store(mlflow_client)
    if store is None:
        return None
    import sqlalchemy as sa

    SqlMetric = guard.internals().SqlMetric  # noqa: N806

    value = sa.case((SqlMetric.is_nan == sa.true(), sa.null()), else_=SqlMetric.value)
    columns = [sa.func.max(sa.case((SqlMetric.key == key, value))) for key in metrics]
    logged = sa.func.sum(sa.case((SqlMetric.key.in_(list(metrics)), 1), else_=0))
    run_ids, rows = list(run_ids), []
    with store.ManagedSessionMaker() as session:
        connection = session.connection()  # Core, not the ORM session: no ORM loading step per row
        for start in range(0, len(run_ids), HISTORY_CHUNK):
            query = (
                sa.select(SqlMetric.run_uuid, SqlMetric.step, *columns)
                .where(SqlMetric.run_uuid.in_(run_ids[start : start + HISTORY_CHUNK]))
                .group_by(SqlMetric.run_uuid, SqlMetric.step)
                .having(logged > 0)
            )
            rows.extend(map(tuple, connection.execute(query)))
    return rows


@dataclass
class RunInfo:
    """The fields of ``mlflow.entities.RunInfo`` that :func:`runs` reads."""

    run_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None
    experiment_id: str


@dataclass
class RunData:
    """``mlflow.entities.RunData``'s three dictionaries (latest metric values, NaN decoded)."""

    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass
class LightRun:
    """A run as :func:`runs` reads it: ``info`` and ``data`` shaped like an ``mlflow.entities.Run``'s."""

    info: RunInfo
    data: RunData


def runs(mlflow_client: Any, experiment_id: str) -> list[LightRun] | None:
    """Every active run of ``experiment_id`` with its params, tags and latest metrics, newest first, in four
    queries (runs, params, tags, latest metrics); None without a SQL store (the caller uses ``search_runs``).

    ``search_runs`` builds ORM objects per param and tag: ≈ 5 s for a 1,080-run study, paid twice by a report
    (the check before the kernel starts, and the notebook's load). This reads the same tables' columns.
    """
    store = sql_store(mlflow_client)
    if store is None:
        return None
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage

    ix = guard.internals()
    SqlLatestMetric, SqlParam, SqlRun, SqlTag = ix.SqlLatestMetric, ix.SqlParam, ix.SqlRun, ix.SqlTag  # noqa: N806

    active = (SqlRun.experiment_id == int(experiment_id)) & (SqlRun.lifecycle_stage == LifecycleStage.ACTIVE)
    ids = sa.select(SqlRun.run_uuid).where(active).scalar_subquery()
    found: dict[str, LightRun] = {}
    with store.ManagedSessionMaker() as session:
        connection = session.connection()
        columns = (SqlRun.run_uuid, SqlRun.name, SqlRun.status, SqlRun.start_time, SqlRun.end_time)
        order = (SqlRun.start_time.desc(), SqlRun.run_uuid)
        for rid, name, status, start, end in connection.execute(sa.select(*columns).where(active).order_by(*order)):
            found[rid] = LightRun(RunInfo(rid, name, status, start, end, str(experiment_id)), RunData({}, {}, {}))
        for table, field in ((SqlParam, "params"), (SqlTag, "tags")):
            query = sa.select(table.run_uuid, table.key, table.value).where(table.run_uuid.in_(ids))
            for rid, key, value in connection.execute(query):
                getattr(found[rid].data, field)[key] = value
        latest = SqlLatestMetric
        query = sa.select(latest.run_uuid, latest.key, latest.value, latest.is_nan).where(latest.run_uuid.in_(ids))
        for rid, key, value, is_nan in connection.execute(query):
            found[rid].data.metrics[key] = math.nan if is_nan else value
    return list(found.values())
