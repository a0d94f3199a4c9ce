"""Benchmark 3: sweep throughput, the 36-triple MNIST grid with Hydra's basic launcher vs joblib, 2 workers.

    python benchmarks/bench_sweep.py                 # 1 round (basic, joblib, basic with 1 BLAS thread); ≈ 2 min
    python benchmarks/bench_sweep.py --repeats 3     # interleaved rounds, medians

Each sweep is the real command, in a fresh temporary directory with its own SQLite store:

    python -m harness -m dataset=mnist loss=bce,mse,cce activation=sigmoid,softmax,identity,tanh \\
        delta=ng,nielsen,chain [hydra/launcher=joblib hydra.launcher.n_jobs=2]

Wall time is measured around the whole command (launch, every job, parent run end); afterwards the
store is checked: 36 child runs, none left RUNNING. ``basic-blas1`` is the basic launcher with OpenBLAS
held to one thread, for reference: the basic launcher is not single-threaded (each epoch's evaluation of
the 4,500 + 500 samples is a product large enough for OpenBLAS to use both cores), so what 2 workers can
gain over it is at most (basic-blas1 time / 2) against the basic time.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import footer, header, median, python, set_blas_threads, spread, table, timed, verdict  # noqa: E402

GRID = ["dataset=mnist", "loss=bce,mse,cce", "activation=sigmoid,softmax,identity,tanh", "delta=ng,nielsen,chain"]
LAUNCHERS = {"basic": [], "joblib-2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "basic-blas1": []}
LAUNCHER_ENV = {"basic-blas1": {"OPENBLAS_NUM_THREADS": "1"}}


def run_statuses(db: Path) -> dict[str, int]:
    """Runs per status in the store (read with sqlite3: no MLflow import, no schema assumptions beyond runs)."""
    with sqlite3.connect(db) as con:
        return dict(con.execute("select status, count(*) from runs group by status").fetchall())


def sweep(launcher: str, extra: list[str]) -> tuple[float, float, dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        cmd = [python(), "-m", "harness", "-m", *GRID, *LAUNCHERS[launcher], *extra, f"hydra.sweep.dir={tmp}/multirun"]
        wall, cpu = timed(cmd, cwd=tmp, extra_env=LAUNCHER_ENV.get(launcher))
        return wall, cpu, run_statuses(Path(tmp, "mlflow.db"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (basic, joblib-2)")
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="set OPENBLAS/OMP_NUM_THREADS for both sweeps (default: unset)"
    )
    parser.add_argument("extra", nargs="*", help="extra overrides for both sweeps, e.g. train.epochs=2")
    args = parser.parse_args()
    set_blas_threads(args.blas_threads)
    header(
        "Sweep throughput: 36-triple MNIST grid, basic launcher vs joblib with 2 workers",
        ("numpy", "mlflow", "hydra-core", "hydra-joblib-launcher", "joblib"), repeats=args.repeats,
        extra=" ".join(args.extra) or "none",
        blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    )  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    rows = []
    for r in range(args.repeats):
        order = list(LAUNCHERS) if r % 2 == 0 else list(reversed(LAUNCHERS))  # alternate who goes first
        for name in order:
            wall, cpu, statuses = sweep(name, args.extra)
            times[name].append(wall)
            rows.append([str(r + 1), name, f"{wall:.1f}", f"{cpu:.1f}", f"{36 / wall * 60:.1f}", str(statuses)])
            print(f"round {r + 1}: {name} {wall:.1f} s wall, {cpu:.1f} s CPU, runs {statuses}", flush=True)
            if statuses.get("RUNNING") or sum(statuses.values()) != 37:
                print(f"WARNING: expected 36 FINISHED children + 1 parent, got {statuses}")
    print()
    table(rows, ["round", "launcher", "wall s", "CPU s", "jobs/min", "runs by status"])
    basic, joblib = median(times["basic"]), median(times["joblib-2"])
    print("## Ratios (medians)")
    print(f"basic launcher {spread(times['basic'])}; joblib 2 workers {spread(times['joblib-2'])}")
    print(f"joblib with 2 workers is {basic / joblib:.2f}× the basic launcher's throughput  target ≥ 1.7×: "
          f"{verdict(basic / joblib, 1.7)}")  # fmt: skip
    blas1 = median(times["basic-blas1"])
    print(
        f"basic launcher with one BLAS thread {spread(times['basic-blas1'])}: the basic launcher already gets "
        f"{blas1 / basic:.2f}× from OpenBLAS's second thread, so 2 perfectly parallel workers could reach at most "
        f"{basic / (blas1 / 2):.2f}× it; joblib reaches {blas1 / joblib:.2f}× the single-threaded basic launcher"
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
