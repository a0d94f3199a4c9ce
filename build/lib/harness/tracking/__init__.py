"""MLflow tracking: writing runs (:mod:`.run`), reading them back (:mod:`.queries`), and MLflow's internals
(:mod:`.mlflow_sql`) in a module of their own, switched off by ``tracking.fast_path=false``.

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
from harness.tracking.run import Run, client, ensure_experiment, resolve_uri

__all__ = [
    "Run",
    "all_runs",
    "children",
    "client",
    "config_hash",
    "end_orphans",
    "ensure_experiment",
    "find_finished",
    "find_sweep_parent",
    "histories",
    "resolve_uri",
    "run_url",
    "select_sweep",
]
