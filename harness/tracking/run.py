"""MLflow tracking: the store, the experiment, parent and child runs, buffered metrics.

Knows nothing of the math: it logs names, numbers and texts. Everything goes through an explicit
``MlflowClient`` and run id, never through MLflow's process-global active-run stack, so a worker process
that runs several jobs in turn (joblib/loky reuses them) cannot leak one job's run into the next.

Costs measured on SQLite (../shared/FACTS.md): one ``log_metric`` call is a transaction (3.3 ms), a
``log_batch`` of hundreds of values costs ≈ 67-75 µs per value, almost all of it SQLAlchemy ORM work. So
metrics are buffered in memory, and written on a SQL store by :func:`harness.tracking.mlflow_sql.write`
(one bulk insert and one transaction per flush), on any other store (HTTP) with ``log_batch`` in chunks of
at most 1,000. Each store call is a transaction of 2-5 ms, so on a SQL store ``Run.end`` writes the last
metrics, the outcome tags and the terminal status in one.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.names import HOST_TAG, PID_TAG
from harness.tracking import guard, mlflow_sql
from harness.tracking.mlflow_sql import MetricRow
from harness.tracking.uri import redact_uri

MAX_METRICS_PER_BATCH = 1000
# The SQL path has no per-call limit, and each transaction costs a commit (2-15 ms on SQLite): buffer up to
# 20,000 values (≈ 2 MB; still written at least every ``flush_seconds``), so XOR's 5,005 go in one.
MAX_SQL_BUFFER = 20000
MAX_PARAM_LENGTH = 6000
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


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


def start_tags(tags: Mapping[str, str] | None, parent_run_id: str | None) -> dict[str, str]:
    """A new run's tags: where it executes (host, pid: on a cluster, the first thing to know about a run that
    died), then ``tags``, then its sweep parent (``mlflow.parentRunId``) if any."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = {MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {}
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), **(tags or {}), **parent}


def terminate(mlflow_client: Any, run_id: str, status: str) -> None:
    """``MlflowClient.set_terminated`` in one request: on an HTTP store MLflow would first fetch the whole run
    (``get_run``) only to print a "View run ... at" line (with the server's address); the runner prints its own."""
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    name = MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name
    before = os.environ.get(name)
    os.environ[name] = "true"
    try:
        mlflow_client.set_terminated(run_id, status)
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Run:
    """One MLflow run: params, tags, buffered metrics, text artifacts, and a terminal status."""

    def __init__(
        self,
        uri: str,
        run_id: str,
        flush_seconds: float = 10.0,
        artifact_uri: str | None = None,
        mlflow_client: Any = None,
        fast_path: bool = True,
    ) -> None:
        """``fast_path=False`` writes through MLflow's public ``log_batch`` only, never its SQL internals."""
        self.uri = uri
        self.run_id = run_id
        self.client = mlflow_client if mlflow_client is not None else client(uri)
        self.flush_seconds = flush_seconds
        self.artifact_uri = artifact_uri  # from create_run: spares log_text the get_run MLflow does first
        self._artifact_repo: Any = None
        self.fast_path = fast_path
        # the SqlAlchemyStore for the fast path: None if there is none or it is switched off; found once
        self._store: Any = ... if fast_path else None
        self._buffer: list[MetricRow] = []
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
        fast_path: bool = True,
    ) -> Run:
        """Create a RUNNING run (nested under ``parent_run_id`` when given); ``fast_path`` as in ``Run``."""
        experiment_id = ensure_experiment(uri, experiment)
        c = client(uri)
        run = c.create_run(experiment_id, run_name=run_name, tags=start_tags(tags, parent_run_id))
        return cls(uri, run.info.run_id, artifact_uri=run.info.artifact_uri, mlflow_client=c, fast_path=fast_path)

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
        if self._sql() is None and len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self._flush_whole_batches()
        elif len(self._buffer) >= MAX_SQL_BUFFER or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def _flush_whole_batches(self) -> None:
        """Off the SQL path (HTTP): send the buffer's whole batches of ``MAX_METRICS_PER_BATCH`` values, one
        request each, and keep the rest buffered: a flush of 1,002 values would cost two requests, one of 2."""
        cut = len(self._buffer) - len(self._buffer) % MAX_METRICS_PER_BATCH
        batch, self._buffer = self._buffer[:cut], self._buffer[cut:]
        self._write(batch, {})
        self._last_flush = time.monotonic()

    def flush(self, tags: Mapping[str, Any] | None = None) -> None:
        """Write every buffered metric value, and ``tags``, in one transaction on a SQL store."""
        buffer, self._buffer = self._buffer, []
        self._write(buffer, {k: str(v) for k, v in (tags or {}).items()})
        self._last_flush = time.monotonic()

    def _sql(self) -> Any | None:
        """The store for ``mlflow_sql.write`` (None if there is none), looked up on first use only."""
        if self._store is ...:
            self._store = mlflow_sql.sql_store(self.client)
        return self._store

    def _write(
        self,
        metrics: list[MetricRow],
        tags: Mapping[str, str],
        status: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bool:
        """``mlflow_sql.write`` when the store allows it, else ``MlflowClient.log_batch`` (≤ 1,000 per call).
        Returns whether ``status`` was set too (only ``mlflow_sql.write`` does)."""
        import sqlalchemy.exc
        from mlflow import get_active_model_id
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        if not metrics and not tags and not params and status is None:
            return False
        store = self._sql()
        # log_batch also records metrics of an active logged model, and renames the run on a
        # mlflow.runName tag: neither is in mlflow_sql.write, so those go the plain way.
        if store is not None and MLFLOW_RUN_NAME not in tags and get_active_model_id() is None:
            try:
                mlflow_sql.write(store, self.run_id, metrics, tags, status, params)
                return status is not None
            except MlflowException as err:
                if not isinstance(err.__cause__, sqlalchemy.exc.IntegrityError):
                    raise
        if metrics or tags or params:
            self._log_batch(metrics, tags, params or {})
        return False

    def _log_batch(self, metrics: list[MetricRow], tags: Mapping[str, str], params: Mapping[str, str]) -> None:
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
        ``start`` already kept from ``create_run``. That uses two of MLflow's internals, checked by
        :mod:`harness.tracking.guard`: without them (or with ``fast_path=False``), ``MlflowClient.log_text``."""
        if self.artifact_uri is None or not self.fast_path or not guard.available():
            self.client.log_text(self.run_id, text, artifact_file)
            return
        if self._artifact_repo is None:
            ix = guard.internals()
            location = ix.add_databricks_profile_info_to_artifact_uri(self.artifact_uri, self.uri)
            self._artifact_repo = ix.get_artifact_repository(location, tracking_uri=self.uri)
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
            # SQLite says "UNIQUE constraint failed", PostgreSQL "duplicate key value violates unique constraint"
            if "unique constraint" not in str(err).lower() and "IntegrityError" not in str(err):
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
                terminate(self.client, self.run_id, status)
            self.ended = True

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, uri={redact_uri(self.uri)!r})"


# Buffered values of all runs of a group before a flush (≈ 10 MB): XOR's 20 replicas × 1,001 epochs × 6 metrics
# go in two flushes and the end.
MAX_GROUP_BUFFER = 100000


class RunGroup:
    """The runs of one job's replicas, written together.

    On a SQL store (the fast path) every flush, the params of all runs and their end are each ONE
    transaction for all R runs (:func:`harness.tracking.mlflow_sql.write_many`): one commit and one bulk
    insert instead of R. If that write fails on a value already in the table, or on any other store (HTTP),
    each run writes its own, as :class:`Run` does alone.
    """

    def __init__(self, runs: list[Run], flush_seconds: float = 10.0) -> None:
        """``runs`` is kept, not copied: a caller may start its runs into it after making the group."""
        self.runs = runs
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._buffered = 0
        self._shared: Any = ...  # the shared SQL store (or None), found on first use once the runs exist

    def create(
        self,
        uri: str,
        experiment: str,
        runs: Sequence[tuple[str, Mapping[str, str]]],
        parent_run_id: str | None = None,
        fast_path: bool = True,
    ) -> None:
        """Create one RUNNING run per ``(run_name, tags)``, as ``Run.start`` does, and add them to the group: in
        one transaction on a SQL store (:func:`harness.tracking.mlflow_sql.create_runs`), else one
        ``create_run`` each (each added as soon as it exists, so ``end`` still ends it if a later one fails)."""
        store = mlflow_sql.sql_store(client(uri)) if fast_path else None
        if store is None:  # one create_run (one request on HTTP) each; the experiment is looked up once
            experiment_id, c = ensure_experiment(uri, experiment), client(uri)
            for name, tags in runs:
                info = c.create_run(experiment_id, run_name=name, tags=start_tags(tags, parent_run_id)).info
                self.runs.append(Run(uri, info.run_id, artifact_uri=info.artifact_uri, mlflow_client=c,
                                     fast_path=fast_path))  # fmt: skip
            return
        specs = [(name, start_tags(tags, parent_run_id)) for name, tags in runs]
        created = mlflow_sql.create_runs(store, ensure_experiment(uri, experiment), specs)
        c = client(uri)
        self.runs.extend(Run(uri, rid, artifact_uri=art, mlflow_client=c, fast_path=fast_path) for rid, art in created)

    def _store(self) -> Any | None:
        """The SQL store every run writes to, if they share one and the fast path applies; else None."""
        from mlflow import get_active_model_id

        if get_active_model_id() is not None:
            return None
        if self._shared is ... and self.runs:
            store = self.runs[0]._sql()
            self._shared = store if store is not None and all(r._sql() is store for r in self.runs) else None
        return None if self._shared is ... else self._shared

    def _write_all(self, writes: list[mlflow_sql.RunWrite]) -> bool:
        """``write_many`` when the store allows it; False if the caller must write run by run instead."""
        import sqlalchemy.exc
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        store = self._store()
        if store is None or any(MLFLOW_RUN_NAME in w.tags for w in writes):
            return False
        try:
            mlflow_sql.write_many(store, writes)
        except MlflowException as err:
            if not isinstance(err.__cause__, sqlalchemy.exc.IntegrityError):
                raise
            return False
        return True

    def log_params(self, params: list[Mapping[str, Any]]) -> None:
        """``Run.log_params`` of run r with ``params[r]``, for every run."""
        texts = [{k: str(v)[:MAX_PARAM_LENGTH] for k, v in p.items()} for p in params]
        if not self._write_all([mlflow_sql.RunWrite(r.run_id, [], {}, None, p) for r, p in zip(self.runs, texts)]):
            for run, p in zip(self.runs, params):
                run.log_params(p)

    def log_metrics(self, r: int, metrics: Mapping[str, float], step: int) -> None:
        """``Run.log_metrics`` of run ``r``; the group flushes all runs together (every ``flush_seconds`` or
        ``MAX_GROUP_BUFFER`` values)."""
        run = self.runs[r]
        if self._shared is ...:
            self._store()
        if self._shared is None:
            run.log_metrics(metrics, step)
            return
        now = int(time.time() * 1000)
        step = int(step)
        run._buffer.extend((k, float(v), now, step) for k, v in metrics.items())
        self._buffered += len(metrics)
        if self._buffered >= MAX_GROUP_BUFFER or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every run's buffered metric values (one transaction on a SQL store)."""
        writes = [mlflow_sql.RunWrite(r.run_id, r._buffer, {}) for r in self.runs if r._buffer]
        if writes and self._write_all(writes):
            for r in self.runs:
                r._buffer = []
        else:
            for r in self.runs:
                if r._buffer:
                    r.flush()
        self._buffered = 0
        self._last_flush = time.monotonic()

    def end(self, status: str, tags: list[Mapping[str, Any]]) -> None:
        """``Run.end(status, tags[r])`` of every run not ended yet: one transaction on a SQL store. If that
        fails, each run ends on its own (``Run.end`` never leaves a run RUNNING); the first error is raised
        after all were tried."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        todo = [(r, {k: str(v) for k, v in t.items()}) for r, t in zip(self.runs, tags) if not r.ended]
        writes = [mlflow_sql.RunWrite(r.run_id, r._buffer, t, status) for r, t in todo]
        try:
            done = bool(writes) and self._write_all(writes)
        except Exception:  # noqa: BLE001  (each run below ends on its own, and raises what it meets)
            done = False
        if done:
            for r, _ in todo:
                r._buffer, r.ended = [], True
            return
        error: BaseException | None = None
        for r, t in todo:
            try:
                r.end(status, tags=t)
            except BaseException as err:  # noqa: BLE001
                error = error or err
        if error is not None:
            raise error
