"""MLflow tracking: the store, the experiment, parent and child runs, buffered metrics.

Knows nothing of the math: it logs names, numbers and texts. Everything goes through an explicit
``MlflowClient`` and run id, never through MLflow's process-global active-run stack, so a worker process
that runs several jobs in turn (joblib/loky reuses them) cannot leak one job's run into the next.

Costs measured on SQLite (../shared/FACTS.md): one ``log_metric`` call is a transaction (3.3 ms), a
``log_batch`` of hundreds of values costs ≈ 67-75 µs per value, almost all of it SQLAlchemy ORM work. So
metrics are buffered in memory, and written on a SQL store by ``_write_sql`` (one bulk insert and one
transaction per flush), on any other store (HTTP) with ``log_batch`` in chunks of at most 1,000. Each
store call is a transaction of 2-5 ms, so on a SQL store ``Run.end`` writes the last metrics, the outcome
tags and the terminal status in one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import posixpath
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MAX_METRICS_PER_BATCH = 1000
# The SQL path has no per-call limit, and each transaction costs a commit (2-15 ms on SQLite): buffer up to
# 20,000 values (≈ 2 MB; still written at least every ``flush_seconds``), so XOR's 5,005 go in one.
MAX_SQL_BUFFER = 20000
MAX_PARAM_LENGTH = 6000
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
SWEEP_TAG = "harness.sweep_dir"
HASH_TAG = "harness.config_hash"  # sha256 of the resolved config minus ``tracking``: what ``resume`` matches
PARENT_TAG = "mlflow.parentRunId"


def resolve_uri(uri: str | None, cwd: str | os.PathLike[str] | None = None) -> str:
    """The tracking URI to use, made absolute so that jobs in other directories write the same store.

    Order: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else MLflow's own default,
    ``sqlite:///mlflow.db`` in ``cwd`` (the directory the command runs from).
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    base = Path(cwd) if cwd is not None else Path.cwd()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path != ":memory:":
            return "sqlite:///" + str((base / path).resolve())
    if "://" not in uri:  # a bare path means a file store
        return "file://" + str((base / uri).resolve())
    return uri


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (imported lazily: ``import mlflow`` costs ≈ 1 s)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """Id of experiment ``name``, created if missing (safe when another process creates it first)."""
    from mlflow.exceptions import MlflowException

    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name)
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


_MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step: a buffered metric value
_METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")  # of MLflow's ``metrics`` table


def _sql_store(mlflow_client: Any) -> Any | None:
    """MLflow's ``SqlAlchemyStore`` behind ``mlflow_client`` if it is one and has every internal that
    ``_write_sql`` uses; else None (an HTTP ``RestStore``, a file store, or an MLflow whose internals moved)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = mlflow_client._tracking_client.store
    except (AttributeError, ImportError):
        return None
    needed = ("ManagedSessionMaker", "_get_run", "_check_run_is_active", "sanitize_metric_value",
              "_update_latest_metrics_if_necessary")  # fmt: skip
    return store if isinstance(store, SqlAlchemyStore) and all(hasattr(store, n) for n in needed) else None


def _write_sql(
    store: Any,
    run_id: str,
    metrics: list[_MetricRow],
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
    import sqlalchemy
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlTag
    from mlflow.utils.validation import _validate_metric, _validate_param, _validate_tag

    rows: list[tuple[str, float, int, int, bool, str]] = []  # in the order of _METRIC_COLUMNS
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
    with store.ManagedSessionMaker(read_only=False) as session:
        run = store._get_run(session=session, run_uuid=run_id)
        store._check_run_is_active(run)
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
                    f"Changing param values is not allowed. Params were already logged='{changed}' for run "
                    f"ID='{run_id}'.",
                    INVALID_PARAMETER_VALUE,
                )
            new = [
                {"run_uuid": run_id, "key": p.key, "value": p.value} for p in checked_params if p.key not in existing
            ]
            if new:
                session.execute(sqlalchemy.insert(SqlParam.__table__), new)
        if rows:
            _insert_metrics(session, SqlMetric.__table__, rows)
            instances = [
                SqlMetric(run_uuid=run_id, key=k, step=s, timestamp=t, value=v, is_nan=n)
                for k, (s, t, v, n) in latest.items()
            ]
            store._update_latest_metrics_if_necessary(instances, session)
        for tag in checked_tags:
            session.merge(SqlTag(run_uuid=run_id, key=tag.key, value=tag.value))
        if status is not None:
            run.status, run.end_time = status, int(time.time() * 1000)


def _insert_metrics(session: Any, table: Any, rows: list[tuple[str, float, int, int, bool, str]]) -> None:
    """Insert ``rows`` (in the order of ``_METRIC_COLUMNS``) into MLflow's ``metrics`` table in ``session``.

    On SQLite, straight to the driver's ``executemany`` (a loop in C): SQLAlchemy's per-row parameter
    processing cost ≈ 40 % of the insert (measured, 5,005 rows: 31-39 ms instead of 45-69 ms), and the
    columns' types need none there (sqlite3 stores a bool as 0/1, as SQLAlchemy's ``Boolean`` does).
    Elsewhere through SQLAlchemy Core, whose multi-row VALUES batches beat most drivers' ``executemany``.
    """
    import sqlalchemy

    insert = sqlalchemy.insert(table)
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        session.execute(insert, [dict(zip(_METRIC_COLUMNS, row)) for row in rows])
        return
    compiled = insert.compile(dialect=connection.dialect, column_keys=list(_METRIC_COLUMNS))
    order = [_METRIC_COLUMNS.index(name) for name in compiled.positiontup]
    if order != list(range(len(_METRIC_COLUMNS))):
        rows = [tuple(row[i] for i in order) for row in rows]  # type: ignore[misc]
    connection.exec_driver_sql(str(compiled), rows)


class Run:
    """One MLflow run: params, tags, buffered metrics, text artifacts, and a terminal status."""

    def __init__(
        self,
        uri: str,
        run_id: str,
        flush_seconds: float = 10.0,
        artifact_uri: str | None = None,
        mlflow_client: Any = None,
    ) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = mlflow_client if mlflow_client is not None else client(uri)
        self.flush_seconds = flush_seconds
        self.artifact_uri = artifact_uri  # from create_run: spares log_text the get_run MLflow does first
        self._artifact_repo: Any = None
        self._store: Any = ...  # the SqlAlchemyStore for the fast path, None if there is none; found once
        self._buffer: list[_MetricRow] = []
        self._last_flush = time.monotonic()
        self.ended = False

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        """Create a RUNNING run (nested under ``parent_run_id`` when given)."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        experiment_id = ensure_experiment(uri, experiment)
        # Where the run executes: on a cluster, the first thing to know about a run that died.
        all_tags = {"harness.host": socket.gethostname(), "harness.pid": str(os.getpid()), **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        c = client(uri)
        run = c.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return cls(uri, run.info.run_id, artifact_uri=run.info.artifact_uri, mlflow_client=c)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` (values cut to MLflow's 6,000 characters) in one transaction on a SQL store, else
        one ``log_batch`` (MLflow splits it into calls of ≤ 100). Tags known at the start go with
        ``create_run`` instead, the outcome with ``end``."""
        self._write([], {}, params={k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set ``tags`` now, with the buffered metrics left buffered."""
        self._write([], {k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp: int | None = None) -> None:
        """Buffer one step's metrics (at ``timestamp`` ms since the epoch, default now); written every
        ``flush_seconds`` or when the buffer is full (1,000 values, ``MAX_SQL_BUFFER`` on a SQL store)."""
        now = int(time.time() * 1000) if timestamp is None else int(timestamp)
        step = int(step)
        self._buffer.extend((k, float(v), now, step) for k, v in metrics.items())
        full = MAX_SQL_BUFFER if self._sql() is not None else MAX_METRICS_PER_BATCH
        if len(self._buffer) >= full or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self, tags: Mapping[str, Any] | None = None) -> None:
        """Write every buffered metric value, and ``tags``, in one transaction on a SQL store."""
        buffer, self._buffer = self._buffer, []
        self._write(buffer, {k: str(v) for k, v in (tags or {}).items()})
        self._last_flush = time.monotonic()

    def _sql(self) -> Any | None:
        """The store for ``_write_sql`` (None if there is none), looked up on first use only."""
        if self._store is ...:
            self._store = _sql_store(self.client)
        return self._store

    def _write(
        self,
        metrics: list[_MetricRow],
        tags: Mapping[str, str],
        status: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bool:
        """``_write_sql`` when the store allows it, else ``MlflowClient.log_batch`` (≤ 1,000 per call).
        Returns whether ``status`` was set too (only ``_write_sql`` does)."""
        import sqlalchemy.exc
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.fluent import get_active_model_id
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        if not metrics and not tags and not params and status is None:
            return False
        store = self._sql()
        # log_batch also records metrics of an active logged model, and renames the run on a
        # mlflow.runName tag: neither is in _write_sql, so those go the plain way.
        if store is not None and MLFLOW_RUN_NAME not in tags and get_active_model_id() is None:
            try:
                _write_sql(store, self.run_id, metrics, tags, status, params)
                return status is not None
            except MlflowException as err:
                if not isinstance(err.__cause__, sqlalchemy.exc.IntegrityError):
                    raise
        if metrics or tags or params:
            self._log_batch(metrics, tags, params or {})
        return False

    def _log_batch(self, metrics: list[_MetricRow], tags: Mapping[str, str], params: Mapping[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        entities = [Metric(k, v, t, s) for k, v, t, s in metrics]
        # MlflowClient.log_batch splits this into calls within MLflow's limits (≤ 1,000 metrics, ≤ 100 tags).
        self.client.log_batch(
            self.run_id,
            metrics=entities,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` as artifact ``artifact_file`` straight to the run's artifact repository.

        ``MlflowClient.log_text`` does the same after a ``get_run`` to learn the artifact URI, which
        ``start`` already kept from ``create_run``."""
        if self.artifact_uri is None:
            self.client.log_text(self.run_id, text, artifact_file)
            return
        if self._artifact_repo is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
            from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

            location = add_databricks_profile_info_to_artifact_uri(self.artifact_uri, self.uri)
            self._artifact_repo = get_artifact_repository(location, tracking_uri=self.uri)
        path = posixpath.normpath(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp, posixpath.basename(path))
            local.write_text(text, encoding="utf-8")
            self._artifact_repo.log_artifact(str(local), posixpath.dirname(path) or None)

    def log_input(self, dataset: Any, context: str = "train") -> None:
        """Record an ``mlflow.data`` dataset as an input of this run."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
        try:
            self.client.log_inputs(self.run_id, datasets=[entity])
        except MlflowException as err:
            # MLflow inserts an experiment's dataset row on first use after a check that another process
            # can pass at the same moment (parallel jobs, same dataset): the loser hits the UNIQUE
            # constraint, and then the row exists, so one more call links it.
            if "UNIQUE constraint" not in str(err) and "IntegrityError" not in str(err):
                raise
            self.client.log_inputs(self.run_id, datasets=[entity])

    def end(self, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        """Write the buffered metrics and ``tags`` and set the terminal status (FINISHED, FAILED or KILLED):
        one transaction on a SQL store, else ``log_batch`` then ``set_terminated``; idempotent.

        If that write fails, the tags are tried once more on their own and the status is set anyway
        (``set_terminated``): a run must never stay RUNNING or lose its outcome."""
        if self.ended:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        text_tags = {k: str(v) for k, v in (tags or {}).items()}
        buffer, self._buffer = self._buffer, []
        terminated = False
        try:
            terminated = self._write(buffer, text_tags, status)
        except BaseException:
            if text_tags:
                with contextlib.suppress(Exception):
                    self._write([], text_tags)
            raise
        finally:
            if not terminated:
                self.client.set_terminated(self.run_id, status)
            self.ended = True

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, uri={self.uri!r})"


def find_sweep_parent(uri: str, experiment: str, sweep_dir: str) -> str | None:
    """Run id of the RUNNING parent run of the sweep writing to ``sweep_dir`` (None if there is none)."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    quoted = sweep_dir.replace("'", "\\'")
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{quoted}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def config_hash(config: Mapping[str, Any]) -> str:
    """Identity of a job: sha256 of the resolved config (a plain mapping) without its ``tracking`` and
    ``hydra`` sections, which say where a run is recorded, not what it computes. Keys are sorted, so the
    order of overrides on the command line does not matter."""
    kept = {k: v for k, v in config.items() if k not in ("tracking", "hydra")}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_finished(uri: str, experiment: str, digest: str) -> Any | None:
    """The newest FINISHED run of ``experiment`` tagged with config hash ``digest`` (None if none)."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{HASH_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def children(uri: str, parent_run_id: str) -> list[Any]:
    """Every child run of ``parent_run_id`` (all statuses)."""
    c = client(uri)
    parent = c.get_run(parent_run_id)
    return list(
        c.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=50000,
        )
    )


def end_orphans(uri: str, runs: Iterable[Any], status: str = "KILLED") -> list[Any]:
    """End ``runs`` still RUNNING with ``status`` (KILLED or FAILED) and tag ``outcome``; returns them.

    A worker that is killed (loky terminating its pool on Ctrl-C, a lost Ray node) never reaches its own
    ``finally``; the launching process, which outlives it, closes its run instead.
    """
    outcome = {"KILLED": "killed", "FAILED": "failed"}[status]
    c = client(uri)
    orphans = [r for r in runs if r.info.status == "RUNNING"]
    for run in orphans:
        c.set_tag(run.info.run_id, "outcome", outcome)
        c.set_terminated(run.info.run_id, status)
    return orphans


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to see a run: the server's own page for an HTTP store, else the default ``mlflow ui`` address."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
