"""MLflow tracking: writing runs (:mod:`.run`), reading them back (:mod:`.queries`), and MLflow's internals
(:mod:`.mlflow_sql`) in a module of their own, every one checked by :mod:`.guard` and switched off by
``tracking.fast_path=false``; :func:`check_store` (:mod:`.store_check`) before any run, :func:`redact_uri`
(:mod:`.uri`) wherever a URI is shown.

Knows nothing of the math: it logs and reads names, numbers and texts. ``import mlflow`` costs ≈ 1 s, so
MLflow is imported inside the functions that need it, never at import time.
"""

from harness.tracking.queries import (
    all_runs,
    children,
    config_hash,
    end_orphans,
    find_finished,
    find_sweep_parent,
    histories,
    run_url,
    select_sweep,
)
from harness.tracking.run import Run, RunGroup, client, ensure_experiment, resolve_uri
from harness.tracking.store_check import StoreError, check_store
from harness.tracking.uri import redact_overrides, redact_uri

__all__ = [
    "Run",
    "RunGroup",
    "StoreError",
    "all_runs",
    "check_store",
    "children",
    "client",
    "config_hash",
    "end_orphans",
    "ensure_experiment",
    "find_finished",
    "find_sweep_parent",
    "histories",
    "redact_overrides",
    "redact_uri",
    "resolve_uri",
    "run_url",
    "select_sweep",
]
