"""``python benchmarks/_timed_harness.py ARGS``: ``python -m harness ARGS`` with timers around its parts.

Used by ``bench_tracking.py``. Wraps, in this process only (so with Hydra's basic launcher): each job
(``harness.sweep.job``), the training inside it (``harness.app.train``) and every method of the MLflow
``Run`` plus the module-level MLflow helpers of ``harness.tracking``. Writes one JSON line per job to
``$BENCH_TIMINGS``, and a final line with the time to import the harness (before Hydra starts) and the process's end.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

OUT = os.environ["BENCH_TIMINGS"]
_acc: dict[str, float] = {"mlflow": 0.0, "train": 0.0}  # plus "mlflow.<call>": time per kind of MLflow call
_depth = {"mlflow": 0}


def _timed(kind: str, fn):
    label = f"mlflow.{fn.__name__}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kind == "mlflow" and _depth["mlflow"]:  # a tracked call inside another: count the outer one only
            return fn(*args, **kwargs)
        _depth["mlflow"] += kind == "mlflow"
        start, tracked_before = time.perf_counter(), _acc["mlflow"]
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            if kind == "train":  # train() calls the metric logger every epoch: that time is MLflow's
                elapsed -= _acc["mlflow"] - tracked_before
            _acc[kind] += elapsed
            if kind == "mlflow":
                _acc[label] = _acc.get(label, 0.0) + elapsed
            _depth["mlflow"] -= kind == "mlflow"

    return wrapper


def _patch() -> None:
    import harness.app as app
    import harness.sweep as sweep
    import harness.tracking as tracking

    start = tracking.Run.__dict__["start"].__func__  # a classmethod: wrap the function inside it
    tracking.Run.start = classmethod(_timed("mlflow", start))
    for name in ("log_params", "set_tags", "log_metrics", "flush", "log_text", "log_input", "end"):
        setattr(tracking.Run, name, _timed("mlflow", getattr(tracking.Run, name)))
    for mod in (tracking, sweep):
        if hasattr(mod, "find_sweep_parent"):
            mod.find_sweep_parent = _timed("mlflow", tracking.find_sweep_parent)
    app.mlflow_dataset = _timed("mlflow", app.mlflow_dataset)
    app.train = _timed("train", app.train)
    inner = sweep.job

    def job(cfg):
        _acc.clear()
        _acc.update(mlflow=0.0, train=0.0)
        start = time.perf_counter()
        try:
            return inner(cfg)
        finally:
            end = time.perf_counter()
            record = {"start": start - T_START, "end": end - T_START, "wall": end - start, **_acc}
            with open(OUT, "a") as f:
                f.write(json.dumps(record) + "\n")

    sweep.job = job  # harness/__main__.py binds ``job`` from harness.sweep when it runs, after this


def main() -> None:
    import runpy

    _patch()
    t_import = time.perf_counter() - T_START
    try:
        runpy.run_module("harness", run_name="__main__", alter_sys=True)  # exactly ``python -m harness``
    finally:
        with open(OUT, "a") as f:
            f.write(json.dumps({"process": True, "import": t_import, "end": time.perf_counter() - T_START}) + "\n")


if __name__ == "__main__":
    main()
