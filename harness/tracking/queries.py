"""Reading the store back: a sweep's parent and children, finished runs by config hash, metric histories.

Knows nothing of the math: metric and tag names come from :mod:`harness.names`, values are numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from harness.names import CONFIGURATION_LEVEL, HASH_TAG, LEVEL_TAG, OUTCOME_TAG, PARENT_TAG, SWEEP_TAG
from harness.tracking import mlflow_sql
from harness.tracking.run import client, terminate
from harness.tracking.uri import redact_uri

# Config sections that say where and how a run is recorded or reported, not what it computes.
# ``replicas``: the unfolded jobs a folded job trains (harness.fold); each run's own config has none.
NOT_IDENTITY = ("tracking", "hydra", "report", "tags", "replicas")


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
    """Identity of a job: sha256 of the resolved config (a plain mapping) without the sections in
    :data:`NOT_IDENTITY` (``tracking``, ``hydra``, ``report``, ``tags``), which say where a run is recorded,
    how it is reported and labelled, not what it computes. Keys are sorted, so the order of overrides on
    the command line does not matter."""
    kept = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
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
        c.set_tag(run.info.run_id, OUTCOME_TAG, outcome)
        terminate(c, run.info.run_id, status)
    return orphans


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to see a run: the server's own page for an HTTP store (its password masked), else the default
    ``mlflow ui`` address."""
    base = redact_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def all_runs(mlflow_client: Any, experiment_id: str, fast_path: bool = True) -> list:
    """Every active run of the experiment, newest first: on a SQL store a few column queries
    (:func:`mlflow_sql.runs`, runs shaped like MLflow's), otherwise or with ``fast_path=False`` all pages of
    ``search_runs``."""
    fast = mlflow_sql.runs(mlflow_client, experiment_id) if fast_path else None
    if fast is not None:
        return fast
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def select_sweep(runs: list, parent_run_id: str | None = None) -> tuple[str | None, list]:
    """The seed runs of one sweep: the children of ``parent_run_id`` (by default the newest parent run), and the
    children of its configuration runs once they are nested (:func:`study_seed_runs`).

    An experiment without sweep parents (only single runs) gives all its runs.
    """
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    if parent_run_id is None and parents:
        parent_run_id = max(parents, key=lambda r: r.info.start_time).info.run_id
    if parent_run_id is None:
        return None, [r for r in runs if not is_configuration(r)]
    return parent_run_id, study_seed_runs(runs, parent_run_id)


def is_configuration(run: Any) -> bool:
    """Whether ``run`` is a study's configuration run (harness.tracking.study), not a seed run."""
    return run.data.tags.get(LEVEL_TAG) == CONFIGURATION_LEVEL


def study_seed_runs(runs: Iterable[Any], parent_run_id: str) -> list[Any]:
    """The seed runs of the sweep ``parent_run_id`` among ``runs`` (as ``all_runs`` gives them): its children
    that are not configuration runs, and the children of its configuration runs (once nested)."""
    runs = list(runs)
    configs = {r.info.run_id for r in runs if r.data.tags.get(PARENT_TAG) == parent_run_id and is_configuration(r)}
    parents = configs | {parent_run_id}
    return [r for r in runs if not is_configuration(r) and r.data.tags.get(PARENT_TAG) in parents]


def _api_history(mlflow_client: Any, run_ids: list[str], metrics: Sequence[str]) -> list[tuple]:
    """The rows of :func:`mlflow_sql.history` through the public API: one ``get_metric_history`` per run and metric."""
    values: dict[tuple[str, int], list] = {}
    for rid in run_ids:
        for i, key in enumerate(metrics):
            for m in mlflow_client.get_metric_history(rid, key):
                values.setdefault((rid, m.step), [None] * len(metrics))[i] = m.value
    return [(rid, step, *row) for (rid, step), row in values.items()]


def histories(uri: str, run_ids: Sequence[str], metrics: Sequence[str], fast_path: bool = True) -> pd.DataFrame:
    """Every logged value of ``metrics`` as one row per (run_id, epoch), one column per metric (NaN where a
    metric was not logged at that epoch), sorted by run and epoch.

    On a SQL store (SQLite, PostgreSQL, ...) the database pivots (:func:`mlflow_sql.history`); otherwise, or
    with ``fast_path=False``, one ``get_metric_history`` call per run and metric.
    """
    c, run_ids = client(uri), list(run_ids)
    rows = mlflow_sql.history(c, run_ids, metrics) if fast_path else None
    if rows is None:
        rows = _api_history(c, run_ids, metrics)
    wide = pd.DataFrame(rows, columns=["run_id", "epoch", *metrics])
    wide = wide.astype({"epoch": "int64", **{m: "float64" for m in metrics}})
    return wide.sort_values(["run_id", "epoch"], ignore_index=True)
