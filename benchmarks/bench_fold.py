"""Benchmark 6: a 240-run XOR sweep folded into replicas against one Hydra job per run (issue 12: ≥ 3×).

    python benchmarks/bench_fold.py                 # 1 round: folded, then hydra.sweeper.fold=[]; ≈ 4 min
    python benchmarks/bench_fold.py --repeats 3     # interleaved rounds, medians

Each sweep is the real command, in a fresh temporary directory with its own SQLite store:

    python -m harness -m loss=bce,mse activation=sigmoid,softmax delta=ng,nielsen,chain 'seed=range(20)' \\
        train.epochs=500 [hydra.sweeper.fold=[]]

Folded (the default, ``hydra.sweeper.fold=[seed,train.lr]``), the 240 runs are 12 Hydra jobs of 20
replicas; unfolded, 240 jobs. Wall time is measured around the whole command; afterwards each store is
checked: 240 FINISHED child runs, none left RUNNING.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import footer, header, median, python, set_blas_threads, spread, table, timed, verdict  # noqa: E402

SWEEP = ["loss=bce,mse", "activation=sigmoid,softmax", "delta=ng,nielsen,chain", "seed=range(20)", "train.epochs=500"]
MODES = {"folded": [], "unfolded": ["hydra.sweeper.fold=[]"]}
RUNS, TARGET = 240, 3.0


def children(db: Path) -> dict[str, int]:
    """The sweep's child runs per status (read with sqlite3: no MLflow import)."""
    with sqlite3.connect(db) as con:
        query = (
            "select status, count(*) from runs where run_uuid in "
            "(select run_uuid from tags where key = 'mlflow.parentRunId') group by status"
        )
        return dict(con.execute(query).fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS/OMP_NUM_THREADS (default unset)")
    args = parser.parse_args()
    set_blas_threads(args.blas_threads)
    header("A 240-run XOR sweep: folded replicas vs one job per run", ("numpy", "mlflow", "hydra-core"),
           sweep=" ".join(SWEEP), repeats=args.repeats)  # fmt: skip
    walls: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    for round_ in range(args.repeats):
        for mode, extra in MODES.items():
            with tempfile.TemporaryDirectory(prefix=f"bench-fold-{mode}-") as tmp:
                cmd = [python(), "-m", "harness", "-m", *SWEEP, *extra, "tracking.experiment=fold"]
                wall, cpu = timed(cmd, tmp)
                statuses = children(Path(tmp) / "mlflow.db")
            walls[mode].append(wall)
            cpus[mode].append(cpu)
            print(f"round {round_ + 1} {mode}: {wall:.1f} s wall, {cpu:.1f} s CPU, runs {statuses}", flush=True)
            if statuses != {"FINISHED": RUNS}:
                print(f"WARNING: expected {RUNS} FINISHED child runs, found {statuses}")
    print()
    rows = [[m, spread(walls[m]), f"{median(cpus[m]):.1f} s"] for m in MODES]
    table(rows, ["mode", "wall (median [min–max])", "CPU (median)"])
    ratio = median(walls["unfolded"]) / median(walls["folded"])
    cpu_ratio = median(cpus["unfolded"]) / median(cpus["folded"])
    print("## Ratios")
    print(f"folded speed-up, wall: {ratio:.2f}×  target ≥ {TARGET:g}×: {verdict(ratio, TARGET)}")
    print(f"folded speed-up, CPU: {cpu_ratio:.2f}×")


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
