"""MLflow tracking: the store, the experiment, parent and child runs, buffered metrics.

Knows nothing of the math: it logs names, numbers and texts. Everything goes through an explicit
``MlflowClient`` and run id, never through MLflow's process-global active-run stack, so a worker process
that runs several jobs in turn (joblib/loky reuses them) cannot leak one job's run into the next.

Costs measured on SQLite (../shared/FACTS.md): one ``log_metric`` call is a transaction (3.3 ms), a
``log_batch`` of hundreds of values costs ≈ 67 µs per value. So metrics are buffered in memory and
written with ``log_batch`` in chunks of at most 1,000 (MLflow's limit per call).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
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


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Run:
    """One MLflow run: params, tags, buffered metrics, text artifacts, and a terminal status."""

    def __init__(self, uri: str, run_id: str, flush_seconds: float = 10.0) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = client(uri)
        self.flush_seconds = flush_seconds
        self._buffer: list[Any] = []
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
        run = client(uri).create_run(experiment_id, run_name=run_name, tags=all_tags)
        return cls(uri, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer one step's metrics; written when the buffer holds 1,000 values or every few seconds."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every buffered metric value (``log_batch``, ≤ 1,000 per call)."""
        buffer, self._buffer = self._buffer, []
        for chunk in _chunks(buffer, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

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

    def end(self, status: str = "FINISHED") -> None:
        """Flush and set the terminal status (FINISHED, FAILED or KILLED); idempotent."""
        if self.ended:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        try:
            self.flush()
        finally:
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
