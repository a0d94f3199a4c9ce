"""Benchmark 4: the studies end to end, each with its report, wall time against their targets (issue 18, 19).

    python benchmarks/bench_study.py                        # all three, folded (the default), one process
    python benchmarks/bench_study.py --only xor_grid        # one study
    python benchmarks/bench_study.py --launcher joblib      # 2 joblib workers
    python benchmarks/bench_study.py --no-fold              # hydra.sweeper.fold=[]: one job per run (slow)

Runs exactly what a user runs, in a fresh directory with its own SQLite store:

    python -m harness +experiment=xor_grid      (36 triples × 30 seeds = 1,080 runs, the lean metric stream)
    python -m harness +experiment=mnist_grid    (36 triples × 10 seeds = 360 runs)
    python -m harness +experiment=lr_fairness   (36 triples × 9 rates × 5 tuning seeds, then 20 evaluation seeds
                                                 at each triple's chosen rate: 2,340 runs)
    python -m harness +experiment=mnist_lr      (9 triples × 6 rates × 3 tuning seeds, then 20 evaluation seeds:
                                                 342 runs)

Each preset writes its report at the end of its sweep (``report.auto``), so a study's time includes it.
The split is read from the command's output: "sweep" runs until the report's notebook starts executing,
"report" is the rest (in the notebook: reading the runs and histories back, the statistics, the figures;
then converting it to HTML and logging it to the parent run). "read" is measured apart, afterwards: a fresh
process loading the study's runs and histories as the report does (``harness.report.loading.load``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import children_cpu, footer, header, python, set_blas_threads, table, verdict  # noqa: E402

# preset -> (seed runs, configuration runs, target seconds): issue 18 (xor_grid, mnist_grid), issue 19 (the rates)
STUDIES = {
    "xor_grid": (1080, 36, 45.0),
    "mnist_grid": (360, 36, 120.0),
    "lr_fairness": (2340, 324, 180.0),
    "mnist_lr": (342, 54, 300.0),
}
READ_TARGET = {"xor_grid": 5.0}  # seconds to read the runs and histories back (issue 18)
READ = (
    "import sys, time; from harness.report.loading import load; t = time.perf_counter(); "
    "s = load(sys.argv[1], uri=sys.argv[2]); print(time.perf_counter() - t, len(s.runs), len(s.frame))"
)
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
# The launching process logs this as the report's notebook starts (after the sweep's last job and the report's
# check of the store); joblib workers' own output can arrive late, so it is the reliable mark.
REPORT_LINE = "Executing notebook with kernel"


def run_study(preset: str, cwd: Path, overrides: list[str]) -> dict[str, float]:
    """Run the preset; wall time in all, until its last run's summary line, and CPU time of the process tree."""
    cmd = [python(), "-m", "harness", f"+experiment={preset}", *overrides]
    log = (cwd / f"{preset}.log").open("w")
    cpu0, start, report = children_cpu(), time.perf_counter(), None
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the store is ./mlflow.db
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            log.write(line)
            if report is None and REPORT_LINE in line:
                report = time.perf_counter()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{preset} failed with status {proc.returncode}; see {cwd / f'{preset}.log'}")
    sweep = (report or start + wall) - start
    return {"wall": wall, "sweep": sweep, "report": wall - sweep, "cpu": children_cpu() - cpu0}


def read_time(preset: str, db: Path) -> tuple[float, int, int]:
    """Seconds a fresh process takes to load the study's runs and histories, and how many runs and rows."""
    out = subprocess.run([python(), "-c", READ, preset, f"sqlite:///{db}"], capture_output=True, text=True, check=True)
    seconds, runs, rows = out.stdout.split()
    return float(seconds), int(runs), int(rows)


def store_counts(db: Path, preset: str) -> tuple[dict[str, int], int]:
    """Runs by status (children of the preset's experiment) and its metric rows."""
    with sqlite3.connect(db) as con:
        exp = "select experiment_id from experiments where name = ?"
        statuses = dict(
            con.execute(
                f"select status, count(*) from runs where experiment_id = ({exp}) and run_uuid in "
                "(select run_uuid from tags where key = 'mlflow.parentRunId') group by status",
                (preset,),
            ).fetchall()
        )
        rows = con.execute(
            f"select count(*) from metrics where run_uuid in (select run_uuid from runs where experiment_id = ({exp}))",
            (preset,),
        ).fetchone()[0]
    return statuses, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=STUDIES, action="append", help="run only this study (repeatable)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="basic")
    parser.add_argument("--no-fold", action="store_true", help="hydra.sweeper.fold=[]: one Hydra job per run")
    parser.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS/OMP_NUM_THREADS (default unset)")
    parser.add_argument("--keep", default=None, help="directory to run in and keep (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="extra overrides for every study")
    args = parser.parse_args()
    set_blas_threads(args.blas_threads)
    studies = args.only or list(STUDIES)
    overrides = [*LAUNCHERS[args.launcher], *(["hydra.sweeper.fold=[]"] if args.no_fold else []), *args.extra]
    header(
        "The studies end to end, each with its report", ("numpy", "mlflow", "hydra-core", "nbclient", "seaborn"),
        launcher=args.launcher, fold="off" if args.no_fold else "on (seed, train.lr)",
        extra=" ".join(args.extra) or "none", blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    )  # fmt: skip
    tmp = tempfile.TemporaryDirectory(prefix="bench-study-") if args.keep is None else None
    cwd = Path(tmp.name if tmp else args.keep)
    cwd.mkdir(parents=True, exist_ok=True)
    rows, verdicts = [], []
    for preset in studies:
        t = run_study(preset, cwd, overrides)
        statuses, metric_rows = store_counts(cwd / "mlflow.db", preset)
        read, read_runs, read_rows = read_time(preset, cwd / "mlflow.db")
        seeds, configurations, target = STUDIES[preset]
        runs = seeds + configurations
        rows.append([preset, f"{sum(statuses.values()):,}", f"{metric_rows:,}", f"{t['sweep']:.1f}",
                     f"{t['report']:.1f}", f"{t['wall']:.1f}", f"{t['cpu']:.1f}", f"{read:.1f}"])  # fmt: skip
        print(f"{preset}: {t['wall']:.1f} s ({t['sweep']:.1f} s sweep + {t['report']:.1f} s report), runs {statuses}; "
              f"read back {read_runs:,} runs, {read_rows:,} rows in {read:.1f} s", flush=True)  # fmt: skip
        if sum(statuses.values()) != runs or set(statuses) - {"FINISHED"}:
            print(f"WARNING: {preset} should leave {seeds:,} seed and {configurations} configuration runs FINISHED; "
                  f"the store has {statuses}")  # fmt: skip
        verdicts.append(f"{preset} ({seeds:,} runs): {t['wall']:.0f} s = {t['wall'] / 60:.1f} min  "
                        f"target ≤ {target:.0f} s: {verdict(t['wall'], target, False)}")  # fmt: skip
        if preset in READ_TARGET:
            verdicts.append(f"{preset}: reading its runs and histories {read:.1f} s  target ≤ {READ_TARGET[preset]:.0f}"
                            f" s: {verdict(read, READ_TARGET[preset], False)}")  # fmt: skip
    print()
    table(rows, ["study", "runs", "metric rows", "sweep s", "report s", "total s", "CPU s (all processes)", "read s"])
    print("## Ratios")
    for line in verdicts:
        print(line)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
