"""Benchmark 4: the whole study end to end: ``xor_grid`` + ``mnist_grid`` + both reports, wall time.

    python benchmarks/bench_study.py                      # joblib with 2 workers (the fast way)
    python benchmarks/bench_study.py --launcher basic     # one process, jobs one after another

Runs, in a fresh temporary directory with its own SQLite store, exactly what a user runs:

    python -m harness -m +experiment=xor_grid   [hydra/launcher=joblib hydra.launcher.n_jobs=2]
    python -m harness -m +experiment=mnist_grid [...]
    python -m harness.report xor_grid  --out reports      (only if the sweep did not already write it)
    python -m harness.report mnist_grid --out reports

The presets (``experiments/xor_grid.yaml``, ``experiments/mnist_grid.yaml``) and ``harness.report`` come
from the study work; when one is missing this benchmark says which and exits with status 3.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, footer, header, python, set_blas_threads, table, timed, verdict  # noqa: E402

PRESETS = ("xor_grid", "mnist_grid")
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
TARGET_S = 600.0
EXPECTED_RUNS = 180 + 108 + 2


def missing_parts() -> list[str]:
    missing = [f"experiments/{p}.yaml" for p in PRESETS if not (ROOT / "experiments" / f"{p}.yaml").exists()]
    if importlib.util.find_spec("harness.report") is None:
        missing.append("harness/report.py (python -m harness.report)")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", choices=LAUNCHERS, default="joblib")
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="set OPENBLAS/OMP_NUM_THREADS for every job (default: unset)"
    )
    parser.add_argument("--keep", default=None, help="directory to run in and keep (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="extra overrides for both sweeps")
    args = parser.parse_args()
    set_blas_threads(args.blas_threads)
    header(
        "The whole study: xor_grid + mnist_grid + their reports, end to end",
        ("numpy", "mlflow", "hydra-core", "hydra-joblib-launcher", "nbclient", "seaborn"), launcher=args.launcher,
        extra=" ".join(args.extra) or "none", blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    )  # fmt: skip
    missing = missing_parts()
    if missing:
        print("NOT RUN: this checkout lacks " + ", ".join(missing) + ". The study presets and the report command")
        print("come from the study work (issue 4); merge it, then run this benchmark again.")
        raise SystemExit(3)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-study-") if args.keep is None else None
    cwd = tmp_ctx.name if tmp_ctx else args.keep
    Path(cwd).mkdir(parents=True, exist_ok=True)
    rows, total, total_cpu = [], 0.0, 0.0
    for preset in PRESETS:
        cmd = [python(), "-m", "harness", "-m", f"+experiment={preset}", *LAUNCHERS[args.launcher], *args.extra,
               f"hydra.sweep.dir={cwd}/multirun/{preset}"]  # fmt: skip
        wall, cpu = timed(cmd, cwd)
        rows.append([f"sweep {preset}", f"{wall:.1f}", f"{cpu:.1f}"])
        total, total_cpu = total + wall, total_cpu + cpu
        print(f"sweep {preset}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    for preset in PRESETS:
        if (Path(cwd) / "reports" / f"{preset}.html").exists():
            rows.append([f"report {preset}", "(written by the sweep, included above)", ""])
            continue
        wall, cpu = timed([python(), "-m", "harness.report", preset, "--out", "reports"], cwd)
        rows.append([f"report {preset}", f"{wall:.1f}", f"{cpu:.1f}"])
        total, total_cpu = total + wall, total_cpu + cpu
        print(f"report {preset}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    with sqlite3.connect(Path(cwd) / "mlflow.db") as con:
        statuses = dict(con.execute("select status, count(*) from runs group by status").fetchall())
    if sum(statuses.values()) < EXPECTED_RUNS:
        print(f"WARNING: expected ≥ {EXPECTED_RUNS} runs (180 + 108 children, 2 parents), found {statuses}")
    rows.append(["total", f"{total:.1f}", f"{total_cpu:.1f}"])
    print()
    table(rows, ["step", "wall s", "CPU s (all processes)"])
    print(f"runs in the store by status: {statuses}")
    print("## Ratios")
    print(f"whole study {total:.0f} s = {total / 60:.1f} min on {os.cpu_count()} CPUs ({args.launcher})  "
          f"target ≤ 10 min: {verdict(total, TARGET_S, False)}")  # fmt: skip
    cores = os.cpu_count() or 1
    print(f"CPU time {total_cpu:.0f} s / {cores} cores = {total_cpu / cores / 60:.1f} min: the wall time on an idle "
          f"machine if the work spread over every core (a busy machine's wall time is longer)")  # fmt: skip
    if tmp_ctx:
        tmp_ctx.cleanup()


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
